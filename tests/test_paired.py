"""The paired comparison with the best static (L, ℓ): ratios, prompt pairing, bootstrap interval, rounds.csv input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from experiments.paired import Episode, episodes_from_rounds_csv, main, paired_comparison


def _episodes(scenario: str, policy: str, tokens: list[int], times: list[float], first_seq: int = 0) -> list[Episode]:
    return [Episode(scenario, policy, first_seq + i, t, s) for i, (t, s) in enumerate(zip(tokens, times, strict=True))]


def test_a_uniformly_faster_policy_has_its_ratio_on_every_prompt() -> None:
    times = [20.0, 25.0, 18.0, 30.0, 22.0, 26.0]
    eps = (_episodes("4mbps", "static(4,240)", [52] * 6, times)
           + _episodes("4mbps", "static(3,240)", [52] * 6, [t * 1.1 for t in times])
           + _episodes("4mbps", "model+stop", [52] * 6, [t / 1.2 for t in times]))
    rows = {r["policy"]: r for r in paired_comparison(eps)}
    assert set(rows) == {"static(3,240)", "model+stop"}  # the best static is the reference, not a row
    m = rows["model+stop"]
    assert m["best_static"] == "static(4,240)"
    assert m["ratio"] == pytest.approx(1.2, abs=1e-3)
    assert m["ci_low"] == pytest.approx(1.2, abs=1e-3) and m["ci_high"] == pytest.approx(1.2, abs=1e-3)
    assert m["faster_on"] == 6 and m["median_ratio"] == pytest.approx(1.2, abs=1e-3)
    assert m["first_half"] == pytest.approx(1.2, abs=1e-3) and m["second_half"] == pytest.approx(1.2, abs=1e-3)
    s = rows["static(3,240)"]
    assert s["ratio"] == pytest.approx(1 / 1.1, abs=1e-3) and s["faster_on"] == 0


def test_ratio_is_of_summed_tokens_over_summed_time_and_interval_brackets_it() -> None:
    rng = np.random.default_rng(3)
    n = 20
    base_t = rng.uniform(15, 30, n)
    eps = _episodes("350kbps", "static(3,2)", [52] * n, list(base_t))
    tok = rng.integers(50, 56, n)
    t = base_t * rng.uniform(0.6, 1.3, n)
    eps += _episodes("350kbps", "model+stop", list(tok), list(t))
    (row,) = paired_comparison(eps, seed=1)
    expected = (tok.sum() / t.sum()) / (52 * n / base_t.sum())
    assert row["ratio"] == pytest.approx(expected, abs=5e-4)
    assert row["ci_low"] < row["ratio"] < row["ci_high"]
    assert row["ci_high"] - row["ci_low"] > 0.05  # per-prompt ratios spread 0.77-1.67: not a point
    per_prompt = (tok / t) / (52 / base_t)
    assert row["faster_on"] == int((per_prompt > 1).sum())
    assert row["median_ratio"] == pytest.approx(float(np.median(per_prompt)), abs=5e-4)
    assert paired_comparison(eps, seed=1) == [row]  # seeded: the same interval again


def test_only_prompts_both_policies_ran_are_compared() -> None:
    eps = (_episodes("4mbps", "static(4,240)", [52] * 4, [20.0] * 4)
           + _episodes("4mbps", "model+stop", [52] * 2, [10.0, 10.0], first_seq=2)  # prompts 2, 3 only
           + [Episode("4mbps", "static(4,240)", 9, 52, 1000.0)])  # a prompt the other policy never ran
    (row,) = paired_comparison(eps)
    assert row["prompts"] == 2 and row["ratio"] == pytest.approx(2.0, abs=1e-3)


def test_scenarios_are_compared_separately_and_need_a_static() -> None:
    eps = (_episodes("4mbps", "static(4,240)", [52] * 3, [20.0] * 3)
           + _episodes("4mbps", "ddqn", [52] * 3, [25.0] * 3)
           + _episodes("350kbps", "ddqn", [52] * 3, [5.0] * 3))  # no static at 350 kbps: nothing to compare
    rows = paired_comparison(eps)
    assert [(r["scenario"], r["policy"]) for r in rows] == [("4mbps", "ddqn")]
    assert rows[0]["ratio"] == pytest.approx(0.8, abs=1e-3)


def test_an_episode_without_time_is_an_error() -> None:
    with pytest.raises(ValueError, match="no round time"):
        paired_comparison([Episode("4mbps", "static(4,240)", 0, 52, 0.0)])


def _write_rounds(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "policy", "seq", "round", "emitted", "round_time_s"])
        w.writerows(rows)


def test_rounds_csv_is_summed_per_episode_and_the_command_writes_the_tables(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    rows = []
    for seq in range(4):
        rows += [("4mbps", "static(4,240)", seq, r, 4, 2.0) for r in range(13)]  # 52 tokens in 26 s
        rows += [("4mbps", "model+stop", seq, r, 5, 2.0) for r in range(11)]  # 55 tokens in 22 s
    _write_rounds(tmp_path / "rounds.csv", rows)
    eps = episodes_from_rounds_csv(tmp_path / "rounds.csv")
    assert sorted((e.policy, e.seq, e.tokens, e.time_s) for e in eps)[0] == ("model+stop", 0, 55, pytest.approx(22.0))
    assert main([str(tmp_path), "--out", str(tmp_path)]) == 0
    (row,) = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    assert float(row["ratio"]) == pytest.approx((55 / 22) / (52 / 26), abs=1e-3)
    assert "model+stop | static(4,240) | 4 |" in (tmp_path / "comparison.md").read_text()
    assert "model+stop" in capsys.readouterr().out


def test_several_runs_are_pooled_as_separate_episodes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, model_rounds in (("a", 11), ("b", 13)):  # model: 55 tokens in 22 s, then 65 tokens in 26 s
        (tmp_path / name).mkdir()
        rows = []
        for seq in range(3):
            rows += [("4mbps", "static(4,240)", seq, r, 4, 2.0) for r in range(13)]  # 52 tokens in 26 s
            rows += [("4mbps", "model+stop", seq, r, 5, 2.0) for r in range(model_rounds)]
        _write_rounds(tmp_path / name / "rounds.csv", rows)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path)]) == 0
    (row,) = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    assert row["prompts"] == "6"  # 3 prompts × 2 runs
    assert float(row["ratio"]) == pytest.approx(((3 * 55 + 3 * 65) / (3 * 22 + 3 * 26)) / 2.0, abs=1e-3)
    capsys.readouterr()


def test_the_command_rejects_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "missing")])
    (tmp_path / "rounds.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="missing columns"):
        main([str(tmp_path)])
    _write_rounds(tmp_path / "rounds.csv", [("4mbps", "ddqn", 0, 0, 4, 1.0)])
    with pytest.raises(SystemExit, match="no scenario has a static policy"):
        main([str(tmp_path)])
