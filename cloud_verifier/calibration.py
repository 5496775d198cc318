"""Which precision the verifier runs the target in: measured pass costs, a throughput rule, and a cache.

Speculative decoding pays only where a pass over n tokens costs about as much as one. That ratio depends on the CPU
and the precision (one 1.5B target on one AVX-512 BF16 core: fp32 408 ms for 1 token and 905 ms for 5, bf16 342 / 348,
int8 80 / 96), so the verifier measures it at start instead of assuming it:

1. **Cost curve.** For each precision this device can run (``precision.available``), c(n) = the time of one
   verification pass over n tokens after a ``context``-token history, n = 1..N (N = the longest draft + 1), minimum
   over ``reps`` repeats, n between the measured widths interpolated linearly.
2. **Fidelity.** The mean total-variation distance between the precision's next-token distributions and fp32's over
   the summary part of a fixed text, computed as the verifier computes them (prompt prefilled, then 4-token passes).
   The verifier is exact with respect to the target *as it runs in the chosen precision*; this number says how far
   that is from the fp32 target.
3. **Rule.** With acceptance α per draft token, a round of L drafts yields E[N](L) = (1 − α^{L+1}) / (1 − α) tokens
   and costs L·t_draft + c(L+1) + t_round; the speculative rate of a precision is max over L of E[N](L) / that time.
   The choice is the precision with the highest speculative rate among those whose fidelity is within ``max_tv``.
   α, t_draft and t_round are assumptions (``Assumptions``); the edge's controller later replaces them with what it
   measures, using the chosen precision's curve (sent in the OPEN reply).

Results are cached per (model sha256, CPU model and flags, torch version, threads, device), so a restarted worker
skips the measurement; ``--dtype`` pins a precision and then only that precision's curve is measured if missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qsv_wire.throughput import expected_tokens_iid, pass_cost

log = logging.getLogger(__name__)

DEFAULT_WIDTHS = (1, 2, 3, 4, 5, 7, 9, 13)
FIDELITY_PROMPT = (
    "Article: The government announced on Monday a new plan to cut taxes for small businesses, which critics said "
    "would widen the deficit. The chancellor said the measure would help firms hire more staff. Summary:"
)
FIDELITY_CONTINUATION = (
    " The government plans to cut taxes for small businesses to help them hire more staff, but critics warn it will "
    "widen the deficit. Business groups welcomed the plan, while the opposition called it a giveaway that the "
    "country cannot afford."
)


@dataclass(frozen=True)
class Assumptions:
    """What the rule assumes about rounds before any are measured (the edge's controller measures them later)."""

    acceptance: float = 0.7  # α per draft token (Qwen2.5-Coder 0.5B → 1.5B at temperature 0.4: 0.58–0.68 measured)
    draft_ms_per_token: float = 20.0  # 0.5B int8 ONNX on one core: 19–25 ms
    round_overhead_ms: float = 5.0  # MQTT round trip, codec, verification arithmetic
    max_draft_len: int = 12
    max_tv: float = 0.2  # fidelity bound for an automatic choice (catches broken paths; see docs/VERIFIER.md)

    def __post_init__(self) -> None:
        if not 0.0 <= self.acceptance < 1.0:
            raise ValueError(f"acceptance must be in [0, 1), got {self.acceptance}")
        if self.draft_ms_per_token < 0 or self.round_overhead_ms < 0 or self.max_draft_len < 1:
            raise ValueError("draft and overhead times must be >= 0 and max_draft_len >= 1")


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """The verifier's precision flags, the same in every command that loads a target."""
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "int8", "fp16"),
                        help="precision of the target; auto: measured at start and cached (cloud_verifier.calibration)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure the precisions again even if this machine's calibration is cached")
    parser.add_argument("--max-tv", type=_non_negative, default=Assumptions.max_tv,
                        help="auto: skip precisions whose distributions differ from fp32's by more (total variation)")


