"""The qsv experiment command end to end on a tiny synthetic setup (simulator)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments.compare import default_policies, main, make_policy


def test_experiment_command_writes_table_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["--out", str(out), "--prompts", "4", "--train-prompts", "3", "--max-new-tokens", "20",
               "--ddqn-episodes", "3",
               "--scenarios", "4mbps,350kbps"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    policies = {(r["scenario"], r["policy"]) for r in rows}
    for sc in ("4mbps", "350kbps"):
        for name in ("target alone", "static(3,240)", "static(4,240)", "model+stop", "ddqn"):
            assert (sc, name) in policies
    assert ("350kbps", "S-Q(3,2)") in policies
    target = {r["scenario"]: float(r["tokens_per_s"]) for r in rows if r["policy"] == "target alone"}
    for r in rows:
        assert float(r["tokens_per_s"]) > 0
        assert float(r["speedup_vs_target"]) == pytest.approx(float(r["tokens_per_s"]) / target[r["scenario"]],
                                                             rel=0.01)
        if r["policy"].startswith("S-Q"):
            assert r["exact"].startswith("no")
    for name in ("results.md", "rounds.csv", "throughput.png", "bits_per_token.png", "decisions_4mbps.png",
                 "ddqn_4mbps.pt", "ddqn_4mbps.onnx", "ddqn_training_350kbps.png", "comparison.md"):
        assert (out / name).stat().st_size > 0
    # the paired comparison: against the fastest static of each scenario, ratios as in the results table
    tps = {(r["scenario"], r["policy"]): float(r["tokens_per_s"]) for r in rows}
    compared = list(csv.DictReader(open(out / "comparison.csv")))
    for sc in ("4mbps", "350kbps"):
        best = max((p for s, p in tps if s == sc and p.startswith("static(")), key=lambda p: tps[sc, p])
        row = next(r for r in compared if r["scenario"] == sc and r["policy"] == "model+stop")
        assert row["best_static"] == best
        assert float(row["ratio"]) == pytest.approx(tps[sc, "model+stop"] / tps[sc, best], rel=0.02)
    assert "Paired comparison" in (out / "results.md").read_text()
    # reuse the trained weights instead of training again
    rc = main(["--out", str(tmp_path / "again"), "--prompts", "2", "--max-new-tokens", "10", "--scenarios", "4mbps",
               "--policies", "ddqn,static:2:720", "--ddqn-load", str(out), "--no-plots"])
    assert rc == 0


def test_policy_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert default_policies("4mbps")[:3] == ["target", "static:3:240", "static:4:240"]
    ctl, scheme = make_policy("sq:3:16", "350kbps", 151_936, 0, None)
    assert scheme == "sq" and ctl.choose().ell == 16
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("fastest", "4mbps", 151_936, 0, None)
    with pytest.raises(ValueError, match="no trained DDQN"):
        make_policy("ddqn", "4mbps", 151_936, 0, None)
    for argv, message in ((["--scenarios", "5g"], "unknown '5g'"),
                          (["--policies", "static:3:240,fastest"], "unknown policy spec 'fastest'"),
                          (["--policies", "static:x:240"], "bad policy spec 'static:x:240'"),
                          (["--policies", "model:2/x"], "bad policy spec 'model:2/x'")):
        with pytest.raises(SystemExit) as exc:  # argparse style: usage, one error line, exit status 2
            main([*argv, "--prompts", "1", "--no-plots"])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_model_policy_spec_takes_an_ell_set() -> None:
    from experiments.compare import MODEL_DEFAULT_ELLS, MODEL_ELLS, make_policy, policy_ells

    ctl, scheme = make_policy("model:2/16/240/720", "350kbps", 1000, 0, None)
    assert scheme == "qs" and tuple(ctl.ells) == MODEL_ELLS and ctl.name.endswith("ℓ∈{2,16,240,720}")
    pair, _ = make_policy("model", "350kbps", 1000, 0, None)
    assert tuple(pair.ells) == MODEL_DEFAULT_ELLS == (240, 720) and pair.name == "model+stop"
    assert policy_ells("model", "350kbps") == (240, 720) and policy_ells("static:3:16", "4mbps") == (16,)
    assert policy_ells("ddqn", "350kbps") == (2, 16) and policy_ells("target", "4mbps") == ()
    nostop, _ = make_policy("model-nostop:240/720", "4mbps", 1000, 0, None)
    assert not nostop.early_stop and tuple(nostop.ells) == (240, 720)
    with pytest.raises(ValueError):
        make_policy("model:2:16", "4mbps", 1000, 0, None)
