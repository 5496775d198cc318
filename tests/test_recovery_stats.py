"""qsv experiment recovery: acceptance by tokens since the last rejection, from a rounds.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments.recovery_stats import main, read_rounds, tally


def write_rounds(path: Path, rows: list[tuple[str, int, int, int, int]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "policy", "seq", "round", "max_draft", "drafted", "accepted", "emitted"])
        for policy, seq, rnd, drafted, accepted in rows:
            w.writerow(["4mbps", policy, seq, rnd, drafted, drafted, accepted, accepted + 1])
    return path


def test_positions_are_counted_by_tokens_since_the_last_rejection(tmp_path: Path) -> None:
    # prompt 0, rounds out of order in the file: (4 drafted, 2 accepted) then (4, 4) then (2, 0)
    path = write_rounds(tmp_path / "rounds.csv", [("p", 0, 1, 4, 4), ("p", 0, 0, 4, 2), ("p", 0, 2, 2, 0)])
    t = tally(read_rounds(path))["4mbps", "p"]
    # round 0 starts at s = 0: positions s = 0, 1 accepted, s = 2 rejected (position 4 never reached)
    # round 1 starts at s = 0 (after the rejection): s = 0..3 all accepted; then s = 0 + 4 + 1 = 5
    # round 2 starts at s = 5: rejected at once (bucket 4-5)
    assert t.reached == [2, 2, 2, 1, 1, 0, 0]
    assert t.accepted == [2, 2, 1, 1, 0, 0, 0]
    assert t.first == {"rejected": [1, 1], "accepted": [1, 0]}
    assert t.rounds == [[2, 8, 8], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 2, 1], [0, 0, 0], [0, 0, 0]]


def test_command_prints_and_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rounds(tmp_path / "rounds.csv", [("static(4,240)", 0, 0, 4, 1), ("static(4,240)", 0, 1, 4, 4)])
    assert main([str(tmp_path), "--out", str(tmp_path / "recovery.md")]) == 0
    printed = capsys.readouterr().out
    # s = 0: accepted in both rounds; s = 1: rejected in round 0, accepted in round 1
    assert "| 4mbps | static(4,240) | 1.00 (2) | 0.50 (2) | 1.00 (1) |" in printed
    assert "| 4mbps | static(4,240) | 2: 4.00 / 3.50 | – |" in printed  # both rounds start at s = 0
    assert (tmp_path / "recovery.md").read_text() == printed


def test_bad_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("scenario,policy\n4mbps,p\n")
    with pytest.raises(SystemExit, match="missing columns"):
        main([str(bad)])
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "nothing")])
    write_rounds(bad, [("p", 0, 0, 2, 3)])
    with pytest.raises(SystemExit, match="accepted=3, drafted=2"):
        main([str(bad)])
