"""The recovery factor: α̂ calibrated by the tokens committed since the last rejection (controller/recovery.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.controller import ModelBasedController
from edge_runtime.controller.model import TimingPriors
from edge_runtime.controller.recovery import RecoveryModel, since_after_round
from edge_runtime.controller.types import ChannelView, ControllerError, RoundObservation

V = 151_936
HARD = 0.6  # acceptance in the first 3 tokens after a rejection (the real Qwen pair: 0.66–0.74)


def test_buckets_and_tokens_since_the_last_rejection() -> None:
    rec = RecoveryModel()
    assert [rec.bucket(s) for s in (0, 1, 2, 3, 4, 5, 6, 9, 10, 500)] == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6]
    assert [row[0] for row in rec.table()] == ["0", "1", "2", "3", "4-5", "6-9", "10+"]
    assert since_after_round(7, drafted=4, accepted=2) == 0  # ended in a rejection: the last token is the correction
    assert since_after_round(7, drafted=4, accepted=4) == 12  # 4 accepted + the bonus token
    assert since_after_round(0, drafted=1, accepted=1) == 2


def test_factor_is_observed_over_predicted_shrunk_toward_one_and_clipped() -> None:
    rec = RecoveryModel(prior_weight=8.0)
    assert rec.factor(0) == 1.0  # nothing seen
    for _ in range(100):
        rec.update(0, [0.9], [0.6])
    expected = (50 * (0.6 / 0.9) + 8) / (50 + 8)  # the EWMA counts as at most 1/alpha = 50 samples
    assert rec.factor(0) == pytest.approx(expected, rel=1e-12)
    assert rec.factor(10) == 1.0 and rec.factor(1) == 1.0  # other buckets untouched
    rec.update(2, [0.5, 0.5, 0.5], [1.0, 1.0, 0.0])  # positions 0..2 of a round starting at s = 2: buckets 2, 3, 4
    assert rec.factor(2) == pytest.approx((1 * 2.0 + 8) / 9)
    assert rec.factor(3) == pytest.approx((1 * 2.0 + 8) / 9)
    assert rec.factor(5) == pytest.approx((1 * 0.0 + 8) / 9)  # s = 4 and 5 share a bucket
    for _ in range(200):
        rec.update(6, [0.8], [0.0])
    assert rec.factor(9) == 0.25  # (50·0 + 8) / 58 = 0.14, clipped to the lower bound


def test_bad_input_is_rejected() -> None:
    rec = RecoveryModel()
    with pytest.raises(ControllerError):
        rec.update(0, [0.5, 0.5], [1.0])
    with pytest.raises(ControllerError):
        rec.update(0, [1.5], [1.0])
    with pytest.raises(ControllerError):
        rec.bucket(-1)
    with pytest.raises(ControllerError):
        RecoveryModel(edges=(3, 2))
    with pytest.raises(ControllerError):
        RecoveryModel(bounds=(1.2, 1.5))


def run_hard_after_rejection(recovery: bool, rounds: int = 1500, seed: int = 0) -> tuple[float, float, float]:
    """An environment where the draft's confidence says nothing and acceptance depends only on s, the tokens since
    the last rejection: α = HARD for s < 3, 0.95 after. Compute: 50 ms per draft token, verify 0.5 s + 50 ms per
    token. Returns (tokens/s, mean tokens drafted right after a rejection, mean drafted otherwise)."""
    rng = np.random.default_rng(seed)
    ctl = ModelBasedController(V, ells=(240,), early_stop=True, explore_rounds=0, epsilon=0, seed=seed,
                               timing_priors=TimingPriors(0.05, 0.5, 0.05), recovery=recovery)
    view = ChannelView.from_rate(100e6, rtt_s=0.0)
    since, tokens, seconds = 0, 0, 0.0
    drafted_after: dict[bool, list[int]] = {True: [], False: []}
    for _ in range(rounds):
        decision = ctl.choose(view)
        drafted = 1
        while drafted < decision.max_draft and ctl.should_continue(0.9, drafted):
            drafted += 1
        alphas = [HARD if since + j < 3 else 0.95 for j in range(drafted)]
        accepted = 0
        while accepted < drafted and rng.random() < alphas[accepted]:
            accepted += 1
        draft_s, verify_s = 0.05 * drafted, 0.5 + 0.05 * drafted
        ctl.observe(RoundObservation(240, [0.9] * drafted, accepted, draft_s, verify_s, uplink_bits=100 * drafted,
                                     elapsed_s=verify_s, alphas=alphas))
        drafted_after[since == 0].append(drafted)
        since = since_after_round(since, drafted, accepted)
        tokens += accepted + 1
        seconds += draft_s + verify_s
    return tokens / seconds, float(np.mean(drafted_after[True])), float(np.mean(drafted_after[False]))


def test_recovery_drafts_less_after_a_rejection_and_makes_more_tokens_per_second() -> None:
    base_tps, base_after, base_other = run_hard_after_rejection(False)
    rec_tps, rec_after, rec_other = run_hard_after_rejection(True)
    print(f"\nwithout recovery: {base_tps:.3f} tok/s, drafted {base_after:.2f} after a rejection / {base_other:.2f}"
          f"\nwith recovery:    {rec_tps:.3f} tok/s, drafted {rec_after:.2f} after a rejection / {rec_other:.2f}")
    # without the factor the confidence (always 0.9) cannot tell the two states apart: one length for both
    assert abs(base_after - base_other) < 1.0
    assert rec_after < 2.0 < 8.0 < rec_other
    assert rec_tps > 1.10 * base_tps  # seed 0, 1500 rounds: measured +22 %
    assert ModelBasedController(V, recovery=True).name == "model+stop+rec"
