"""Throughput model: E[N] formula against enumeration and Monte Carlo; online estimators converge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_runtime.controller.estimators import AffineFit, Ewma, WindowedMin
from edge_runtime.controller.model import (
    AcceptanceModel,
    ThroughputModel,
    TimingModel,
    TimingPriors,
    expected_tokens,
    expected_tokens_iid,
)
from edge_runtime.controller.types import ChannelView, ControllerError, RoundObservation


def brute_force_expected_tokens(alphas: list[float]) -> float:
    """Enumerate every accept/reject pattern: N = (index of first rejection) + 1, or L + 1 when all accepted."""
    total = 0.0
    for pattern in itertools.product([True, False], repeat=len(alphas)):
        prob = 1.0
        for a, ok in zip(alphas, pattern, strict=True):
            prob *= a if ok else 1.0 - a
        first_reject = next((i for i, ok in enumerate(pattern) if not ok), len(alphas))
        total += prob * (first_reject + 1)
    return total


def paper_formula(alphas: list[float]) -> float:
    L = len(alphas)
    s = sum(k * np.prod(alphas[: k - 1]) * (1 - alphas[k - 1]) for k in range(1, L + 1))
    return float(s + (L + 1) * np.prod(alphas))


@pytest.mark.parametrize("length", [0, 1, 2, 5, 9])
def test_expected_tokens_matches_enumeration_and_paper_form(length: int) -> None:
    rng = np.random.default_rng(length)
    for _ in range(20):
        alphas = list(rng.random(length))
        want = brute_force_expected_tokens(alphas)
        assert expected_tokens(alphas) == pytest.approx(want, rel=1e-12)
        assert paper_formula(alphas) == pytest.approx(want, rel=1e-12)


def test_expected_tokens_matches_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    alphas = np.array([0.95, 0.9, 0.6, 0.8, 0.3, 0.99])
    n = 200_000
    accept = rng.random((n, alphas.size)) < alphas
    first_reject = np.where(accept.all(axis=1), alphas.size, np.argmin(accept, axis=1))
    samples = first_reject + 1
    se = samples.std() / np.sqrt(n)
    assert abs(samples.mean() - expected_tokens(alphas)) < 4 * se


def test_iid_closed_form() -> None:
    for a in (0.0, 0.3, 0.8, 0.999):
        for L in (0, 1, 4, 12):
            assert expected_tokens_iid(a, L) == pytest.approx(expected_tokens([a] * L), rel=1e-9)
    assert expected_tokens_iid(1.0, 5) == 6.0


def test_expected_tokens_rejects_bad_alphas() -> None:
    with pytest.raises(ControllerError):
        expected_tokens([0.5, 1.2])
    with pytest.raises(ControllerError):
        expected_tokens([float("nan")])


def test_ewma_starts_as_mean_then_tracks() -> None:
    e = Ewma(alpha=0.1)
    for x in (1.0, 2.0, 3.0):
        e.update(x)
    assert e.value == pytest.approx(2.0)
    for _ in range(200):
        e.update(10.0)
    assert e.value == pytest.approx(10.0, abs=1e-6)
    with pytest.raises(ControllerError):
        Ewma(alpha=0.0)


def test_affine_fit_recovers_line_and_uses_prior_slope_without_spread() -> None:
    rng = np.random.default_rng(1)
    fit = AffineFit(prior_intercept=0.0, prior_slope=5.0)
    assert fit.predict(2) == 10.0
    for _ in range(3):
        fit.update(4, 7.0)
    assert fit.coefficients() == pytest.approx((7.0 - 20.0, 5.0))  # mean matched, prior slope kept
    fit = AffineFit(0.0, 0.0, window=500)
    for _ in range(500):
        x = float(rng.integers(1, 13))
        fit.update(x, 0.03 + 0.002 * x + rng.normal(0, 0.001))
    a, b = fit.coefficients()
    assert a == pytest.approx(0.03, abs=1e-3)
    assert b == pytest.approx(0.002, abs=2e-4)


def test_windowed_min() -> None:
    w = WindowedMin(window=3)
    for x in (5.0, 1.0, 4.0, 6.0, 7.0):
        w.update(x)
    assert w.get(0.0) == 4.0


def true_alpha(c: np.ndarray) -> np.ndarray:
    return 0.2 + 0.78 * c**2


def test_acceptance_model_learns_alpha_of_confidence_from_outcomes_only() -> None:
    """Only accept/reject outcomes (first rejection ends the round), no α reported: the table must still converge."""
    rng = np.random.default_rng(3)
    model = AcceptanceModel(alpha=0.01)
    for _ in range(6000):
        confs = rng.random(4)
        accept = rng.random(4) < true_alpha(confs)
        accepted = int(np.argmin(accept)) if not accept.all() else 4
        model.update(240, list(confs), accepted, alphas=None)
    for lo, hi in [(0.1, 0.2), (0.4, 0.5), (0.8, 0.9), (0.95, 0.99)]:
        c = 0.5 * (lo + hi)
        assert model.predict(240, c) == pytest.approx(float(true_alpha(np.array(c))), abs=0.05)
    # an ell never observed predicts the estimate pooled over all ell; with no data at all, the prior α = confidence
    assert model.predict(720, 0.45) == pytest.approx(float(true_alpha(np.array(0.45))), abs=0.05)
    assert AcceptanceModel().predict(720, 0.45) == pytest.approx(0.45)


def test_acceptance_model_shrinks_a_rarely_tried_ell_toward_the_pool() -> None:
    """ℓ = 240 is seen 2000 times at α = 0.8; ℓ = 2 twice, both rejected. Alone those two would say α = 0; shrunk
    toward the pool with 8 pseudo-samples they say 0.8·8/10 = 0.64. After 400 samples at α = 0.5 the per-ℓ data wins
    (memory 1/alpha = 50 samples: (50·0.5 + 8·pooled)/58 with pooled ≈ 0.5..0.8)."""
    model = AcceptanceModel(alpha=0.02)
    for _ in range(2000):
        model.update(240, [0.85], 1, alphas=[0.8])
    model.update(2, [0.85], 0, alphas=[0.0])
    model.update(2, [0.85], 0, alphas=[0.0])
    pooled = model._table(model._own, 0)[model.bin_of(0.85)].value
    assert model.predict(2, 0.85) == pytest.approx((2 * 0.0 + 8 * pooled) / 10, abs=1e-9)
    assert 0.6 < model.predict(2, 0.85) < 0.7
    assert model.predict(240, 0.85) == pytest.approx(0.8, abs=0.02)
    for _ in range(400):
        model.update(2, [0.85], 1, alphas=[0.5])
    assert model.predict(2, 0.85) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ControllerError):
        model.update(0, [0.5], 1)


def test_acceptance_model_next_table_captures_persistence() -> None:
    """If the next token's α follows the previous confidence (easy/hard stretches), predict_next learns that."""
    rng = np.random.default_rng(4)
    model = AcceptanceModel(alpha=0.01)
    for _ in range(3000):
        easy = rng.random() < 0.5
        confs = rng.uniform(0.9, 1.0, 5) if easy else rng.uniform(0.0, 0.4, 5)
        alphas = np.full(5, 0.95 if easy else 0.3)
        model.update(240, list(confs), 5, alphas=list(alphas))
    assert model.predict_next(240, 0.97) == pytest.approx(0.95, abs=0.03)
    assert model.predict_next(240, 0.2) == pytest.approx(0.3, abs=0.03)