@dataclass(frozen=True)
class CostCurve:
    """c(n) in ms for n = 1..len(pass_ms) tokens in one pass, after ``context`` tokens of history."""

    precision: str
    pass_ms: tuple[float, ...]
    context: int = 200

    def __post_init__(self) -> None:
        if not self.pass_ms or any(not (c > 0) for c in self.pass_ms):
            raise ValueError(f"{self.precision}: pass costs must be positive, got {self.pass_ms}")

    def cost_ms(self, n: int) -> float:
        """c(n); beyond the measured range extrapolated with the last measured slope."""
        if n < 1:
            raise ValueError("n must be >= 1")
        return pass_cost(self.pass_ms, n)

    @property
    def cloud_only_tokens_per_s(self) -> float:
        return 1000.0 / self.pass_ms[0]

    @classmethod
    def from_widths(cls, precision: str, measured: dict[int, float], max_n: int, context: int) -> CostCurve:
        """Interpolate measured widths linearly onto 1..max_n (the widths must include 1 and max_n)."""
        widths = sorted(measured)
        if not widths or widths[0] != 1 or widths[-1] < max_n:
            raise ValueError(f"the measured widths must include 1 and {max_n}, got {widths}")
        out = []
        for n in range(1, max_n + 1):
            lo = max(w for w in widths if w <= n)
            hi = min(w for w in widths if w >= n)
            out.append(measured[n] if lo == hi else measured[lo] + (measured[hi] - measured[lo]) * (n - lo) / (hi - lo))
        return cls(precision, tuple(round(c, 3) for c in out), context)


def speculative_rate(curve: CostCurve, assume: Assumptions) -> tuple[int, float]:
    """(best L, predicted tokens/s) of speculative rounds with this cost curve."""
    best = (1, 0.0)
    for length in range(1, assume.max_draft_len + 1):
        round_ms = length * assume.draft_ms_per_token + curve.cost_ms(length + 1) + assume.round_overhead_ms
        rate = 1000.0 * expected_tokens_iid(assume.acceptance, length) / round_ms
        if rate > best[1]:
            best = (length, rate)
    return best


@dataclass
class Choice:
    precision: str
    reason: str
    rows: list[dict] = field(default_factory=list)  # one per precision, for the log table and the demo


def choose(curves: dict[str, CostCurve], fidelity: dict[str, float], assume: Assumptions) -> Choice:
    """The precision with the highest predicted speculative rate among those within ``assume.max_tv`` of fp32."""
    if not curves:
        raise ValueError("no cost curves to choose from")
    rows = []
    for name, curve in curves.items():
        length, rate = speculative_rate(curve, assume)
        tv = fidelity.get(name, 0.0 if name == "fp32" else float("nan"))
        rows.append({"precision": name, "pass_1_ms": curve.cost_ms(1), "pass_5_ms": curve.cost_ms(5),
                     "ratio_5_to_1": curve.cost_ms(5) / curve.cost_ms(1), "best_L": length,
                     "speculative_tokens_per_s": rate, "cloud_only_tokens_per_s": curve.cloud_only_tokens_per_s,
                     "tv_vs_fp32": tv, "eligible": not tv > assume.max_tv})  # NaN (not measured) counts eligible
    eligible = [r for r in rows if r["eligible"]] or rows
    best = max(eligible, key=lambda r: r["speculative_tokens_per_s"])
    runner = max((r for r in eligible if r is not best), key=lambda r: r["speculative_tokens_per_s"], default=None)
    reason = (f"{best['precision']}: highest predicted speculative rate {best['speculative_tokens_per_s']:.1f} "
              f"tokens/s (L={best['best_L']}, pass(5)/pass(1) = {best['ratio_5_to_1']:.2f})")
    if runner is not None:
        reason += f"; next {runner['precision']} {runner['speculative_tokens_per_s']:.1f}"
    excluded = [r["precision"] for r in rows if not r["eligible"]]
    if excluded:
        reason += f"; excluded for fidelity (TV > {assume.max_tv}): {', '.join(excluded)}"
    for row in rows:
        row["chosen"] = row is best
    return Choice(best["precision"], reason, rows)


