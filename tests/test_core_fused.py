"""The fused float32 logits path against the float64 reference.

Documented guarantee (csrc/qsv_quant.h): the C result is exactly the lattice rule applied to the x the C code
computed (``logits_scaled``), and that x is within FUSED_REL_TOL * x + FUSED_ABS_TOL * ell / V of the float64
x = ell * softmax. So the C point differs from the float64 reference only where a decision lies within that tolerance
of a boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsv_wire import core
from qsv_wire import reference as ref

TEMPS = (1.0, 0.4)


def llm_like_logits(rng: np.random.Generator, v: int, sigma: float = 2.5, strong: int = 20) -> np.ndarray:
    z = sigma * rng.normal(size=v)
    z[rng.integers(0, v, strong)] += 6.0 + 6.0 * rng.random(strong)
    return z.astype(np.float32)


def _tolerance(x_ref: np.ndarray, ell: int) -> np.ndarray:
    return ref.FUSED_REL_TOL * x_ref + ref.FUSED_ABS_TOL * ell / x_ref.size


def _ambiguous(x: np.ndarray, ell: int, tol: np.ndarray) -> bool:
    """Whether the rule's outcome on x could change within the tolerance (rounding or selection boundary)."""
    frac_gap = np.abs((x - np.floor(x)) - 0.5)
    if np.any(frac_gap <= tol):
        return True
    b = np.floor(x + 0.5)
    d = ell - int(b.sum())
    if d == 0:
        return False
    r = x - b if d > 0 else b - x
    pool = r if d > 0 else r[b >= 1]
    pool_tol = tol if d > 0 else tol[b >= 1]
    order = np.argsort(-pool, kind="stable")
    k = abs(d)
    if k >= pool.size:
        return False
    cut_in, cut_out = order[k - 1], order[k]
    return bool(pool[cut_in] - pool[cut_out] <= pool_tol[cut_in] + pool_tol[cut_out])


@pytest.mark.parametrize("v", [1, 7, 64, 1000, 50_272, 151_936])
@pytest.mark.parametrize("ell", [1, 16, 240, 720, 65535])
@pytest.mark.parametrize("temperature", TEMPS)
def test_fused_is_exact_rule_on_its_x_and_x_within_tolerance(v: int, ell: int, temperature: float) -> None:
    rng = np.random.default_rng(v * 7 + ell)
    z = llm_like_logits(rng, v)
    x_c = core.logits_scaled(z, ell, temperature)
    x_ref = ref.scaled_logits(z, ell, temperature)
    assert np.all(np.abs(x_c - x_ref) <= _tolerance(x_ref, ell))
    point = core.quantize_logits(z, ell, temperature)
    np.testing.assert_array_equal(point.dense(), ref.lattice_rule(x_c, ell))
    if not _ambiguous(x_ref, ell, _tolerance(x_ref, ell)):
        assert point == ref.quantize_logits(z, ell, temperature)


def test_fused_agrees_with_reference_on_most_inputs() -> None:
    """Direct agreement with the float64 pipeline; disagreements only where the reference is ambiguous."""
    rng = np.random.default_rng(77)
    agree = total = 0
    for trial in range(60):
        v = int(rng.integers(2, 20_000))
        ell = int(rng.choice([1, 2, 16, 240, 720, 65535]))
        temperature = float(rng.choice(TEMPS))
        z = llm_like_logits(rng, v, sigma=float(rng.uniform(0.5, 4)))
        got, want = core.quantize_logits(z, ell, temperature), ref.quantize_logits(z, ell, temperature)
        total += 1
        if got == want:
            agree += 1
        else:
            x_ref = ref.scaled_logits(z, ell, temperature)
            assert _ambiguous(x_ref, ell, _tolerance(x_ref, ell)), f"trial {trial}: unexplained disagreement"
    assert agree >= 0.9 * total


@pytest.mark.parametrize("kernel", ["scalar", "vector", "avx2"])
def test_kernels(kernel: str) -> None:
    if not core.kernel_available(kernel):
        pytest.skip(f"{kernel} kernel not available here")
    rng = np.random.default_rng(11)
    quantizer = core.Quantizer(50_272)
    for ell in (16, 720):
        for temperature in TEMPS:
            z = llm_like_logits(rng, 50_272)
            x_scalar = core.logits_scaled(z, ell, temperature, kernel="scalar")
            x_k = core.logits_scaled(z, ell, temperature, kernel=kernel)
            if kernel == "vector":  # same operations, same order: bit-identical
                np.testing.assert_array_equal(x_k, x_scalar)
            x_ref = ref.scaled_logits(z, ell, temperature)
            assert np.all(np.abs(x_k - x_ref) <= _tolerance(x_ref, ell))
            point = quantizer.quantize_logits(z, ell, temperature, kernel=kernel)
            np.testing.assert_array_equal(point.dense(), ref.lattice_rule(x_k, ell))


def test_greedy_takes_first_argmax() -> None:
    z = np.array([0.5, 3.0, -1.0, 3.0], dtype=np.float32)
    point = core.quantize_logits(z, 720, temperature=0.0, top_k=3, top_p=0.5)
    assert point.indices.tolist() == [1] and point.counts.tolist() == [720]
    assert point == ref.quantize_logits(z, 720, temperature=0.0)


