"""Throughput model vs simulator: calibrate the online model on half of the prompts under a static (L, ℓ), then
predict the other half round by round from the draft confidences alone (simulator; synthetic traces, or recorded
ones with --traces, optionally with their measured timings: --profile trace).

    python -m experiments.model_check
    python -m experiments.model_check --traces experiment_out/qwen/traces_<key>.jsonl --profile trace
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from edge_runtime.controller import StaticController, ThroughputModel
from edge_runtime.controller.model import TimingPriors
from edge_runtime.controller.types import ChannelView
from qsv_tools.channel.markov import SCENARIOS, MarkovChannel
from qsv_tools.sim import PROFILES, SimRoundExecutor, TimingProfile, TraceSet, generate_traces, run_episode
from qsv_tools.sim.record_timed import timing_rounds


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--configs", default="1:240,2:240,3:240,4:240,8:240,3:720,6:720,3:16,3:2")
    p.add_argument("--profile", default="paper-gpu", choices=sorted(PROFILES) + ["trace"],
                   help="'trace': the recorded trace's measured timings")
    p.add_argument("--traces", type=Path, help="recorded JSONL trace (default: synthetic)")
    p.add_argument("--seed", type=int, default=9)
    args = p.parse_args(argv)
    configs = [(int(a), int(b)) for a, b in (c.split(":") for c in args.configs.split(","))]
    if args.traces:
        traces = TraceSet.load(args.traces)
        n_prompts = len(traces.sequences)
    else:
        traces = generate_traces(args.prompts, 120, sorted({e for _, e in configs}), seed=args.seed)
        n_prompts = args.prompts
    if args.profile == "trace":
        timing = TimingProfile.from_rounds(timing_rounds(traces.rounds, fastest=True),
                                            name="trace (measured, fastest per L)")
    else:
        timing = PROFILES[args.profile]
    seqs = [s.seq for s in traces.sequences]
    half = n_prompts // 2
    if half < 1:
        raise SystemExit("need at least 2 sequences (calibrate on one half, predict the other)")
    out.write(f"Model check: {args.traces or 'synthetic traces'}, timing {timing.name}, {n_prompts} prompts "
              f"(calibrate on {half}, predict {n_prompts - half})\n\n")
    out.write("| scenario | (L, ℓ) | simulated tok/s | predicted tok/s | predicted / simulated |\n")
    out.write("|---|---|---|---|---|\n")
    for name, spec in SCENARIOS.items():
        for length, ell in configs:
            model = ThroughputModel(traces.vocab_size, TimingPriors(0.01, 0.05, 0.005))
            ctl = StaticController(length, ell)
            ex = SimRoundExecutor(traces, MarkovChannel(spec, seed=1), timing, seed=2)
            for s in seqs[:half]:
                for r in run_episode(ctl, ex, s, 52).rounds:
                    model.observe(r.observation)
            view = ChannelView(spec.mean_sec_per_bit, spec.rtt_s, None, 1.0 / spec.downlink_bps)
            tokens = time_s = pred_n = pred_t = 0.0
            for s in seqs[half:]:
                ep = run_episode(ctl, ex, s, 52)
                tokens += ep.tokens
                time_s += ep.time_s
                for r in ep.rounds:
                    pr = model.predict_from_confidences(r.observation.confidences, ell, view)
                    pred_n += pr.expected_tokens
                    pred_t += pr.round_time_s
            sim, pred = tokens / time_s, pred_n / pred_t
            out.write(f"| {name} | ({length}, {ell}) | {sim:.2f} | {pred:.2f} | {pred / sim:.3f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
