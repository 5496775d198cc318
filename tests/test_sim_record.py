"""Recording simulator traces from a real (tiny, random-weight) draft/target model pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from edge_runtime.controller import StaticController  # noqa: E402
from qsv_tools.channel import PAPER_4MBPS, MarkovChannel  # noqa: E402
from qsv_tools.sim import PROFILES, SimRoundExecutor, TraceSet, run_episode  # noqa: E402
from qsv_tools.sim.record import draft_model_logits, record_traces, target_model_logits  # noqa: E402


@pytest.fixture(scope="module")
def models():
    from cloud_verifier.target import TargetModel
    from qsv_tools.export.tiny import tiny_causal_lm
    from qsv_tools.torch_slm import TorchSLM

    torch.set_num_threads(1)
    target_lm = tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0)
    draft_lm = tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0, noise=0.3)
    same_lm = tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0)
    target = target_model_logits(TargetModel(target_lm, "cpu"))
    return target, draft_model_logits(TorchSLM(draft_lm)), draft_model_logits(TorchSLM(same_lm))


PROMPTS = [[0, 5, 9, 12], [0, 33, 2], [0, 7, 7, 7, 40]]


def test_recorded_trace_is_consistent_and_simulates(models, tmp_path: Path) -> None:
    target, draft, _ = models
    ts = record_traces(PROMPTS, draft, target, (2, 16, 240), vocab_size=64, n_tokens=30, seed=1)
    assert [len(s) for s in ts.sequences] == [30, 30, 30]
    for s in ts.sequences:
        assert np.all((s.entropy >= 0) & (s.entropy <= np.log2(64) + 1e-9))
        for ell in (2, 16, 240):
            qs = s.columns("qs", ell)
            assert np.all((qs >= 0) & (qs <= 1 + 1e-9))
            assert np.all(qs[:, 1] > 0)  # Q-S draws come from q̂: never a zero-mass token
            assert np.all(np.abs(qs[:, 1] - qs[:, 0]) <= 1.0 / ell + 1e-6)  # |q̂ − q| ≤ 1/ℓ per entry (lattice rule)
    a2 = np.concatenate([s.alphas("qs", 2) for s in ts.sequences])
    a240 = np.concatenate([s.alphas("qs", 240) for s in ts.sequences])
    assert a240.mean() > a2.mean()
    path = tmp_path / "rec.jsonl"
    ts.save(path)
    back = TraceSet.load(path)
    assert back.meta["source"] == "recorded"
    ex = SimRoundExecutor(back, MarkovChannel(PAPER_4MBPS, seed=0), PROFILES["paper-gpu"], seed=0)
    ep = run_episode(StaticController(3, 240), ex, 1, 20)
    assert ep.tokens >= 20


def test_identical_draft_and_target_accept_almost_everything(models) -> None:
    """Draft = target: at ℓ = 240 q̂ ≈ q = p, so α = min(1, p(x)/q̂(x)) is close to 1 for every drawn token."""
    target, _, same = models
    ts = record_traces(PROMPTS[:2], same, target, (240,), vocab_size=64, n_tokens=25, seed=2)
    cols = np.concatenate([s.columns("qs", 240) for s in ts.sequences])
    np.testing.assert_allclose(cols[:, 0], cols[:, 2], atol=1e-4)  # q(x) == p(x)
    alphas = np.concatenate([s.alphas("qs", 240) for s in ts.sequences])
    assert alphas.mean() > 0.97
