"""RealRoundExecutor: real (tiny, random-weight) drafter + target in process, Markov link delays slept."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from edge_runtime.controller import StaticController  # noqa: E402
from edge_runtime.controller.bits import uplink_bits_per_token  # noqa: E402
from qsv_tools.channel.markov import SCENARIOS, MarkovChannel  # noqa: E402
from qsv_tools.sim import run_episode  # noqa: E402
from qsv_tools.sim.real_executor import DOWNLINK_BITS, HEADER_BITS, RealRoundExecutor  # noqa: E402

PROMPTS = [[0, 5, 9, 12], [0, 33, 2]]


@pytest.fixture(scope="module")
def models():
    from cloud_verifier.target import TargetModel
    from qsv_tools.export.tiny import tiny_causal_lm
    from qsv_tools.torch_slm import TorchSLM

    torch.set_num_threads(1)
    target = TargetModel(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0), "cpu")
    draft = TorchSLM(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0, noise=0.3))
    same = TorchSLM(tiny_causal_lm("qwen2", vocab_size=64, seed=3, logit_scale=6.0))
    return target, draft, same


def test_rounds_sleep_the_link_and_report_consistent_observations(models) -> None:
    target, draft, _ = models
    slept: list[float] = []
    spec = SCENARIOS["350kbps"]
    ex = RealRoundExecutor(draft, target, PROMPTS, MarkovChannel(spec, seed=0), seed=1, sleep=slept.append)
    ep = run_episode(StaticController(3, 16), ex, 0, 30)
    assert ep.tokens == 30
    assert len(slept) == 2 * len(ep.rounds)
    left = 30
    for k, r in enumerate(ep.rounds):
        o = r.observation
        n = min(3, max(left - 1, 1))  # rounds never draft past the budget
        assert len(o.confidences) == n and 0 <= o.accepted <= n and r.emitted == min(o.accepted + 1, left)
        left -= r.emitted
        assert o.uplink_bits == HEADER_BITS + n * uplink_bits_per_token(64, 16)
        assert slept[2 * k] == pytest.approx(o.uplink_bits / r.uplink_rate_bps)
        assert slept[2 * k + 1] == pytest.approx(DOWNLINK_BITS / spec.downlink_bps)
        assert r.uplink_rate_bps in spec.rates_bps
        assert r.round_time_s >= o.draft_s + o.verify_s
    assert {r.channel_state for r in ep.rounds} == {0, 1}  # the state is redrawn every round (p = 0.5)


def test_identical_draft_accepts_nearly_everything_and_wrong_prompt_is_refused(models) -> None:
    target, _, same = models
    ex = RealRoundExecutor(same, target, PROMPTS, MarkovChannel(SCENARIOS["4mbps"], seed=0), seed=2,
                           sleep=lambda s: None)
    ep = run_episode(StaticController(4, 240), ex, 1, 40)
    alphas = np.concatenate([r.observation.alphas[: r.observation.accepted + 1] for r in ep.rounds
                             if r.observation.alphas])
    assert alphas.mean() > 0.9
    assert ep.tokens / len(ep.rounds) > 3.5
    with pytest.raises(ValueError, match="no prompt"):
        ex.begin(5)
    with pytest.raises(ValueError, match="scheme"):
        RealRoundExecutor(same, target, PROMPTS, MarkovChannel(SCENARIOS["4mbps"]), scheme="xx")
