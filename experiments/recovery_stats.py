"""Acceptance by tokens since the last rejection, from a real run's rounds.csv (what the recovery factor learns).

For every drafted position that the verifier reached in sequence (up to and including the first rejection of its
round), s = tokens committed since the last rejection before that position: 0 right after a round that ended in a
rejection (its last token is the correction drawn from the residual), counted from the prompt's start otherwise, as
the controller counts it (``edge_runtime.controller.recovery``). The table gives the share of those positions that
were accepted, per policy and per bucket of s, and the share of first drafts accepted after a rejected round and
after a fully accepted one. A second table gives, per bucket of s at a round's start, the rounds, their mean drafts
and their mean tokens (accepted drafts + 1).

    qsv experiment recovery experiment_out/link_s5        # or a rounds.csv; --out FILE.md writes the table too
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.controller.recovery import DEFAULT_RECOVERY_EDGES, RecoveryModel, since_after_round
from experiments.paired import rounds_csv_path

COLUMNS = ("scenario", "policy", "seq", "round", "drafted", "accepted")
BUCKETS = len(DEFAULT_RECOVERY_EDGES) + 1  # RecoveryModel's buckets of s


@dataclass
class Tally:
    """Accepted / reached positions per bucket of s, and first drafts after a rejected / fully accepted round."""

    reached: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    accepted: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    first: dict[str, list[int]] = field(default_factory=lambda: {"rejected": [0, 0], "accepted": [0, 0]})
    # per bucket of s at the round's start: [rounds, drafted, tokens]
    rounds: list[list[int]] = field(default_factory=lambda: [[0, 0, 0] for _ in range(BUCKETS)])


def read_rounds(path: Path) -> dict[tuple[str, str, int], list[tuple[int, int]]]:
    """(scenario, policy, seq) → [(drafted, accepted)] in round order."""
    rounds: dict[tuple[str, str, int], list[tuple[int, int, int]]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a rounds.csv (missing columns {sorted(missing)})")
        for row in reader:
            drafted, accepted = int(row["drafted"]), int(row["accepted"])
            if not 0 <= accepted <= drafted or drafted < 1:
                raise ValueError(f"{path}: round with accepted={accepted}, drafted={drafted}")
            rounds[row["scenario"], row["policy"], int(row["seq"])].append((int(row["round"]), drafted, accepted))
    return {key: [(d, a) for _, d, a in sorted(rs)] for key, rs in rounds.items()}


def tally(rounds: dict[tuple[str, str, int], list[tuple[int, int]]]) -> dict[tuple[str, str], Tally]:
    buckets = RecoveryModel()
    out: dict[tuple[str, str], Tally] = {}
    for (scenario, policy, _seq), episode in rounds.items():
        t = out.setdefault((scenario, policy), Tally())
        since, previous_full = 0, None
        for drafted, accepted in episode:
            r = t.rounds[buckets.bucket(since)]
            r[0] += 1
            r[1] += drafted
            r[2] += accepted + 1
            for j in range(min(drafted, accepted + 1)):
                b = buckets.bucket(since + j)
                t.reached[b] += 1
                t.accepted[b] += j < accepted
            if previous_full is not None:
                first = t.first["accepted" if previous_full else "rejected"]
                first[0] += 1
                first[1] += accepted >= 1
            previous_full = accepted == drafted
            since = since_after_round(since, drafted, accepted)
    return out


def to_markdown(tallies: dict[tuple[str, str], Tally]) -> str:
    labels = [row[0] for row in RecoveryModel().table()]

    def share(k: int, n: int) -> str:
        return f"{k / n:.2f} ({n})" if n else "–"

    lines = ["Acceptance of drafted positions by s = tokens since the last rejection (share accepted, positions "
             "reached in sequence); first draft after a rejected / a fully accepted round", "",
             "| scenario | policy | " + " | ".join(f"s = {x}" for x in labels) + " | first after rejection | "
             "first after full acceptance |",
             "|---|---|" + "---|" * (len(labels) + 2)]
    for (scenario, policy), t in tallies.items():
        cells = [share(a, n) for a, n in zip(t.accepted, t.reached, strict=True)]
        firsts = [share(t.first[k][1], t.first[k][0]) for k in ("rejected", "accepted")]
        lines.append(f"| {scenario} | {policy} | " + " | ".join(cells + firsts) + " |")
    lines += ["", "Rounds by s at their start: rounds, mean drafts / mean tokens per round", "",
              "| scenario | policy | " + " | ".join(f"s = {x}" for x in labels) + " |",
              "|---|---|" + "---|" * len(labels)]
    for (scenario, policy), t in tallies.items():
        cells = [f"{n}: {d / n:.2f} / {k / n:.2f}" if n else "–" for n, d, k in t.rounds]
        lines.append(f"| {scenario} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv experiment recovery", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run's output directory (with rounds.csv), or a rounds.csv")
    p.add_argument("--out", type=Path, help="also write the table to this file")
    args = p.parse_args(argv)
    path = rounds_csv_path(args.run)
    try:
        text = to_markdown(tally(read_rounds(path)))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if args.out:
        args.out.write_text(text)
    print(text, end="")  # the command's result
    return 0
