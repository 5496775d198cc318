"""What the demo prints: the per-round stream and the final table (plain text, fixed-width columns)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edge_runtime.engine import Generation, RoundStat
from qsv_tools.demo.baseline import BaselineRun
from qsv_wire.cpu import cpu_info

ROUND_HEADER = (" round  L    ℓ  acc   new  bytes  B/draft  draft ms  wait ms  verify ms  text")


def round_line(stat: RoundStat, text: str) -> str:
    per_draft = stat.uplink_bytes / stat.drafted
    return (f" {stat.index + 1:5d} {stat.drafted:2d} {stat.ell:4d} {stat.accepted:2d}/{stat.drafted:<2d} "
            f"{'+' + str(len(stat.new_tokens)):>4s} {stat.lattice_bytes:6d} {per_draft:8.1f} "
            f"{1e3 * stat.draft_s:9.0f} {1e3 * stat.wait_s:8.0f} {1e3 * stat.verify_s:10.0f}  {text!r}")


def prompt_summary(run: Generation) -> str:
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


def totals(runs: Sequence[Generation] | Sequence[BaselineRun]) -> Totals:
    return Totals(sum(len(r.tokens) for r in runs), sum(r.prefill_s for r in runs), sum(r.decode_s for r in runs))


@dataclass
class Summary:
    """The demo's closing figures: QSV against the target alone in the verifier's precision and in the fastest one."""

    edge_runs: Sequence[Generation]
    baselines: dict[str, Sequence[BaselineRun]]  # precision → cloud-only runs
    verifier_precision: str
    precision_report: dict  # the worker's PRECISION line (reason, calibration rows, load timings)
    verifier_ready_s: float  # worker spawn → READY
    first_round_s: float | None  # worker spawn → first feedback at the board
    vocab_size: int
    uplink_bps: float
    serial_runs: Sequence[Generation] = ()  # the same prompts with pipelining off (empty: not run)

    def _rates(self) -> dict[str, Totals]:
        return {name: totals(runs) for name, runs in self.baselines.items()}

    def fastest_cloud_only(self) -> tuple[str, Totals] | None:
        rates = self._rates()
        if not rates:
            return None
        name = max(rates, key=lambda n: rates[n].decode_rate)
        return name, rates[name]

    def as_dict(self) -> dict:
        qsv = totals(self.edge_runs)
        rates = self._rates()
        rounds = [r for run in self.edge_runs for r in run.rounds]
        drafted = sum(r.drafted for r in rounds)
        same = rates.get(self.verifier_precision)
        fastest = self.fastest_cloud_only()

        def ratio(a: float, b: float | None) -> float | None:
            return a / b if b else None

        serial = totals(self.serial_runs) if self.serial_runs else None
        med = statistics.median
        critical = {f"{k}_ms": 1e3 * med(getattr(r, f"{k}_s") for r in rounds) if rounds else None
                    for k in ("draft", "wait", "verify", "feedback", "predraft", "model", "overhead")}
        drafted_tokens = max(drafted, 1)
        cloud_token_s = 1.0 / fastest[1].decode_rate if fastest and fastest[1].decode_rate else None
        # The bound of the issue: E[tokens per round] / (round critical path in cloud-only tokens), the critical path
        # being the round's compute on this machine (board drafting + verifier pass + board feedback) with the
        # transport, queueing and everything else at zero; and the bound of a board that hides all its drafting
        # behind the verifier (separate hardware): the verifier pass alone.
        committed = sum(r.accepted + 1 for r in rounds)
        compute_s = sum(r.draft_s + r.verify_s + r.feedback_s for r in rounds)
        verify_s = sum(r.verify_s for r in rounds)
        bound = committed * cloud_token_s / compute_s if cloud_token_s and compute_s > 0 else None
        hidden = committed * cloud_token_s / verify_s if cloud_token_s and verify_s > 0 else None
        tried = [r.predraft_hit for r in rounds if r.predraft_hit is not None]
        return {
            "cpu": cpu_info().label(),
            "verifier_dtype": self.verifier_precision,
            "verifier_dtype_reason": self.precision_report.get("reason"),
            "verifier_calibration": self.precision_report.get("rows") or [],
            "verifier_load_timings_s": self.precision_report.get("timings") or {},
            "verifier_ready_s": self.verifier_ready_s,
            "verifier_first_round_s": self.first_round_s,
            "qsv_decode_tokens_per_s": qsv.decode_rate,
            "qsv_end_to_end_tokens_per_s": qsv.end_to_end_rate,
            "cloud_only_decode_tokens_per_s": {n: t.decode_rate for n, t in rates.items()},
            "cloud_only_end_to_end_tokens_per_s": {n: t.end_to_end_rate for n, t in rates.items()},
            "fastest_cloud_only_dtype": fastest[0] if fastest else None,
            "speedup_vs_same_dtype": ratio(qsv.decode_rate, same.decode_rate if same else None),
            "speedup_vs_fastest_cloud_only": ratio(qsv.decode_rate, fastest[1].decode_rate if fastest else None),
            "end_to_end_speedup_vs_fastest_cloud_only": ratio(qsv.end_to_end_rate,
                                                              fastest[1].end_to_end_rate if fastest else None),
            "acceptance": sum(r.accepted for r in rounds) / drafted if drafted else None,
            "tokens_per_round": sum(len(r.new_tokens) for r in rounds) / len(rounds) if rounds else None,
            "uplink_bytes_per_draft_token": sum(r.uplink_bytes for r in rounds) / drafted if drafted else None,
            "rounds": len(rounds),
            "qsv_tokens": qsv.tokens,
            "qsv_serial_decode_tokens_per_s": serial.decode_rate if serial else None,
            "serial_speedup_vs_fastest_cloud_only": ratio(serial.decode_rate, fastest[1].decode_rate if fastest
                                                          else None) if serial else None,
            "pipelining_gain": ratio(qsv.decode_rate, serial.decode_rate) if serial else None,
            "predraft_hit_rate": sum(tried) / len(tried) if tried else None,
            "reused_tokens_per_draft_token": sum(r.reused for r in rounds) / drafted_tokens,
            "round_median": critical,
            "model_ms_per_draft_token": 1e3 * sum(r.model_s for r in rounds) / drafted_tokens,
            "overhead_ms_per_draft_token": 1e3 * sum(r.overhead_s for r in rounds) / drafted_tokens,
            "bound_speedup_compute_only": bound,
            "speedup_over_bound": ratio(ratio(qsv.decode_rate, fastest[1].decode_rate if fastest else None) or 0.0,
                                        bound),
            "bound_speedup_drafting_hidden": hidden,
        }

    def table(self) -> str:
        qsv = totals(self.edge_runs)
        rates = self._rates()
        fastest = self.fastest_cloud_only()
        head = f" {'':40s} {'tokens':>7s} {'prefill s':>10s} {'decode s':>9s} {'tokens/s':>9s} {'with prefill':>13s}"
        lines = [head]
        for name, t in rates.items():
            marks = [m for m, ok in (("verifier's precision", name == self.verifier_precision),
                                     ("fastest", fastest is not None and name == fastest[0])) if ok]
            label = f"cloud only, {name}" + (f" ({', '.join(marks)})" if marks else "")
            lines.append(f" {label:40s} {t.tokens:7d} {t.prefill_s:10.1f} {t.decode_s:9.1f} {t.decode_rate:9.2f} "
                         f"{t.end_to_end_rate:13.2f}")
        lines.append(f" {'QSV (edge draft + cloud verify, ' + self.verifier_precision + ')':40s} {qsv.tokens:7d} "
                     f"{qsv.prefill_s:10.1f} {qsv.decode_s:9.1f} {qsv.decode_rate:9.2f} {qsv.end_to_end_rate:13.2f}")
        if self.serial_runs:
            ser = totals(self.serial_runs)
            lines.append(f" {'QSV serial (pipelining off)':40s} {ser.tokens:7d} {ser.prefill_s:10.1f} "
                         f"{ser.decode_s:9.1f} {ser.decode_rate:9.2f} {ser.end_to_end_rate:13.2f}")
        figures = self.as_dict()
        if figures["speedup_vs_same_dtype"] is not None:
            lines.append(f" QSV decode speedup vs cloud only in the same precision ({self.verifier_precision}): "
                         f"{figures['speedup_vs_same_dtype']:.2f}×")
        if figures["speedup_vs_fastest_cloud_only"] is not None:
            e2e = figures["end_to_end_speedup_vs_fastest_cloud_only"]
            lines.append(f" QSV decode speedup vs the fastest cloud-only run ({figures['fastest_cloud_only_dtype']}): "
                         f"{figures['speedup_vs_fastest_cloud_only']:.2f}× (with prefill: "
                         f"{float('nan') if e2e is None else e2e:.2f}×)")
        if figures["serial_speedup_vs_fastest_cloud_only"] is not None:
            lines.append(f" pipelining off: {figures['serial_speedup_vs_fastest_cloud_only']:.2f}× the fastest "
                         f"cloud-only run; pipelining gain {figures['pipelining_gain']:.2f}×")
        if figures["bound_speedup_compute_only"] is not None:
            lines.append(f" bound from the measured round compute (draft + verify + feedback, transport at zero): "
                         f"{figures['bound_speedup_compute_only']:.2f}× the fastest cloud-only run, reached "
                         f"{figures['speedup_over_bound']:.0%}; with the drafting wholly hidden behind the verifier "
                         f"(a board on its own CPU): {figures['bound_speedup_drafting_hidden']:.2f}×")
        if figures["predraft_hit_rate"] is not None:
            lines.append(f" pre-draft hit rate {figures['predraft_hit_rate']:.2f} · reused "
                         f"{figures['reused_tokens_per_draft_token']:.2f} of the draft tokens")
        reason = self.precision_report.get("reason")
        if reason:
            lines.append(f" verifier precision {reason}")
        ready = f" verifier worker ready {self.verifier_ready_s:.1f} s after it was started"
        if self.first_round_s is not None:
            ready += f"; first round answered at {self.first_round_s:.1f} s"
        lines += [ready, ""]
        lines += _round_lines(self.edge_runs, self.vocab_size, self.uplink_bps)
        return "\n".join(lines)


def _round_lines(edge_runs: Sequence[Generation], vocab_size: int, uplink_bps: float) -> list[str]:
    rounds = [r for run in edge_runs for r in run.rounds]
    drafted = sum(r.drafted for r in rounds)
    accepted = sum(r.accepted for r in rounds)
    lattice = sum(r.lattice_bytes for r in rounds)
    uplink = sum(r.uplink_bytes for r in rounds)
    bound = sum(r.bound_bits for r in rounds) / 8
    ells = sorted({r.ell for r in rounds})
    lines = [
        f" rounds {len(rounds)} · drafted {drafted} · accepted {accepted} · acceptance {accepted / max(drafted, 1):.3f}"
        f" · {sum(len(r.new_tokens) for r in rounds) / max(len(rounds), 1):.2f} tokens/round"
        f" · L used {', '.join(map(str, sorted({r.drafted for r in rounds})))} · ℓ used {', '.join(map(str, ells))}",
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
            f" per round (median): draft {1e3 * med(r.draft_s for r in rounds):.0f} ms · wait "
            f"{1e3 * med(r.wait_s for r in rounds):.0f} ms (verify {1e3 * med(r.verify_s for r in rounds):.0f} ms, "
            f"transport + queue {1e3 * med(r.wait_s - r.verify_s for r in rounds):.1f} ms; pre-drafting "
            f"{1e3 * med(r.predraft_s for r in rounds):.0f} ms of it) · feedback "
            f"{1e3 * med(r.feedback_s for r in rounds):.0f} ms")
        lines.append(
            f" per draft token on the board: SLM forward {1e3 * sum(r.model_s for r in rounds) / max(drafted, 1):.1f}"
            f" ms · quantize + sample + encode + stats {1e3 * sum(r.overhead_s for r in rounds) / max(drafted, 1):.2f}"
            f" ms")
    return lines
