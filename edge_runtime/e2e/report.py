"""What the demo prints: the per-round stream and the final table (plain text, fixed-width columns)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edge_runtime.e2e.baseline import BaselineRun
from edge_runtime.e2e.edge import EdgeRun, RoundStat

ROUND_HEADER = (" round  L    ℓ  acc   new  bytes  B/draft  draft ms  wait ms  verify ms  text")


def round_line(stat: RoundStat, text: str) -> str:
    per_draft = stat.uplink_bytes / stat.drafted
    return (f" {stat.index + 1:5d} {stat.drafted:2d} {stat.ell:4d} {stat.accepted:2d}/{stat.drafted:<2d} "
            f"{'+' + str(len(stat.new_tokens)):>4s} {stat.lattice_bytes:6d} {per_draft:8.1f} "
            f"{1e3 * stat.draft_s:9.0f} {1e3 * stat.wait_s:8.0f} {1e3 * stat.verify_s:10.0f}  {text!r}")


def prompt_summary(run: EdgeRun) -> str:
    rate = len(run.tokens) / run.decode_s if run.decode_s > 0 else 0.0
    acc = run.accepted / run.drafted if run.drafted else 0.0
    return (f" → {len(run.tokens)} tokens in {len(run.rounds)} rounds, decode {run.decode_s:.1f} s "
            f"({rate:.2f} tokens/s), prefill {run.prefill_s:.1f} s, acceptance {acc:.2f}")


@dataclass(frozen=True)
class Totals:
    tokens: int
    prefill_s: float
    decode_s: float

    @property
    def decode_rate(self) -> float:
        return self.tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def end_to_end_rate(self) -> float:
        total = self.prefill_s + self.decode_s
        return self.tokens / total if total > 0 else 0.0


def totals(runs: Sequence[EdgeRun] | Sequence[BaselineRun]) -> Totals:
    return Totals(sum(len(r.tokens) for r in runs), sum(r.prefill_s for r in runs), sum(r.decode_s for r in runs))


def summary_table(edge_runs: Sequence[EdgeRun], baseline_runs: Sequence[BaselineRun], vocab_size: int,
                  uplink_bps: float) -> str:
    """The final table: throughput and speedup, acceptance, uplink bytes per draft token vs the paper's bound."""
    qsv, alone = totals(edge_runs), totals(baseline_runs)
    rounds = [r for run in edge_runs for r in run.rounds]
    drafted = sum(r.drafted for r in rounds)
    accepted = sum(r.accepted for r in rounds)
    lattice = sum(r.lattice_bytes for r in rounds)
    uplink = sum(r.uplink_bytes for r in rounds)
    bound = sum(r.bound_bits for r in rounds) / 8
    speedup = qsv.decode_rate / alone.decode_rate if alone.decode_rate > 0 else float("nan")
    e2e_speedup = qsv.end_to_end_rate / alone.end_to_end_rate if alone.end_to_end_rate > 0 else float("nan")
    ells = sorted({r.ell for r in rounds})
    lines = [
        f" {'':34s} {'tokens':>7s} {'prefill s':>10s} {'decode s':>9s} {'tokens/s':>9s} {'speedup':>8s}",
        f" {'cloud only (target autoregressive)':34s} {alone.tokens:7d} {alone.prefill_s:10.1f} "
        f"{alone.decode_s:9.1f} {alone.decode_rate:9.2f} {1.0:7.2f}×",
        f" {'QSV edge draft + cloud verify':34s} {qsv.tokens:7d} {qsv.prefill_s:10.1f} "
        f"{qsv.decode_s:9.1f} {qsv.decode_rate:9.2f} {speedup:7.2f}×",
        f" including prefill: cloud only {alone.end_to_end_rate:.2f} tokens/s, QSV {qsv.end_to_end_rate:.2f} "
        f"tokens/s → {e2e_speedup:.2f}×",
        "",
        f" rounds {len(rounds)} · drafted {drafted} · accepted {accepted} · acceptance {accepted / max(drafted, 1):.3f}"
        f" · {sum(len(r.new_tokens) for r in rounds) / max(len(rounds), 1):.2f} tokens/round"
        f" · ℓ used {', '.join(map(str, ells))}",
    ]
    if drafted:
        per_token = uplink / drafted
        bound_per_token = bound / drafted
        lines += [
            f" uplink per draft token: {per_token:.1f} B measured (lattice point {lattice / drafted:.1f} B + token id "
            f"{(uplink - lattice) / drafted:.2f} B)",
            f"   vs the paper's fixed-length bound {bound_per_token:,.1f} B (16 + ⌈log2 C(ℓ+V−1, V−1)⌉ bits, "
            f"V = {vocab_size:,}): {per_token / bound_per_token:.3f}× the bound, {bound_per_token / per_token:.0f}× "
            f"smaller; a fp16 vector would be {2 * vocab_size:,} B",
            f"   at the paper's {uplink_bps / 1e6:g} Mbps uplink: {8e3 * uplink / len(rounds) / uplink_bps:.2f} ms per "
            f"round measured vs {8e3 * bound / len(rounds) / uplink_bps:.2f} ms at the bound",
        ]
    if rounds:
        med = statistics.median
        lines.append(
            f" per round (median): draft {1e3 * med(r.draft_s for r in rounds):.0f} ms · encode "
            f"{1e3 * med(r.encode_s for r in rounds):.2f} ms · wait {1e3 * med(r.wait_s for r in rounds):.0f} ms "
            f"(verify {1e3 * med(r.verify_s for r in rounds):.0f} ms, transport + queue "
            f"{1e3 * med(r.wait_s - r.verify_s for r in rounds):.1f} ms) · feedback "
            f"{1e3 * med(r.feedback_s for r in rounds):.0f} ms")
    return "\n".join(lines)