def test_top_k_ties_go_to_lower_indices() -> None:
    z = np.array([1.0, 3.0, 3.0, 2.0, 3.0, -1.0, 0.5, 2.0, 3.0, 0.0], dtype=np.float32)
    assert core.quantize_logits(z, 10, top_k=2).indices.tolist() == [1, 2]
    assert core.quantize_logits(z, 65535, top_k=5).indices.tolist() == [1, 2, 3, 4, 8]
    # top-k sets are exact (selection on the float32 logits themselves)
    rng = np.random.default_rng(2)
    for k in (1, 5, 50, 999, 5000):
        z = np.round(llm_like_logits(rng, 5000), 1)  # rounding creates many ties
        x_c = core.logits_scaled(z, 720, 1.0, top_k=k)
        x_ref = ref.scaled_logits(z, 720, 1.0, top_k=k)
        np.testing.assert_array_equal(x_c > 0, x_ref > 0)
        assert np.all(np.abs(x_c - x_ref) <= _tolerance(x_ref, 720))


@pytest.mark.parametrize("top_p", [1e-9, 0.1, 0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("top_k", [0, 40])
def test_top_p_nucleus_matches_reference(top_p: float, top_k: int) -> None:
    rng = np.random.default_rng(int(top_p * 1000) + top_k)
    checked = 0
    for _ in range(8):
        z = llm_like_logits(rng, 20_000, sigma=2.0)
        x_ref = ref.scaled_logits(z, 720, 0.7, top_k=top_k, top_p=top_p)
        # skip inputs whose nucleus boundary is within float32 noise (2e-6) of top_p
        cum = np.cumsum(np.sort(ref.scaled_logits(z, 1, 0.7, top_k=top_k))[::-1])
        n = int(np.searchsorted(cum, top_p)) + 1
        if (n >= 2 and top_p - cum[n - 2] < 2e-6) or (n <= cum.size and cum[n - 1] - top_p < 2e-6):
            continue
        x_c = core.logits_scaled(z, 720, 0.7, top_k=top_k, top_p=top_p)
        np.testing.assert_array_equal(x_c > 0, x_ref > 0)
        assert np.all(np.abs(x_c - x_ref) <= _tolerance(x_ref, 720))
        point = core.quantize_logits(z, 720, 0.7, top_k=top_k, top_p=top_p)
        np.testing.assert_array_equal(point.dense(), ref.lattice_rule(x_c, 720))
        checked += 1
    assert checked >= 3


def test_extreme_logits() -> None:
    """Huge spreads, one dominant token, all-equal logits, values near float32 limits."""
    v = 10_000
    cases = [
        np.zeros(v, dtype=np.float32),
        np.full(v, -3e38, dtype=np.float32),
        np.where(np.arange(v) == 17, 3e38, -3e38).astype(np.float32),
        (np.arange(v) * 0.05).astype(np.float32),
    ]
    for z in cases:
        for ell in (1, 720, 65535):
            for temperature in (1e-6, 0.4, 1.0, 1e6):
                point = core.quantize_logits(z, ell, temperature)
                assert int(point.counts.sum()) == ell
                x_c = core.logits_scaled(z, ell, temperature)
                np.testing.assert_array_equal(point.dense(), ref.lattice_rule(x_c, ell))
    # all equal: uniform, the d > 0 fix goes to the lowest indices
    point = core.quantize_logits(np.zeros(v, dtype=np.float32), 720)
    assert point.indices.tolist() == list(range(720))


@settings(max_examples=250, deadline=None, derandomize=True)
@given(
    logits=st.lists(st.integers(-40, 40), min_size=1, max_size=200),
    scale=st.sampled_from([0.05, 0.5, 1.0]),
    ell=st.sampled_from([1, 2, 3, 16, 240, 720, 65535]),
    temperature=st.sampled_from([0.0, 0.4, 1.0, 3.0]),
    top_k=st.integers(0, 60),
    top_p=st.sampled_from([1.0, 0.999, 0.9, 0.5, 0.1]),
)
def test_hypothesis_filters_on_tied_logits(
    logits: list[int], scale: float, ell: int, temperature: float, top_k: int, top_p: float
) -> None:
    """Many exact ties (integer logits): the C point is the exact rule on its x; survivors and x match float64."""
    z = (np.array(logits, dtype=np.float64) * scale).astype(np.float32)
    point = core.quantize_logits(z, ell, temperature, top_k, top_p)
    assert int(point.counts.sum()) == ell
    x_c = core.logits_scaled(z, ell, temperature, top_k, top_p)
    np.testing.assert_array_equal(point.dense(), ref.lattice_rule(x_c, ell))
    x_ref = ref.scaled_logits(z, ell, temperature, top_k, top_p)
    if top_p < 1.0 and temperature != 0.0:
        kept = ref.scaled_logits(z, 1, temperature, top_k)
        cum = np.cumsum(np.sort(kept)[::-1])
        if np.min(np.abs(cum - top_p)) < 1e-5:  # nucleus boundary within float32 noise: survivors may differ
            return
    np.testing.assert_array_equal(x_c > 0, x_ref > 0)
    assert np.all(np.abs(x_c - x_ref) <= _tolerance(x_ref, ell))
