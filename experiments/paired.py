"""Paired comparison of each policy with the best static (L, ℓ) over the same prompts, with a bootstrap interval.

Tokens/s of a policy over a set of prompts is its generated tokens over its round time, summed over the prompts. For
every scenario the best static configuration is the ``static(L,ℓ)`` policy with the highest tokens/s; every other
policy is compared with it on the prompts both ran: the ratio of tokens/s, on how many prompts it was faster, the
median per-prompt ratio, the ratio on the first and second half of the prompts, and a 95 % percentile-bootstrap
interval of the ratio (prompts resampled with replacement, both policies on the same resample: a paired bootstrap).
The interval covers the choice of prompts only; the run-to-run timing noise of the machine comes on top.

``qsv experiment paired RUN_DIR_OR_ROUNDS_CSV ...`` recomputes the comparison from a run's rounds.csv; given several
runs (same prompts and seeds), it pools them: each run's episodes count separately, and a policy is compared with
the best static on the (run, prompt) pairs both ran.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("qsv.experiment.paired")

BOOTSTRAP_RESAMPLES = 4000
RUN_SHIFT = 20  # pooled runs: episode key = prompt + (run index << RUN_SHIFT)
FIELDS = ("scenario", "policy", "best_static", "prompts", "ratio", "ci_low", "ci_high", "faster_on", "median_ratio",
          "first_half", "second_half")


@dataclass(frozen=True)
class Episode:
    scenario: str
    policy: str
    seq: int
    tokens: int
    time_s: float


def episodes_from_results(results: Iterable) -> list[Episode]:
    """Episodes of PolicyResult objects (``experiments.compare``); analytic rows (target alone) have none."""
    return [Episode(r.scenario, r.policy, e.seq, e.tokens, e.time_s) for r in results for e in r.episodes]


def episodes_from_rounds_csv(path: Path) -> list[Episode]:
    """Episodes summed from a run's rounds.csv (columns scenario, policy, seq, emitted, round_time_s)."""
    acc: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0.0])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"scenario", "policy", "seq", "emitted", "round_time_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a rounds.csv (missing columns {sorted(missing)})")
        for row in reader:
            a = acc[row["scenario"], row["policy"], int(row["seq"])]
            a[0] += int(row["emitted"])
            a[1] += float(row["round_time_s"])
    return [Episode(sc, p, seq, int(t), s) for (sc, p, seq), (t, s) in acc.items()]


def _columns(episodes: Iterable[Episode]) -> tuple[np.ndarray, np.ndarray]:
    eps = list(episodes)
    return np.array([e.tokens for e in eps], dtype=float), np.array([e.time_s for e in eps])


def _throughput(tokens: np.ndarray, times: np.ndarray) -> float:
    return float(tokens.sum() / times.sum())


def paired_comparison(episodes: Sequence[Episode], resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> list[dict]:
    """One row per (scenario, policy other than the best static); see the module docstring."""
    by: dict[str, dict[str, dict[int, Episode]]] = defaultdict(lambda: defaultdict(dict))
    for e in episodes:
        if e.time_s <= 0:
            raise ValueError(f"episode {e.scenario}/{e.policy}/{e.seq} has no round time")
        by[e.scenario][e.policy][e.seq] = e
    rng = np.random.default_rng(seed)
    rows = []
    for scenario, policies in by.items():
        statics = [p for p in policies if p.startswith("static(")]
        if not statics:
            log.warning("%s: no static policy to compare with", scenario)
            continue
        best = max(statics, key=lambda p: _throughput(*_columns(policies[p].values())))
        for policy in policies:
            if policy == best:
                continue
            seqs = sorted(set(policies[policy]) & set(policies[best]))
            if not seqs:
                continue
            a_tok, a_time = _columns(policies[policy][s] for s in seqs)
            b_tok, b_time = _columns(policies[best][s] for s in seqs)
            ratio = _throughput(a_tok, a_time) / _throughput(b_tok, b_time)
            per_prompt = (a_tok / a_time) / (b_tok / b_time)
            idx = rng.integers(0, len(seqs), size=(resamples, len(seqs)))
            boot = (a_tok[idx].sum(1) / a_time[idx].sum(1)) / (b_tok[idx].sum(1) / b_time[idx].sum(1))
            lo, hi = np.quantile(boot, [0.025, 0.975])
            half = len(seqs) // 2
            halves = [(_throughput(a_tok[s], a_time[s]) / _throughput(b_tok[s], b_time[s])) if len(a_tok[s]) else
                      float("nan") for s in (slice(0, half), slice(half, None))]
            rows.append({
                "scenario": scenario, "policy": policy, "best_static": best, "prompts": len(seqs),
                "ratio": round(ratio, 3), "ci_low": round(float(lo), 3), "ci_high": round(float(hi), 3),
                "faster_on": int((per_prompt > 1).sum()), "median_ratio": round(float(np.median(per_prompt)), 3),
                "first_half": round(halves[0], 3), "second_half": round(halves[1], 3),
            })
    return rows


def to_markdown(rows: Sequence[dict]) -> str:
    head = ("| scenario | policy | vs best static | prompts | tok/s ratio | 95 % bootstrap | faster on | median "
            "per-prompt ratio | 1st half / 2nd half |")
    md = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        md.append(f"| {r['scenario']} | {r['policy']} | {r['best_static']} | {r['prompts']} | {r['ratio']:.3f} | "
                  f"{r['ci_low']:.3f}–{r['ci_high']:.3f} | {r['faster_on']} of {r['prompts']} | "
                  f"{r['median_ratio']:.3f} | {r['first_half']:.3f} / {r['second_half']:.3f} |")
    return "\n".join(md) + "\n"


def write_comparison(rows: Sequence[dict], out: Path) -> str:
    """comparison.csv and comparison.md in ``out``; returns the markdown."""
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(FIELDS))
        w.writeheader()
        w.writerows(rows)
    text = ("Paired comparison with the best static (L, ℓ) of each scenario, same prompts and seeds "
            f"(percentile bootstrap over prompts, {BOOTSTRAP_RESAMPLES} resamples, seed 0)\n\n" + to_markdown(rows))
    (out / "comparison.md").write_text(text)
    return text


def rounds_csv_path(run: Path) -> Path:
    """A run's output directory or a rounds.csv → the rounds.csv; a clear exit when it is missing."""
    path = run / "rounds.csv" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv experiment paired", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, nargs="+",
                   help="a run's output directory (with rounds.csv), or a rounds.csv; several runs are pooled")
    p.add_argument("--out", type=Path, help="write comparison.csv / comparison.md here (default: print only)")
    args = p.parse_args(argv)
    episodes: list[Episode] = []
    for index, run in enumerate(args.run):
        path = rounds_csv_path(run)
        try:
            # prompts of different runs are different episodes: the run's index goes above the prompt number
            episodes += [Episode(e.scenario, e.policy, e.seq + (index << RUN_SHIFT), e.tokens, e.time_s)
                         for e in episodes_from_rounds_csv(path)]
        except ValueError as e:
            raise SystemExit(str(e)) from None
    rows = paired_comparison(episodes)
    if not rows:
        raise SystemExit(f"{', '.join(map(str, args.run))}: no scenario has a static policy and another policy to "
                         "compare")
    print(write_comparison(rows, args.out) if args.out else to_markdown(rows), end="")  # the command's result
    return 0