def obs(L: int, ell: int, draft: float, verify: float, bits: int, elapsed: float | None = None) -> RoundObservation:
    return RoundObservation(ell=ell, confidences=[0.9] * L, accepted=L, draft_s=draft, verify_s=verify,
                            uplink_bits=bits, elapsed_s=elapsed)


def test_timing_model_learns_compute_and_bits() -> None:
    rng = np.random.default_rng(5)
    tm = TimingModel(vocab_size=151_936, priors=TimingPriors(0.05, 0.1, 0.01))
    for _ in range(400):
        L = int(rng.integers(1, 13))
        ell = int(rng.choice([16, 240]))
        per_tok = {16: 300, 240: 2600}[ell]
        tm.update(obs(L, ell, 0.004 * L * rng.uniform(0.9, 1.1), 0.03 + 0.0015 * L + rng.normal(0, 5e-4),
                      400 + per_tok * L))
    assert tm.draft_per_token.value == pytest.approx(0.004, rel=0.05)
    a, b = tm.verify.coefficients()
    assert a == pytest.approx(0.03, abs=1e-3) and b == pytest.approx(0.0015, abs=2e-4)
    assert tm.bits_per_token(240) == pytest.approx(2600, rel=1e-6)
    assert tm.uplink_bits(3, 16) == pytest.approx(400 + 900, rel=1e-6)
    # an unseen ell starts from the codec bound (16-bit id + lattice index)
    assert tm.bits_per_token(720) == pytest.approx(6611, abs=1)


def test_throughput_model_round_time_and_prediction() -> None:
    m = ThroughputModel(vocab_size=151_936, timing_priors=TimingPriors(0.004, 0.03, 0.001, downlink_bits=320))
    view = ChannelView(sec_per_bit=1 / 4e6, rtt_s=0.02, downlink_sec_per_bit=1 / 20e6)
    p = m.predict([0.9, 0.8], 240, view)
    want_t = 2 * 0.004 + 2 * 2591 / 4e6 + 0.02 + 0.03 + 2 * 0.001 + 320 / 20e6
    assert p.round_time_s == pytest.approx(want_t, rel=1e-9)
    assert p.expected_tokens == pytest.approx(1 + 0.9 + 0.72)
    assert p.throughput == pytest.approx(p.expected_tokens / want_t)


