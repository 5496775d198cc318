"""``qsv experiment``: compare controllers — adaptive (model-based), static (3,240)/(4,240), S-Q, DDQN, target alone —
on the 4 Mbps two-state Markov uplink and at ≈350 kbps, over the same prompts and seeds.

Today the rounds run in the simulator (synthetic traces, or traces recorded from the real drafter/verifier with
``--traces``). The comparison itself only needs an ``ExecutorFactory``: a callable (scenario, policy, scheme, seed) →
RoundExecutor, the engine's roles for each sequence (qsv_tools.sim.episode); ``experiments/link_run.py`` builds
them on the real edge/verifier pair over the shaped link, ``experiments/real_check.py`` on real compute in process.

Subcommands: ``qsv experiment record ...`` records Qwen traces with measured timings (experiments/record.py, cached);
``qsv experiment qwen ...`` records (cached), then runs this comparison and the model check on the recording;
``qsv experiment link ...`` runs the policies on the real system over a tc-shaped link (experiments/link_run.py);
``qsv experiment paired RUN`` recomputes a run's paired comparison with the best static (L, ℓ) (experiments/paired.py).
``qsv experiment recovery RUN`` tabulates acceptance by tokens since the last rejection (experiments/recovery_stats.py).

Outputs in ``--out``: results.md, results.csv, rounds.csv, comparison.md / .csv (each policy against the best static
(L, ℓ), paired over prompts, with a bootstrap interval), throughput.png, bits_per_token.png,
decisions_<scenario>.png, ddqn_training_<scenario>.png (when DDQN runs), ddqn_<scenario>.pt and its board format
ddqn_<scenario>.onnx (``qsv experiment ddqn-onnx POLICY.pt [OUT.onnx]`` converts an older .pt).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_runtime.controller.base import Controller, StaticController
from edge_runtime.controller.model import TimingPriors
from edge_runtime.controller.model_based import ModelBasedController
from experiments.paired import episodes_from_results, paired_comparison, write_comparison
from qsv_tools.channel.markov import SCENARIOS, MarkovChannel, MarkovChannelSpec
from qsv_tools.sim.episode import EpisodeResult, RoundExecutor, run_episode
from qsv_tools.sim.record_timed import measured_target_step_s, timing_rounds
from qsv_tools.sim.simulator import PROFILES, SimRoundExecutor, TimingProfile, target_alone_time
from qsv_tools.sim.synthetic import generate_traces
from qsv_tools.sim.trace import TraceSet
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.experiment")

# ℓ sets per condition, as in the paper (the DDQN's action space): {240, 720} at 4 Mbps, a small-ℓ pair at low rates.
SCENARIO_ELLS: dict[str, tuple[int, ...]] = {"4mbps": (240, 720), "350kbps": (2, 16)}
# All four resolutions, for ``model:2/16/240/720``.
MODEL_ELLS: tuple[int, ...] = (2, 16, 240, 720)
# The model-based controller's default in both scenarios: {240, 720}. On the real system (20 prompts,
# `qsv experiment link`) the tokens per round of static L = 4 rise with ℓ (3.07, 3.16, 3.38, 3.51 at ℓ = 2, 16,
# 240, 720), and the compact code makes ℓ = 720 cost ~110 uplink bits per token. The simulator on the recorded traces
# ranks the small ℓ higher; it disagrees with the real system there (BENCHMARKS.md), so the real system decides.
MODEL_DEFAULT_ELLS: tuple[int, ...] = (240, 720)
# Model-based policy specs: early stop (model), none (model-nostop), early stop with the recovery factor (model-rec).
MODEL_SPECS: tuple[str, ...] = ("model", "model-nostop", "model-rec")

ExecutorFactory = Callable[[str, str, str, int], RoundExecutor]


@dataclass
class PolicyResult:
    scenario: str
    policy: str
    exact: bool
    episodes: list[EpisodeResult] = field(default_factory=list)
    time_override_s: float | None = None  # target alone: analytic time
    tokens_override: int | None = None

    @property
    def tokens(self) -> int:
        return self.tokens_override if self.tokens_override is not None else sum(e.tokens for e in self.episodes)

    @property
    def time_s(self) -> float:
        return self.time_override_s if self.time_override_s is not None else sum(e.time_s for e in self.episodes)

    @property
    def throughput(self) -> float:
        return self.tokens / self.time_s

    def per_episode_throughput(self) -> list[float]:
        return [e.throughput for e in self.episodes]

    @property
    def rounds(self) -> int:
        return sum(len(e.rounds) for e in self.episodes)

    def mean(self, fn: Callable) -> float:
        vals = [fn(r, d) for e in self.episodes for r, d in zip(e.rounds, e.decisions, strict=True)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def bits_per_token(self) -> float:
        bits = sum(e.uplink_bits for e in self.episodes)
        return bits / self.tokens if self.episodes else 0.0

    def ell_usage(self) -> dict[int, float]:
        ells = [d.ell for e in self.episodes for d in e.decisions]
        if not ells:
            return {}
        vals, counts = np.unique(ells, return_counts=True)
        return {int(v): float(c) / len(ells) for v, c in zip(vals, counts, strict=True)}


def make_policy(
    spec: str, scenario: str, vocab_size: int, seed: int, ddqn: Controller | None
) -> tuple[Controller, str]:
    """Policy spec → (controller, scheme). Specs: static:L:ell, sq:L:ell, model, model-nostop, model-rec (early stop
    with the recovery factor: α̂ calibrated by tokens since the last rejection), each optionally with the ℓ set, e.g.
    model:2/16/240/720 (default: MODEL_DEFAULT_ELLS); ddqn (the scenario's pair, as in the paper)."""
    ells = policy_ells(spec, scenario)  # validates the spec
    parts = spec.split(":")
    if parts[0] in ("static", "sq"):
        ctl = StaticController(int(parts[1]), ells[0])
        if parts[0] == "sq":
            ctl.name = f"S-Q({parts[1]},{parts[2]})"
        return ctl, "sq" if parts[0] == "sq" else "qs"
    if parts[0] in MODEL_SPECS:
        ctl_m = ModelBasedController(vocab_size, ells=ells, early_stop=parts[0] != "model-nostop", seed=seed,
                                     timing_priors=TimingPriors(), recovery=parts[0] == "model-rec")
        if len(parts) == 2:  # model:2/16/240/720 — the resolutions the controller may choose from
            ctl_m.name += f" ℓ∈{{{','.join(str(e) for e in ells)}}}"
        return ctl_m, "qs"
    if spec == "ddqn":
        if ddqn is None:
            raise ValueError("ddqn policy requested but no trained DDQN available")
        return ddqn, "qs"
    raise ValueError(f"policy spec {spec!r} is not a controller (the target alone is run by compare())")


def policy_ells(spec: str, scenario: str) -> tuple[int, ...]:
    """The resolutions a policy spec may use (what a trace must hold draws for); () for the target alone."""
    parts = spec.split(":")
    try:
        if parts[0] in ("static", "sq") and len(parts) == 3:
            if int(parts[1]) < 1:
                raise ValueError("L must be >= 1")
            return (int(parts[2]),)
        if parts[0] in MODEL_SPECS and len(parts) <= 2:
            return tuple(int(x) for x in parts[1].split("/")) if len(parts) == 2 else MODEL_DEFAULT_ELLS
    except ValueError as exc:
        raise ValueError(f"bad policy spec {spec!r}: {exc}") from None
    if spec == "ddqn":
        return SCENARIO_ELLS[scenario]
    if spec == "target":
        return ()
    raise ValueError(f"unknown policy spec {spec!r} "
                     "(static:L:ell, sq:L:ell, model, model-nostop, model-rec, ddqn, target)")


def default_policies(scenario: str) -> list[str]:
    small = min(SCENARIO_ELLS[scenario])
    specs = ["target", "static:3:240", "static:4:240", f"static:3:{small}", f"sq:3:{small}", "model", "model-nostop",
             "ddqn"]
    return list(dict.fromkeys(specs))


def sim_executor_factory(traces: TraceSet, timing: TimingProfile, specs: dict[str, MarkovChannelSpec],
                         channel_known: bool) -> ExecutorFactory:
    def make(scenario: str, policy: str, scheme: str, seed: int) -> RoundExecutor:
        return SimRoundExecutor(traces, MarkovChannel(specs[scenario], seed=seed), timing, scheme=scheme,
                                channel_known=channel_known, seed=seed + 1)
    return make


def compare(
    scenarios: Sequence[str],
    policies: dict[str, list[str]],
    make_executor: ExecutorFactory,
    seqs: Sequence[int],
    max_new_tokens: int,
    vocab_size: int,
    seed: int,
    target_time: Callable[[str, int], float],
    ddqn_for: Callable[[str], Controller | None] = lambda s: None,
    progress: bool = True,
) -> list[PolicyResult]:
    """Run every policy of every scenario over the same sequences with the same seed (the hook for real runs)."""
    from tqdm import tqdm

    results = []
    for scenario in scenarios:
        for spec in policies[scenario]:
            if spec == "target":
                n = len(seqs) * max_new_tokens
                t = len(seqs) * target_time(scenario, max_new_tokens)  # per prompt: one RTT + n target steps
                results.append(PolicyResult(scenario, "target alone", True, time_override_s=t, tokens_override=n))
                continue
            ctl, scheme = make_policy(spec, scenario, vocab_size, seed, ddqn_for(scenario) if spec == "ddqn" else None)
            ex = make_executor(scenario, ctl.name, scheme, seed)
            res = PolicyResult(scenario, ctl.name, scheme == "qs")
            for s in tqdm(seqs, desc=f"{scenario} {ctl.name}", disable=not progress, leave=False):
                res.episodes.append(run_episode(ctl, ex, s, max_new_tokens))
            results.append(res)
            log.info("%s %-16s %.1f tok/s", scenario, ctl.name, res.throughput)
    return results


def train_ddqn_policy(scenario: str, traces: TraceSet, timing: TimingProfile, spec: MarkovChannelSpec,
                      episodes: int, lr: float, seed: int, max_new_tokens: int, out: Path,
                      channel_known: bool) -> tuple[Controller, list[float]]:
    from qsv_tools.ddqn_training import DdqnController, DdqnHyper, train_ddqn

    # without the oracle state, the DQN's channel input is the state nearest to the last measured uplink rate
    agent = DdqnController(SCENARIO_ELLS[scenario], hyper=DdqnHyper(lr=lr), seed=seed,
                           state_rates_bps=None if channel_known else spec.rates_bps)
    ex = SimRoundExecutor(traces, MarkovChannel(spec, seed=seed + 7), timing, channel_known=channel_known,
                          seed=seed + 8)
    decay = 0.01 ** (1.0 / max(1.0, 0.8 * episodes))  # reach ε = 0.01 after 80 % of the episodes
    t0 = time.monotonic()
    tl = train_ddqn(agent, ex, [s.seq for s in traces.sequences], episodes, max_new_tokens, eps_decay=decay,
                    progress=True)
    log.info("ddqn %s: %d episodes, %d updates in %.0f s", scenario, episodes, agent.steps, time.monotonic() - t0)
    agent.save(out / f"ddqn_{scenario}.pt")
    agent.export_onnx(out / f"ddqn_{scenario}.onnx")  # the board format (controller.policy_path), torch-free
    return agent, tl.episode_throughput


def write_tables(results: list[PolicyResult], out: Path, meta: dict, title: str = "Simulator run") -> str:
    target = {r.scenario: r.throughput for r in results if r.policy == "target alone"}
    rows = []
    for r in results:
        eps = r.per_episode_throughput()
        rows.append({
            "scenario": r.scenario,
            "policy": r.policy,
            "exact": "yes" if r.exact else "no (biased)",
            "tokens_per_s": round(r.throughput, 2),
            "episode_tps_std": round(float(np.std(eps)), 2) if eps else "",
            "speedup_vs_target": round(r.throughput / target[r.scenario], 3) if r.scenario in target else "",
            "tokens_per_round": round(r.tokens / r.rounds, 3) if r.rounds else "",
            "mean_drafted": round(r.mean(lambda x, d: x.observation.drafted), 2) if r.episodes else "",
            "ell_usage": " ".join(f"{k}:{v:.2f}" for k, v in r.ell_usage().items()),
            "uplink_bits_per_token": round(r.bits_per_token, 1) if r.episodes else "",
        })
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = list(rows[0])
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    text = f"{title} ({json.dumps(meta)})\n\n" + "\n".join(md) + "\n"
    paired = paired_comparison(episodes_from_results(results))
    if paired:
        text += "\n" + write_comparison(paired, out)
    (out / "results.md").write_text(text)
    with open(out / "rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "policy", "seq", "round", "max_draft", "ell", "drafted", "accepted", "emitted",
                    "round_time_s", "uplink_bits", "channel_state", "uplink_bps"])
        for r in results:
            for e in r.episodes:
                for i, (x, d) in enumerate(zip(e.rounds, e.decisions, strict=True)):
                    o = x.observation
                    w.writerow([r.scenario, r.policy, e.seq, i, d.max_draft, d.ell, o.drafted, o.accepted, x.emitted,
                                f"{x.round_time_s:.6f}", o.uplink_bits, x.channel_state, x.uplink_rate_bps])
    return text


