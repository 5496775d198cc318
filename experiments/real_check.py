"""Real compute vs simulator for a few configurations: the real drafter (ONNX int8) and the real target (torch, CPU)
run rounds in process with the Markov link slept (``RealRoundExecutor``); the simulator runs the same policies on the
recorded trace of the same prompts with its measured timings.

    python -m experiments.real_check --traces experiment_out/qwen/traces_<key>.jsonl --prompts 4
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from experiments.compare import compare
from qsv_tools.channel.markov import SCENARIOS, MarkovChannel
from qsv_tools.sim import SimRoundExecutor, TimingProfile, TraceSet
from qsv_tools.sim.record_timed import measured_target_step_s, timing_rounds
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.experiment.real_check")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=Path, required=True, help="trace recorded by `qsv experiment record`")
    p.add_argument("--prompts", type=int, default=4, help="first N prompts of the trace")
    p.add_argument("--policies", default="static:3:240,static:6:240",
                   help="policy specs (static:L:ell, model, model-nostop, ddqn)")
    p.add_argument("--scenario", default="4mbps", choices=sorted(SCENARIOS))
    p.add_argument("--max-new-tokens", type=int, default=52)
    p.add_argument("--sim-seeds", type=int, default=5, help="simulator seeds averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the table here too")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    import torch

    from cloud_verifier.target import TargetModel
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from experiments.record import prompt_token_ids
    from qsv_tools.export.onnx_export import export_model
    from qsv_tools.sim.real_executor import RealRoundExecutor

    traces = TraceSet.load(args.traces)
    settings = traces.meta.get("settings")
    if not settings:
        raise SystemExit(f"{args.traces} has no recording settings (record it with `qsv experiment record`)")
    n = min(args.prompts, len(traces.sequences))
    seqs = list(range(n))
    spec = SCENARIOS[args.scenario]
    policies = {args.scenario: [s.strip() for s in args.policies.split(",")]}
    timing = TimingProfile.from_rounds(timing_rounds(traces.rounds, fastest=True),
                                            name="trace (measured, fastest per L)")
    step = measured_target_step_s(traces.rounds, fastest=True) or timing.target_token_s

    sim: dict[str, list[float]] = {}
    for k in range(args.sim_seeds):
        res = compare([args.scenario], policies,
                      lambda sc, pol, scheme, seed: SimRoundExecutor(traces, MarkovChannel(spec, seed=seed), timing,
                                                                     scheme=scheme, seed=seed + 1),
                      seqs, args.max_new_tokens, traces.vocab_size, args.seed + k,
                      target_time=lambda sc, m: m * step, progress=False)
        for r in res:
            sim.setdefault(r.policy, []).append(r.throughput)

    export = export_model(settings["draft"], int8=settings["variant"] == "int8")
    slm = OnnxSLM(export.directory, settings["variant"], SessionConfig(threads=settings["draft_threads"]))
    torch.set_num_threads(settings["target_threads"])
    target, _ = TargetModel.from_registry(settings["target"], device="cpu", dtype=settings["dtype"])
    prompts = prompt_token_ids(slm.encode, settings["start"] + n, settings["prompt_tokens"])[settings["start"]:]

    def real_factory(sc: str, pol: str, scheme: str, seed: int) -> RealRoundExecutor:
        return RealRoundExecutor(slm, target, prompts, MarkovChannel(replace(spec), seed=seed),
                                 temperature=settings["temperature"], scheme=scheme, seed=seed)

    real = compare([args.scenario], policies, real_factory, seqs, args.max_new_tokens, traces.vocab_size, args.seed,
                   target_time=lambda sc, m: m * step, progress=True)
    lines = [f"Real compute vs simulator, {args.scenario}, {n} prompts, {args.max_new_tokens} new tokens "
             f"(trace {args.traces.name}; simulator mean of {args.sim_seeds} seeds)", "",
             "| policy | real tok/s | simulated tok/s | sim / real | real tokens/round | real draft s/token | "
             "real verify s/round |", "|---|---|---|---|---|---|---|"]
    for r in real:
        if not r.episodes:
            continue
        s_tps = sum(sim[r.policy]) / len(sim[r.policy])
        obs = [x.observation for e in r.episodes for x in e.rounds]
        draft_tok = sum(o.draft_s for o in obs) / sum(len(o.confidences) for o in obs)
        verify = sum(o.verify_s for o in obs) / len(obs)
        lines.append(f"| {r.policy} | {r.throughput:.3f} | {s_tps:.3f} | {s_tps / r.throughput:.3f} | "
                     f"{r.tokens / r.rounds:.2f} | {draft_tok:.4f} | {verify:.3f} |")
    lines.append(f"| target alone (measured step {step:.3f} s) | {1 / step:.3f} | | | | | |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
