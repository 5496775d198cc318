"""Timed lockstep recording (KV-cached draft + target) with tiny random-weight models, and the experiment CLI on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from qsv_tools.sim import TimingProfile, TraceSet  # noqa: E402
from qsv_tools.sim.record import draft_model_logits, record_traces, target_model_logits  # noqa: E402
from qsv_tools.sim.record_timed import (  # noqa: E402
    measured_target_step_s,
    record_traces_timed,
    timing_rounds,
)

PROMPTS = [[0, 5, 9, 12], [0, 33, 2], [0, 7, 7, 7, 40]]


@pytest.fixture(scope="module")
def pair():
    from cloud_verifier.target import TargetModel
    from qsv_tools.export.tiny import tiny_causal_lm
    from qsv_tools.torch_slm import TorchSLM

    torch.set_num_threads(1)
    target = TargetModel(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0), "cpu")
    draft = TorchSLM(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0, noise=0.3))
    same = TorchSLM(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0))
    return target, draft, same


def test_identical_models_are_aligned_position_by_position(pair) -> None:
    """Draft = target: q(x) equals p(x) at every position only if both caches see the same context (no off-by-one)."""
    target, _, same = pair
    ts = record_traces_timed(PROMPTS[:2], same, target, (16, 240), vocab_size=64, n_tokens=20, seed=4,
                             verify_lengths=(1, 3))
    cols = np.concatenate([s.columns("qs", 240) for s in ts.sequences])
    np.testing.assert_allclose(cols[:, 0], cols[:, 2], atol=1e-4)
    assert np.concatenate([s.alphas("qs", 240) for s in ts.sequences]).mean() > 0.97


def test_timed_trace_matches_uncached_recorder_statistics_and_fits_timings(pair, tmp_path: Path) -> None:
    target, draft, _ = pair
    ts = record_traces_timed(PROMPTS, draft, target, (2, 240), vocab_size=64, n_tokens=30, seed=1,
                             verify_lengths=(1, 2, 4))
    assert [len(s) for s in ts.sequences] == [30, 30, 30]
    rounds = timing_rounds(ts.rounds)
    assert sorted({r["L"] for r in rounds}) == [1, 2, 4] and len(rounds) == 9
    assert all(r["verify_s"] > 0 and r["draft_s"] > 0 for r in rounds)
    assert measured_target_step_s(ts.rounds) > 0
    path = tmp_path / "timed.jsonl"
    ts.save(path)
    back = TraceSet.load(path)
    prof = TimingProfile.from_rounds(timing_rounds(back.rounds))
    assert prof.draft_per_token_s > 0 and prof.target_token_s > 0
    # the same pair through the uncached recorder (independent draws): mean acceptance agrees (90 contexts each,
    # per-context α spread ≈ 0.3 → standard error of the difference ≈ 0.05; tolerance 0.15)
    ref = record_traces(PROMPTS, draft_model_logits(draft), target_model_logits(target), (2, 240), vocab_size=64,
                        n_tokens=30, seed=7)
    for ell in (2, 240):
        a = np.concatenate([s.alphas("qs", ell) for s in ts.sequences]).mean()
        b = np.concatenate([s.alphas("qs", ell) for s in ref.sequences]).mean()
        assert abs(a - b) < 0.15, (ell, a, b)


def test_experiment_runs_on_timed_trace_and_model_check(pair, tmp_path: Path) -> None:
    import io

    from experiments import model_check
    from experiments.compare import main

    target, draft, _ = pair
    ts = record_traces_timed([*PROMPTS, [0, 3, 4, 5]], draft, target, (2, 16, 240, 720), vocab_size=64,
                             n_tokens=64, seed=2, verify_lengths=(1, 2, 4, 8))
    path = tmp_path / "t.jsonl"
    ts.save(path)
    assert main(["--traces", str(path), "--profile", "trace", "--out", str(tmp_path / "o"), "--no-plots",
                 "--policies", "target,static:3:240,model", "--scenarios", "4mbps"]) == 0
    text = (tmp_path / "o" / "results.md").read_text()
    assert "target alone" in text and "model+stop" in text and "trace (measured, fastest per L)" in text
    buf = io.StringIO()
    model_check.main(["--traces", str(path), "--profile", "trace", "--configs", "2:240,3:16"], out=buf)
    rows = [ln for ln in buf.getvalue().splitlines() if ln.startswith("| 4mbps") or ln.startswith("| 350kbps")]
    assert len(rows) == 4
    ratios = [float(r.split("|")[-2]) for r in rows]
    assert all(0.5 < x < 2.0 for x in ratios)


def test_record_rejects_bad_input(pair) -> None:
    target, draft, _ = pair
    with pytest.raises(ValueError, match="prompt"):
        record_traces_timed([[0]], draft, target, (240,), vocab_size=64, n_tokens=5)
    with pytest.raises(ValueError, match="verify lengths"):
        record_traces_timed([[0, 1]], draft, target, (240,), vocab_size=64, n_tokens=3, verify_lengths=(4,))


def test_time_budget_keeps_at_least_two_prompts(pair) -> None:
    target, draft, _ = pair
    ts = record_traces_timed(PROMPTS, draft, target, (240,), vocab_size=64, n_tokens=4, verify_lengths=(1,),
                             time_budget_s=0.0)
    assert len(ts.sequences) == 2 and ts.meta["recorded_prompts"] == 2


def test_fastest_timings_take_the_minimum_per_length() -> None:
    rounds = [{"kind": "timing", "seq": 0, "L": 1, "draft_s": 0.2, "verify_s": 3.0},
              {"kind": "timing", "seq": 1, "L": 1, "draft_s": 0.1, "verify_s": 4.0},
              {"kind": "timing", "seq": 0, "L": 4, "draft_s": 0.5, "verify_s": 1.5},
              {"kind": "target_step", "seq": 0, "mean_s": 0.9}, {"kind": "target_step", "seq": 1, "mean_s": 0.3}]
    fast = timing_rounds(rounds, fastest=True)
    assert [(r["L"], r["draft_s"], r["verify_s"]) for r in fast] == [(1, 0.1, 3.0), (4, 0.5, 1.5)]
    assert len(timing_rounds(rounds)) == 3
    assert measured_target_step_s(rounds, fastest=True) == 0.3
    assert measured_target_step_s(rounds) == pytest.approx(0.6)
    assert measured_target_step_s(rounds[:3]) is None


def test_prompts_are_cut_to_the_token_budget_and_keep_the_summary_suffix() -> None:
    from experiments.record import prompt_token_ids

    def encode(text: str) -> list[int]:
        return list(text.encode("utf-8"))

    prompts = prompt_token_ids(encode, 3, 100)
    suffix = encode("\nSummary:")
    assert len(prompts) == 3
    for p in prompts:
        assert len(p) == 100 and p[-len(suffix):] == suffix and bytes(p[:8]) == b"Article:"
    with pytest.raises(ValueError, match="prompt-tokens"):
        prompt_token_ids(encode, 1, 5)