def plot(results: list[PolicyResult], out: Path, training: dict[str, list[float]], source: str = "simulator") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in results))
    for metric, fname, ylabel in (("throughput", "throughput.png", "tokens / s"),
                                  ("bits_per_token", "bits_per_token.png", "uplink bits per generated token")):
        fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
        for ax, sc in zip(axes[0], scenarios, strict=True):
            rs = [r for r in results if r.scenario == sc and (metric == "throughput" or r.episodes)]
            vals = [getattr(r, metric) for r in rs]
            colors = ["tab:gray" if not r.exact else "tab:blue" for r in rs]
            ax.bar(range(len(rs)), vals, color=colors)
            ax.set_xticks(range(len(rs)), [r.policy for r in rs], rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{sc} ({source}; gray: S-Q, biased output)")
            ax.set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
    for sc in scenarios:
        adaptive = [r for r in results if r.scenario == sc and r.policy in ("model+stop", "ddqn") and r.episodes]
        if not adaptive:
            continue
        fig, axes = plt.subplots(len(adaptive), 1, figsize=(10, 3.2 * len(adaptive)), squeeze=False)
        for ax, r in zip(axes[:, 0], adaptive, strict=True):
            rounds = [x for e in r.episodes[:3] for x in e.rounds]
            decs = [d for e in r.episodes[:3] for d in e.decisions]
            t = np.arange(len(rounds))
            ax.step(t, [x.observation.drafted for x in rounds], where="post", label="drafted L")
            ax.set_ylabel("L")
            ax2 = ax.twinx()
            ax2.step(t, [d.ell for d in decs], where="post", color="tab:green", label="ℓ")
            ax2.set_ylabel("ℓ", color="tab:green")
            ax2.set_yscale("log")
            used = sorted({d.ell for d in decs})
            ax2.set_yticks(used, [str(e) for e in used])
            ax2.minorticks_off()
            hi = max(x.observation.drafted for x in rounds)
            ax.fill_between(t, 0, [hi if x.channel_state else 0 for x in rounds], step="post", alpha=0.12,
                            color="tab:orange", label="high-rate state")
            ax.set_title(f"{sc}: {r.policy} — first 3 prompts ({source})")
            ax.set_xlabel("round")
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"decisions_{sc}.png", dpi=120)
        plt.close(fig)
    for sc, curve in training.items():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        k = max(1, len(curve) // 50)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(curve, alpha=0.3)
        ax.plot(np.arange(k - 1, len(curve)), smooth)
        ax.set_xlabel("episode")
        ax.set_ylabel("episode tokens / s")
        ax.set_title(f"DDQN training, {sc} (simulator)")
        fig.tight_layout()
        fig.savefig(out / f"ddqn_training_{sc}.png", dpi=120)
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv experiment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=cliargs.output_dir, default=Path("experiment_out"), help="output directory")
    p.add_argument("--traces", type=cliargs.readable_file,
                   help="JSONL trace (qsv_tools.sim.trace); default: synthetic traces")
    p.add_argument("--prompts", type=cliargs.positive_int, default=50, help="synthetic sequences (prompts) to evaluate")
    p.add_argument("--train-prompts", type=cliargs.positive_int, default=200,
                   help="synthetic sequences for DDQN training (disjoint from the evaluation ones)")
    p.add_argument("--max-new-tokens", type=cliargs.positive_int, default=52)
    p.add_argument("--vocab-size", type=cliargs.int_range(2), default=151_936,
                   help="for synthetic traces (Qwen2.5 vocabulary)")
    p.add_argument("--scenarios", default="4mbps,350kbps", type=cliargs.comma_list(sorted(SCENARIOS)),
                   help=f"comma list of {sorted(SCENARIOS)}")
    p.add_argument("--policies", help="comma list (static:L:ell, sq:L:ell, model, model-nostop, ddqn, target); "
                                      "default: the paper's comparison for each scenario")
    p.add_argument("--profile", default="paper-gpu", choices=sorted(PROFILES) + ["trace"],
                   help="compute timing profile; 'trace' calibrates from the trace's round records")
    p.add_argument("--rtt-ms", type=cliargs.non_negative_float, default=0.0,
                   help="RTT added to the Markov uplink (paper: none)")
    p.add_argument("--channel-estimated", action="store_true",
                   help="controllers do not see the coming round's channel state; they rely on their estimators")
    p.add_argument("--ddqn-episodes", type=cliargs.positive_int, default=600,
                   help="DDQN training episodes per scenario")
    p.add_argument("--ddqn-lr", type=cliargs.positive_float, default=1e-3,
                   help="Adam learning rate (paper: 1e-4, needs far more episodes)")
    p.add_argument("--ddqn-load", type=cliargs.existing_dir,
                   help="directory with ddqn_<scenario>.pt to use instead of training")
    p.add_argument("--seed", type=cliargs.int_range(0, 2**32 - 1), default=0)
    p.add_argument("--no-plots", action="store_true")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["record"]:
        from experiments.record import main as record_main

        return record_main(argv[1:])
    if argv[:1] == ["qwen"]:
        return qwen_main(argv[1:])
    if argv[:1] == ["link"]:
        from experiments.link_run import main as link_main

        return link_main(argv[1:])
    if argv[:1] == ["paired"]:
        from experiments.paired import main as paired_main

        return paired_main(argv[1:])
    if argv[:1] == ["recovery"]:
        from experiments.recovery_stats import main as recovery_main

        return recovery_main(argv[1:])
    if argv[:1] == ["ddqn-onnx"]:
        from qsv_tools.ddqn_training import export_main

        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    scenarios = list(dict.fromkeys(args.scenarios))  # checked against SCENARIOS by the argument's type
    policies = {s: ([p.strip() for p in args.policies.split(",") if p.strip()] if args.policies
                    else default_policies(s)) for s in scenarios}
    if any(not specs for specs in policies.values()):
        parser.error("--policies: expected a comma-separated list of policy specs")
    try:
        all_ells = sorted({e for s in scenarios for spec in policies[s] for e in policy_ells(spec, s)} | {240})
    except ValueError as exc:
        parser.error(f"--policies: {exc}")
    if min(all_ells) < 1 or max(all_ells) > args.vocab_size:
        parser.error(f"--policies: every resolution ell must be in 1..--vocab-size, got {all_ells}")
    if args.ddqn_load:
        needed = [args.ddqn_load / f"ddqn_{s}.pt" for s in scenarios if "ddqn" in policies[s]]
        absent = [str(path) for path in needed if not path.is_file()]
        if absent:
            parser.error(f"--ddqn-load: missing {', '.join(absent)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.traces:
        try:
            traces = TraceSet.load(args.traces)
        except (OSError, ValueError) as exc:  # TraceError and UnicodeDecodeError are ValueErrors
            parser.error(f"--traces: cannot load {args.traces}: {exc}")
        missing = [e for e in all_ells if e not in traces.ells]
        if missing:
            parser.error(f"--traces: {args.traces} lacks draws at ell {missing}; record them or restrict --scenarios")
        train_traces = traces
    else:
        length = args.max_new_tokens + 24
        traces = generate_traces(args.prompts, length, all_ells, args.vocab_size, seed=args.seed)
        train_traces = generate_traces(args.train_prompts, length, all_ells, args.vocab_size, seed=args.seed + 1000)
    target_step_s: float | None = None
    if args.profile == "trace":
        timing = TimingProfile.from_rounds(timing_rounds(traces.rounds, fastest=True),
                                            name="trace (measured, fastest per L)")
        target_step_s = measured_target_step_s(traces.rounds, fastest=True)  # measured autoregressive step
    else:
        timing = PROFILES[args.profile]
    specs = {s: replace(SCENARIOS[s], rtt_s=args.rtt_ms / 1e3) for s in scenarios}
    channel_known = not args.channel_estimated

    ddqn: dict[str, Controller] = {}
    training: dict[str, list[float]] = {}
    for s in scenarios:
        if "ddqn" not in policies[s]:
            continue
        if args.ddqn_load:
            from qsv_tools.ddqn_training import DdqnController

            ddqn[s] = DdqnController.load(args.ddqn_load / f"ddqn_{s}.pt",
                                          state_rates_bps=None if channel_known else specs[s].rates_bps)
        else:
            ddqn[s], training[s] = train_ddqn_policy(s, train_traces, timing, specs[s], args.ddqn_episodes,
                                                     args.ddqn_lr, args.seed, args.max_new_tokens, args.out,
                                                     channel_known)

    results = compare(
        scenarios, policies, sim_executor_factory(traces, timing, specs, channel_known),
        [s.seq for s in traces.sequences], args.max_new_tokens, traces.vocab_size, args.seed,
        target_time=lambda sc, n: (specs[sc].rtt_s + n * target_step_s if target_step_s is not None
                                   else target_alone_time(timing, n, specs[sc].rtt_s)),
        ddqn_for=ddqn.get,
    )
    meta = {"traces": str(args.traces) if args.traces else f"synthetic seed={args.seed}",
            "prompts": len(traces.sequences), "max_new_tokens": args.max_new_tokens, "profile": timing.name,
            "rtt_ms": args.rtt_ms, "channel_known": channel_known, "seed": args.seed,
            "ddqn_episodes": 0 if args.ddqn_load else args.ddqn_episodes, "ddqn_lr": args.ddqn_lr,
            "timing": {"draft_per_token_s": round(timing.draft_per_token_s, 5),
                       "verify_s": f"{timing.verify_intercept_s:.4f} + {timing.verify_per_token_s:.4f}*L",
                       "target_step_s": round(target_step_s if target_step_s is not None else timing.target_token_s,
                                              5)}}
    text = write_tables(results, args.out, meta)
    if not args.no_plots:
        plot(results, args.out, training)
    print(text)  # the command's result on stdout (not library code)
    return 0


def qwen_main(argv: Sequence[str]) -> int:
    """Record (cached) the Qwen traces, then the comparison and the model check on them, outputs in --out."""
    from experiments import model_check
    from experiments.record import add_arguments, record

    p = argparse.ArgumentParser(prog="qsv experiment qwen", description=qwen_main.__doc__)
    add_arguments(p)
    p.add_argument("--ddqn-episodes", type=cliargs.positive_int, default=600)
    p.add_argument("--sim-seed", type=cliargs.int_range(0, 2**32 - 1), default=0, help="simulator / controller seed")
    args = p.parse_args(argv)
    setup_logging(args)
    path = record(args)
    rc = main(["--traces", str(path), "--profile", "trace", "--out", str(args.out), "--seed", str(args.sim_seed),
               "--ddqn-episodes", str(args.ddqn_episodes)])
    with open(args.out / "model_check.md", "w", encoding="utf-8") as f:
        model_check.main(["--traces", str(path), "--profile", "trace"], out=f)
    print((args.out / "model_check.md").read_text())
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