def format_table(rows: Sequence[dict]) -> str:
    head = (f"{'precision':9s} {'pass(1)':>9s} {'pass(5)':>9s} {'5/1':>5s} {'cloud-only':>11s} {'best L':>6s} "
            f"{'speculative':>12s} {'TV vs fp32':>10s}")
    lines = [head, f"{'':9s} {'ms':>9s} {'ms':>9s} {'':>5s} {'tokens/s':>11s} {'':>6s} {'tokens/s (pred.)':>12s}"]
    for r in rows:
        mark = " ← chosen" if r.get("chosen") else ("" if r["eligible"] else " (fidelity)")
        lines.append(f"{r['precision']:9s} {r['pass_1_ms']:9.1f} {r['pass_5_ms']:9.1f} {r['ratio_5_to_1']:5.2f} "
                     f"{r['cloud_only_tokens_per_s']:11.2f} {r['best_L']:6d} {r['speculative_tokens_per_s']:12.2f} "
                     f"{r['tv_vs_fp32']:10.4f}{mark}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- measurement


def measure_curve(target, max_n: int, context: int = 200, reps: int = 3,  # noqa: ANN001 - TargetModel
                  widths: Sequence[int] = DEFAULT_WIDTHS, seed: int = 0) -> CostCurve:
    """Time verification passes of ``target`` (a ``TargetModel``) over n = widths ∩ [1, max_n] (and max_n) tokens
    after a ``context``-token history of pseudo-random ids; one untimed warm-up pass, minimum of ``reps`` rounds
    over the widths, made non-decreasing in n."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    high = min(target.vocab_size, 32000)
    history = torch.randint(min(100, high // 2), high, (context + max_n,), generator=gen).tolist()
    state = target.prefill(history[:context])
    chosen = sorted({w for w in widths if w <= max_n} | {1, max_n})
    target.forward_round(state, history[context:context + 2])  # warm-up (kernel selection, allocator)
    measured = dict.fromkeys(chosen, float("inf"))
    for _ in range(reps):  # widths interleaved, so a burst of load elsewhere hits all of them alike
        for n in chosen:
            t0 = time.perf_counter()
            target.forward_round(state, history[context:context + n])
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            measured[n] = min(measured[n], (time.perf_counter() - t0) * 1000.0)
    running = 0.0  # a pass over more tokens is never cheaper: the monotone envelope removes leftover noise
    for n in chosen:
        running = measured[n] = max(measured[n], running)
    return CostCurve.from_widths(target.precision, measured, max_n, context)


def next_token_probs(target, token_ids: Sequence[int], prompt_len: int, width: int = 4):  # noqa: ANN001, ANN201
    """The target's next-token distributions over ``token_ids[prompt_len:]`` computed the way the verifier runs: the
    prompt prefilled (``TargetModel.prefill``), then passes of ``width`` tokens on the cached history."""
    import torch

    state = target.prefill(token_ids[:prompt_len])
    rows = []
    for start in range(prompt_len, len(token_ids), width):
        chunk = token_ids[start:start + width]
        out = target.forward_round(state, chunk)
        rows.append(torch.softmax(out.logits.float(), dim=-1))
        state = out.committed_state(len(chunk))
    return torch.cat(rows)


def total_variation(p, q) -> float:  # noqa: ANN001 - tensors (n, V)
    return float(((p - q).abs().sum(-1) / 2).mean())


# ------------------------------------------------------------------------------------------------------- cache


@dataclass
class CalibrationKey:
    model_sha256: str
    cpu: str
    cpu_flags: list[str]
    torch: str
    threads: int
    device: str
    context: int
    max_n: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Calibration:
    key: CalibrationKey
    curves: dict[str, CostCurve]
    fidelity: dict[str, float]
    complete: bool  # every available precision measured (an automatic choice can be made from it)
    measured_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"key": asdict(self.key), "curves": {k: asdict(v) for k, v in self.curves.items()},
                           "fidelity": self.fidelity, "complete": self.complete, "measured_at": self.measured_at},
                          indent=1)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        curves = {k: CostCurve(v["precision"], tuple(v["pass_ms"]), v["context"]) for k, v in data["curves"].items()}
        return cls(CalibrationKey(**data["key"]), curves, {k: float(v) for k, v in data["fidelity"].items()},
                   bool(data["complete"]), float(data.get("measured_at", 0.0)))


class CalibrationCache:
    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from qsv_models.registry import cache_dir

            root = cache_dir() / "calibration"
        self.root = Path(root)

    def path(self, key: CalibrationKey) -> Path:
        return self.root / f"{key.digest()}.json"

    def load(self, key: CalibrationKey) -> Calibration | None:
        try:
            cal = Calibration.from_json(self.path(key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("calibration cache %s unreadable (%s); measuring again", self.path(key), exc)
            return None
        return cal if cal.key == key else None

    def save(self, cal: Calibration) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(cal.key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(cal.to_json())
        os.replace(tmp, path)
        return path
