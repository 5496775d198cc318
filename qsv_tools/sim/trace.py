"""Trace format for the simulator: per draft token (confidence, q̂(x), p(x), entropy) and per round timings.

JSON Lines, one object per line, ``type`` first:

- ``{"type": "meta", "version": 1, "vocab_size": V, "ells": [...], "temperature": 0.4, "source": "..."}`` (first)
- ``{"type": "token", "seq": s, "pos": i, "entropy": H(q) in bits, "qs": {"<ell>": [q(x), q̂(x), p(x)], ...},
  "sq": {...}}`` — context i of sequence s. ``qs``: x drawn from q̂_ℓ (quantize-then-sample, the exact scheme);
  ``sq``: x drawn from q (sample-then-quantize, biased; optional). One entry per ℓ the trace covers.
- ``{"type": "round", "seq": s, "L": n, "ell": ℓ, "accepted": a, "draft_s": ..., "verify_s": ..., "uplink_bits": ...,
  "elapsed_s": ...}`` — measured rounds (optional), used to calibrate timings.

Contexts follow the generated text; a simulated round starting at position t drafts from contexts t, t+1, ...
The acceptance probability of a draft token is α = min(1, p(x)/q̂(x)) (1 when q̂(x) = 0, the S-Q case).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRACE_VERSION = 1
SCHEMES = ("qs", "sq")


class TraceError(ValueError):
    """A malformed trace file or record."""


@dataclass
class SequenceTrace:
    """Arrays for one sequence: ``draws[scheme][ell]`` has shape (n, 3) = (q(x), q̂(x), p(x))."""

    seq: int
    entropy: np.ndarray
    draws: dict[str, dict[int, np.ndarray]]

    def __len__(self) -> int:
        return int(self.entropy.size)

    def columns(self, scheme: str, ell: int) -> np.ndarray:
        try:
            return self.draws[scheme][ell]
        except KeyError:
            have = {s: sorted(d) for s, d in self.draws.items()}
            raise TraceError(f"trace has no {scheme!r} draws at ell={ell} (has {have})") from None

    def confidences(self, scheme: str, ell: int) -> np.ndarray:
        return self.columns(scheme, ell)[:, 0]

    def alphas(self, scheme: str, ell: int) -> np.ndarray:
        c = self.columns(scheme, ell)
        qhat, p = c[:, 1], c[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(qhat > 0, np.minimum(1.0, p / np.where(qhat > 0, qhat, 1.0)), 1.0)
        return a


@dataclass
class TraceSet:
    vocab_size: int
    ells: tuple[int, ...]
    sequences: list[SequenceTrace]
    rounds: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for rec in self.records():
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def records(self) -> Iterable[dict]:
        yield {"type": "meta", "version": TRACE_VERSION, "vocab_size": self.vocab_size, "ells": list(self.ells),
               **{k: v for k, v in self.meta.items() if k not in {"type", "version", "vocab_size", "ells"}}}
        for s in self.sequences:
            for i in range(len(s)):
                rec: dict = {"type": "token", "seq": s.seq, "pos": i, "entropy": round(float(s.entropy[i]), 6)}
                for scheme, per_ell in s.draws.items():
                    rec[scheme] = {str(e): [round(float(v), 8) for v in arr[i]] for e, arr in per_ell.items()}
                yield rec
        for r in self.rounds:
            yield {"type": "round", **r}

    @classmethod
    def load(cls, path: str | Path) -> TraceSet:
        meta: dict | None = None
        tokens: dict[int, list[dict]] = {}
        rounds: list[dict] = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}:{lineno}: not JSON: {exc}") from None
                kind = rec.get("type")
                if kind == "meta":
                    if rec.get("version") != TRACE_VERSION:
                        raise TraceError(f"{path}:{lineno}: unsupported trace version {rec.get('version')}")
                    meta = rec
                elif kind == "token":
                    if meta is None:
                        raise TraceError(f"{path}:{lineno}: token record before the meta record")
                    _check_token(rec, path, lineno)
                    tokens.setdefault(int(rec["seq"]), []).append(rec)
                elif kind == "round":
                    rounds.append({k: v for k, v in rec.items() if k != "type"})
                else:
                    raise TraceError(f"{path}:{lineno}: unknown record type {kind!r}")
        if meta is None:
            raise TraceError(f"{path}: no meta record")
        seqs = []
        for seq, recs in sorted(tokens.items()):
            recs.sort(key=lambda r: r["pos"])
            if [r["pos"] for r in recs] != list(range(len(recs))):
                raise TraceError(f"{path}: sequence {seq} positions are not 0..n-1")
            draws: dict[str, dict[int, np.ndarray]] = {}
            for scheme in SCHEMES:
                if scheme in recs[0]:
                    draws[scheme] = {int(e): np.array([r[scheme][e] for r in recs], dtype=np.float64)
                                     for e in recs[0][scheme]}
            seqs.append(SequenceTrace(seq, np.array([r["entropy"] for r in recs], dtype=np.float64), draws))
        return cls(int(meta["vocab_size"]), tuple(int(e) for e in meta["ells"]), seqs, rounds,
                   {k: v for k, v in meta.items() if k not in {"type", "version", "vocab_size", "ells"}})


def _check_token(rec: dict, path: str | Path, lineno: int) -> None:
    if "seq" not in rec or "pos" not in rec or "entropy" not in rec or "qs" not in rec:
        raise TraceError(f"{path}:{lineno}: token record needs seq, pos, entropy, qs")
    for scheme in SCHEMES:
        for ell, v in rec.get(scheme, {}).items():
            if not (isinstance(v, list) and len(v) == 3 and all(0.0 <= float(x) <= 1.0 + 1e-9 for x in v)):
                raise TraceError(f"{path}:{lineno}: {scheme}[{ell}] must be [q(x), q̂(x), p(x)] in [0, 1]")