def test_survival_model_keeps_within_round_correlation() -> None:
    """Rounds are all-easy (α = 0.95) or all-hard (α = 0.3) with equal odds. The survival model's E[N] matches the
    true mean; the product of per-position mean α (0.625) would underestimate it badly."""
    from edge_runtime.controller.model import SurvivalModel

    rng = np.random.default_rng(8)
    sm = SurvivalModel(alpha=0.005)
    L = 6
    for _ in range(4000):
        a = 0.95 if rng.random() < 0.5 else 0.3
        accept = rng.random(L) < a
        accepted = int(np.argmin(accept)) if not accept.all() else L
        sm.update(240, 0.95, L, accepted, alphas=None)
    truth = 0.5 * expected_tokens([0.95] * L) + 0.5 * expected_tokens([0.3] * L)
    assert sm.expected_tokens(240, 0.95, L) == pytest.approx(truth, rel=0.05)
    assert expected_tokens([0.625] * L) < 0.85 * truth
    # beyond the observed lengths: extrapolated with the last ratio, monotone non-increasing
    s = sm.survival(240, 0.95, 12)
    assert np.all(np.diff(s) <= 1e-12) and s[-1] > 0
    # an unseen context starts from the prior (α = 0.7 per position)
    assert sm.expected_tokens(720, None, 3) == pytest.approx(expected_tokens([0.7] * 3))
    # an unseen ell in a seen context borrows the pooled estimate
    assert sm.expected_tokens(720, 0.95, L) == pytest.approx(sm.expected_tokens(240, 0.95, L), rel=1e-9)
    # three all-rejected rounds at ell = 2 move it only part of the way (8 pseudo-samples of the pool)
    for _ in range(3):
        sm.update(2, 0.95, L, 0, alphas=None)
    e2 = sm.expected_tokens(2, 0.95, L)
    assert 1.0 + (8 / 11) * (sm.expected_tokens(240, 0.95, L) - 1.0) * 0.9 < e2 < sm.expected_tokens(240, 0.95, L)


# ------------------------------------------------------------------------ the verifier's pass-cost curve (OPEN_ACK)
# Measured c(n) in seconds, n = 1..13 (Qwen2.5-Coder-1.5B, one AVX-512 BF16 core, 200-token context).
FP32_CURVE = (0.349, 0.55, 0.68, 0.75, 0.82, 0.86, 0.90, 0.94, 0.98, 1.02, 1.06, 1.10, 1.14)
INT8_CURVE = (0.083, 0.086, 0.089, 0.093, 0.098, 0.102, 0.106, 0.113, 0.120, 0.128, 0.135, 0.142, 0.150)


def test_curve_fit_keeps_the_shape_and_learns_the_scale() -> None:
    from edge_runtime.controller.estimators import CurveFit

    fit = CurveFit(INT8_CURVE)
    assert fit.predict(3) == pytest.approx(INT8_CURVE[3])  # L = 3 drafts → a 4-token pass
    for _ in range(60):
        fit.update(3, 2.0 * INT8_CURVE[3])  # a verifier twice as slow as calibrated (load, batching)
    assert fit.predict(3) == pytest.approx(2.0 * INT8_CURVE[3], rel=0.05)
    assert fit.predict(8) == pytest.approx(2.0 * INT8_CURVE[8], rel=0.05)
    assert fit.predict(20) > fit.predict(12)  # extrapolated past the measured range
    with pytest.raises(ControllerError):
        CurveFit((0.1,))


def test_model_controller_picks_longer_rounds_on_a_steep_fp32_curve(caplog: pytest.LogCaptureFixture) -> None:
    """fp32's pass cost grows with n but starts high, int8's is cheap and flat: the optimum L differs, and the
    controller says why in its log."""
    import logging

    from edge_runtime.controller.model_based import ModelBasedController

    chosen = {}
    for name, costs in (("fp32", FP32_CURVE), ("int8", INT8_CURVE)):
        ctl = ModelBasedController(151_936, lengths=range(1, 13), ells=(240,), early_stop=False, explore_rounds=0,
                                   epsilon=0.0, timing_priors=TimingPriors(draft_per_token_s=0.025))
        with caplog.at_level(logging.INFO, logger="edge_runtime.controller.model_based"):
            ctl.set_verifier_costs(costs, name)
        chosen[name] = ctl.choose().max_draft
        assert f"verifier runs {name}: pass costs" in caplog.text
        assert ctl.model.timing.compute_time(3) == pytest.approx(3 * 0.025 + costs[3])  # the curve, not a line
    assert chosen["fp32"] > chosen["int8"], chosen
