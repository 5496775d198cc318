"""Integer steps of the C core vs the numpy reference: EXACT match (rounding, sum fix incl. ties, sampling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsv_wire import core
from qsv_wire import reference as ref
from qsv_wire.lattice import LatticePoint


def _normalized(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()


def _d_sign(q: np.ndarray, ell: int) -> int:
    return int(np.sign(ell - int(np.floor(ell * q + 0.5).sum())))


def _adversarial_cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(1234)
    cases: list[tuple[str, np.ndarray, int]] = []
    for ell in (1, 2, 3, 16, 240, 720, 65535):
        cases.append((f"uniform V=1000 ell={ell}", np.full(1000, 1e-3), ell))
        cases.append((f"one-hot ell={ell}", np.eye(1, 500, 123)[0], ell))
        cases.append((f"V=1 ell={ell}", np.ones(1), ell))
        cases.append((f"integer ties ell={ell}", _normalized(rng.integers(1, 4, 777)), ell))
        cases.append((f"lognormal ell={ell}", _normalized(np.exp(3 * rng.normal(size=5000))), ell))
        half = np.zeros(4 * ell + 8)
        half[: 2 * ell] = 0.5 / ell  # x = 1/2 exactly: all round up, d = -ell, all residuals tie
        cases.append((f"half ties ell={ell}", _normalized(half), ell))
        third = np.full(3 * ell + 1, 1.0)  # x just under 1/3 each: all round to 0, d = ell, ties
        cases.append((f"third ties ell={ell}", _normalized(third), ell))
    big = 262_144
    cases.append(("V=262144 uniform ell=720", np.full(big, 1.0 / big), 720))
    cases.append(("V=262144 lognormal ell=65535", _normalized(np.exp(2.5 * rng.normal(size=big))), 65535))
    cases.append(("V=262144 zipf ell=16", _normalized(1.0 / np.arange(1, big + 1)), 16))
    return cases


@pytest.mark.parametrize("name,probs,ell", _adversarial_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_probs_match_reference_exactly(name: str, probs: np.ndarray, ell: int) -> None:
    got = core.quantize_probs(probs, ell)
    assert got == ref.quantize_probs(probs, ell), name
    assert int(got.counts.sum()) == ell


def test_adversarial_cases_cover_both_fix_directions() -> None:
    signs = {_d_sign(q, ell) for _, q, ell in _adversarial_cases()}
    assert signs == {-1, 0, 1}


def test_d_positive_takes_zero_count_entries_with_largest_x() -> None:
    # x = (0.45, 0.45, 0.3, 0.3, 0.5) * ... : hand-checked case where the sum fix must reach b=0 entries
    q = np.array([0.2, 0.15, 0.15, 0.1, 0.1, 0.3])
    ell = 3  # x = 0.6, .45, .45, .3, .3, .9 -> b = 1,0,0,0,0,1, d = 1 -> tie at .45 -> index 1
    point = core.quantize_probs(q, ell)
    assert point.dense().tolist() == [1, 1, 0, 0, 0, 1]


def test_d_negative_takes_largest_excess_lowest_index() -> None:
    q = np.full(4, 0.25)
    ell = 2  # x = 0.5 each -> b = 1 each, d = -2, all excess 0.5 tie -> indices 0, 1 lose
    assert core.quantize_probs(q, ell).dense().tolist() == [0, 0, 1, 1]


def test_float32_probs_match_reference() -> None:
    rng = np.random.default_rng(5)
    q32 = _normalized(np.exp(2 * rng.normal(size=30_000))).astype(np.float32)
    for ell in (1, 16, 240, 720, 65535):
        assert core.quantize_probs(q32, ell) == ref.quantize_probs(q32, ell)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    weights=st.lists(st.integers(0, 12), min_size=1, max_size=60).filter(lambda w: sum(w) > 0),
    ell=st.one_of(st.integers(1, 40), st.sampled_from([240, 720, 65535])),
)
def test_hypothesis_integer_weights(weights: list[int], ell: int) -> None:
    q = _normalized(np.array(weights, dtype=np.float64))  # many exact ties among residuals
    assert core.quantize_probs(q, ell) == ref.quantize_probs(q, ell)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    weights=st.lists(st.floats(0, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300).filter(
        lambda w: sum(w) > 0
    ),
    ell=st.integers(1, 65535),
)
def test_hypothesis_float_weights(weights: list[float], ell: int) -> None:
    q = _normalized(np.array(weights))
    assert core.quantize_probs(q, ell) == ref.quantize_probs(q, ell)


def test_dense_output_matches_sparse() -> None:
    rng = np.random.default_rng(9)
    q = _normalized(np.exp(2 * rng.normal(size=4000)))
    quantizer = core.Quantizer(4000)
    dense = np.full(4000, 7, dtype=np.uint32)
    nnz = quantizer.quantize_probs_into(q, 720, dense_out=dense)
    point = quantizer.point()
    assert nnz == point.nnz
    np.testing.assert_array_equal(dense, point.dense(np.uint32))


def test_sample_matches_reference_for_every_u() -> None:
    rng = np.random.default_rng(3)
    for ell in (1, 7, 240, 720):
        q = _normalized(np.exp(2 * rng.normal(size=300)))
        point = core.quantize_probs(q, ell)
        got = [core.sample(point, u) for u in range(ell)]
        assert got == [ref.sample(point, u) for u in range(ell)]
        # each token appears exactly count times: sampling u uniformly draws from q_hat = b / ell
        tokens, freq = np.unique(got, return_counts=True)
        np.testing.assert_array_equal(tokens, point.indices)
        np.testing.assert_array_equal(freq, point.counts)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    counts=st.lists(st.integers(1, 500), min_size=1, max_size=40),
    data=st.data(),
)
def test_hypothesis_sample(counts: list[int], data: st.DataObject) -> None:
    ell = sum(counts)
    if ell > core.MAX_ELL:
        return
    gaps = data.draw(st.lists(st.integers(1, 1000), min_size=len(counts), max_size=len(counts)))
    indices = np.cumsum(gaps) - 1
    point = LatticePoint(indices, np.array(counts), ell, int(indices[-1]) + 1)
    u = data.draw(st.integers(0, ell - 1))
    assert core.sample(point, u) == ref.sample(point, u)


def test_sample_rejects_bad_u() -> None:
    point = LatticePoint(np.array([2, 5]), np.array([1, 2]), 3, 10)
    for bad in (-1, 3, 10**9):
        with pytest.raises(ValueError):
            core.sample(point, bad)
    with pytest.raises(TypeError):
        core.sample(point, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        core.sample((np.array([1]), np.array([3])), 0)  # type: ignore[arg-type]
