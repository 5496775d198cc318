"""Test doubles: a deterministic toy drafter/verifier pair for the transport and fault tests, and ``ToySLM`` (a
``DraftModel`` over the toy model) that lets the real Drafter run without a neural network.

Both "models" are seeded functions of the token history, the draft is sampled from the quantized q̂ (Q-S) and the
verifier runs standard speculative sampling against q̂. Every random draw is seeded by (seed, absolute position), so
a generation that is interrupted, resent or resynced on another worker produces exactly the fault-free token stream:
that is what the fault tests compare. The lattice points travel in a small private format (codec mode 255) so this
module needs nothing but numpy.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qsv_wire.protocol import DraftRound, ErrorCode, ErrorReply, Feedback, OpenSession, SamplingParams
from qsv_wire.reference import lattice_rule

TOY_CODEC_MODE = 255  # private: u32 nnz | u32 indices[nnz] | u16 counts[nnz]
TOY_VOCAB_HASH = bytes(32)


class ToyModel:
    """p(· | history): softmax of Gaussian logits drawn from an RNG seeded by (seed, last ``context`` tokens);
    ``noise`` > 0 adds a second, independently seeded perturbation (a draft model that is close to the target)."""

    def __init__(self, vocab_size: int = 64, seed: int = 1, context: int = 2, scale: float = 2.5,
                 noise: float = 0.0, noise_seed: int = 99) -> None:
        self.vocab_size = vocab_size
        self.seed = seed
        self.context = context
        self.scale = scale
        self.noise = noise
        self.noise_seed = noise_seed

    def probs(self, history: Sequence[int]) -> np.ndarray:
        tail = [int(t) for t in history[-self.context:]]
        logits = np.random.default_rng([self.seed, *tail]).standard_normal(self.vocab_size) * self.scale
        if self.noise:
            logits = logits + np.random.default_rng([self.noise_seed, *tail]).standard_normal(self.vocab_size) \
                * self.noise
        e = np.exp(logits - logits.max())
        return e / e.sum()


def quantize(q: np.ndarray, ell: int) -> np.ndarray:
    """The lattice rule of PAPER.md (its one Python definition: qsv_wire.reference.lattice_rule)."""
    return lattice_rule(ell * np.asarray(q, dtype=np.float64), ell)


def encode_point(counts: np.ndarray) -> bytes:
    idx = np.flatnonzero(counts).astype("<u4")
    return struct.pack("<I", idx.size) + idx.tobytes() + counts[idx].astype("<u2").tobytes()


def decode_point(blob: bytes, vocab_size: int, ell: int) -> np.ndarray:
    (n,) = struct.unpack_from("<I", blob, 0)
    if len(blob) != 4 + 6 * n:
        raise ValueError("toy lattice point has the wrong length")
    idx = np.frombuffer(blob, dtype="<u4", count=n, offset=4)
    cnt = np.frombuffer(blob, dtype="<u2", count=n, offset=4 + 4 * n)
    if n == 0 or int(idx.max()) >= vocab_size or int(cnt.sum()) != ell:
        raise ValueError("toy lattice point out of range")
    out = np.zeros(vocab_size, dtype=np.int64)
    out[idx] = cnt
    return out


def _rng(seed: int, position: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, position, stream])


class ToyDrafter:
    def __init__(self, model: ToyModel | None = None) -> None:
        self.model = model or ToyModel(noise=0.8)

    def draft(self, history: Sequence[int], length: int, ell: int, seed: int) -> tuple[list[int], list[bytes]]:
        ctx = list(history)
        tokens: list[int] = []
        blobs: list[bytes] = []
        for _ in range(length):
            b = quantize(self.model.probs(ctx), ell)
            x = int(_rng(seed, len(ctx), 1).choice(b.size, p=b / ell))
            tokens.append(x)
            blobs.append(encode_point(b))
            ctx.append(x)
        return tokens, blobs


@dataclass
class _ToySession:
    device_id: str
    history: list[int]
    seed: int


class ToyVerifier:
    """The verifier-handler interface of ``cloud_verifier.mqtt_service`` (open / verify / close) over ToyModel."""

    def __init__(self, model: ToyModel | None = None, compute_s: float = 0.0) -> None:
        self.model = model or ToyModel()
        self.compute_s = compute_s  # optional busy time per round (benchmarks exclude it; demos can show it)
        self.sessions: dict[int, _ToySession] = {}

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def open(self, msg: OpenSession) -> int | ErrorReply:
        if msg.vocab_size != self.model.vocab_size or msg.vocab_hash != TOY_VOCAB_HASH:
            return ErrorReply(ErrorCode.VOCAB_MISMATCH, f"verifier vocab is {self.model.vocab_size}", msg.session_id)
        self.sessions[msg.session_id] = _ToySession(msg.device_id, list(msg.history), msg.sampling.seed)
        return len(msg.history)

    def close(self, session_id: int) -> None:
        self.sessions.pop(session_id, None)

    def verify(self, msg: DraftRound) -> Feedback | ErrorReply:
        s = self.sessions.get(msg.session_id)
        if s is None:
            return ErrorReply(ErrorCode.UNKNOWN_SESSION, "session not held here", msg.session_id, msg.round_seq)
        if msg.position != len(s.history):
            return ErrorReply(ErrorCode.DESYNC, f"round at position {msg.position}, session holds {len(s.history)}",
                              msg.session_id, msg.round_seq)
        if msg.codec_mode != TOY_CODEC_MODE or msg.vocab_size != self.model.vocab_size:
            return ErrorReply(ErrorCode.BAD_PARAMS, "toy verifier takes codec mode 255", msg.session_id, msg.round_seq)
        if self.compute_s:
            end = _now() + self.compute_s
            while _now() < end:
                pass
        accepted, next_token, alphas = self._speculate(s, msg)
        s.history.extend(msg.tokens[:accepted])
        s.history.append(next_token)
        return Feedback(msg.session_id, msg.round_seq, msg.position, accepted, next_token, tuple(alphas))

    def _speculate(self, s: _ToySession, msg: DraftRound) -> tuple[int, int, list[float]]:
        ctx = list(s.history)
        alphas: list[float] = []
        for i, (x, blob) in enumerate(zip(msg.tokens, msg.lattice, strict=True)):
            try:
                qhat = decode_point(blob, self.model.vocab_size, msg.ell) / msg.ell
            except ValueError:
                qhat = None
            p = self.model.probs(ctx)
            if qhat is None or qhat[x] == 0:  # malformed or inconsistent draft: reject it, sample from p
                return i, int(_rng(s.seed, len(ctx), 2).choice(p.size, p=p)), alphas + [0.0]
            alpha = min(1.0, float(p[x] / qhat[x]))
            alphas.append(alpha)
            rng = _rng(s.seed, len(ctx), 2)
            if rng.random() >= alpha:
                residual = np.maximum(p - qhat, 0.0)
                return i, int(rng.choice(p.size, p=residual / residual.sum())), alphas
            ctx.append(x)
        p = self.model.probs(ctx)
        return len(msg.tokens), int(_rng(s.seed, len(ctx), 3).choice(p.size, p=p)), alphas


def _now() -> float:
    import time

    return time.perf_counter()


def reference_generation(prompt: Sequence[int], n_tokens: int, draft_len: int, ell: int, seed: int,
                         drafter: ToyDrafter | None = None, verifier: ToyVerifier | None = None) -> list[int]:
    """The fault-free token stream, computed in-process without any transport. (Test code: the product's rounds run
    in edge_runtime.engine; these helpers keep the toy drafter's stateless draws, keyed by (seed, position), so that
    a test can resume a generation from a saved history on any worker.)"""
    drafter = drafter or ToyDrafter()
    verifier = verifier or ToyVerifier()
    sid = 1
    verifier.open(OpenSession("local", sid, tuple(prompt), SamplingParams(seed=seed), verifier.vocab_size,
                              TOY_VOCAB_HASH))
    history = list(prompt)
    seq = 0
    while len(history) - len(prompt) < n_tokens:
        tokens, blobs = drafter.draft(history, draft_len, ell, seed)
        fb = verifier.verify(DraftRound(sid, seq, len(history), verifier.vocab_size, ell, TOY_CODEC_MODE,
                                        tuple(tokens), tuple(blobs)))
        assert isinstance(fb, Feedback), fb
        history += tokens[: fb.accepted] + [fb.next_token]
        seq += 1
    return history[len(prompt):][:n_tokens]


def generate_remote(remote: RemoteVerifierLike, prompt: Sequence[int], n_tokens: int, draft_len: int, ell: int,
                    seed: int, drafter: ToyDrafter | None = None, vocab_size: int = 64) -> list[int]:
    """The same generation as ``reference_generation`` through a RemoteVerifier (MQTT)."""
    drafter = drafter or ToyDrafter()
    remote.open(prompt, SamplingParams(seed=seed), vocab_size, TOY_VOCAB_HASH)
    return continue_remote(remote, n_tokens, draft_len, ell, seed, drafter)


def continue_remote(remote: RemoteVerifierLike, n_tokens: int, draft_len: int, ell: int, seed: int,
                    drafter: ToyDrafter | None = None) -> list[int]:
    drafter = drafter or ToyDrafter()
    while len(remote.generated) < n_tokens:
        tokens, blobs = drafter.draft(remote.history, draft_len, ell, seed)
        remote.verify(tokens, blobs, ell, TOY_CODEC_MODE)
    return remote.generated[:n_tokens]


class RemoteVerifierLike(Protocol):
    history: list[int]

    @property
    def generated(self) -> list[int]: ...

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int, vocab_hash: bytes) -> object: ...

    def verify(self, tokens: Sequence[int], lattice: Sequence[bytes], ell: int, codec_mode: int) -> Feedback: ...


class ToySLM:
    """``edge_runtime.slm.DraftModel`` over ToyModel (logits = log p): lets the real Drafter run without a neural
    network, e.g. against a tiny random PyTorch target in transport tests."""

    def __init__(self, model: ToyModel, eos_token_ids: Sequence[int] = ()) -> None:
        self.model = model
        self.vocab_size = model.vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self._tokens: list[int] = []

    @property
    def length(self) -> int:
        return len(self._tokens)

    def reset(self) -> None:
        self._tokens = []

    def rollback(self, length: int) -> None:
        if not 0 <= length <= len(self._tokens):
            raise ValueError(f"cannot roll back to {length} tokens: the cache holds {len(self._tokens)}")
        del self._tokens[length:]

    def forward(self, token_ids: Sequence[int]) -> np.ndarray:
        if len(token_ids) == 0:
            raise ValueError("empty step")
        rows = []
        for t in token_ids:
            self._tokens.append(int(t))
            rows.append(np.log(self.model.probs(self._tokens)).astype(np.float32))
        return np.stack(rows)
