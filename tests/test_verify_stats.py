"""Proof by test: Q-S verification reproduces the target law exactly; S-Q does not.

Each case draws ≥ 2·10^5 rounds with a fixed seed through the batched sampler (itself checked draw-for-draw against the
per-round ``verify_round`` in tests/test_verify_round.py) and runs Pearson's chi-square goodness-of-fit test of the
output tokens against p. Tolerance: Q-S must pass at significance 1e-3 (a correct sampler fails with probability
0.1% per case, and the fixed seed makes the outcome reproducible); tokens with p = 0 must never appear. S-Q must be
rejected at p-value < 1e-12 and show TV ≈ 0.12 on the paper's example. Statistics are printed (pytest -s), logged,
and attached with ``record_property``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats

from cloud_verifier.sampling import simulate_rounds, verify_batch_with_uniforms
from qsv_wire.core import quantize_probs

log = logging.getLogger(__name__)

N_DRAWS = 200_000
ALPHA_SIGNIFICANCE = 1e-3


def lattice_quantize(q: np.ndarray, ell: int) -> np.ndarray:
    """Dense q̂ = b/ℓ of q from the C core's lattice quantizer (the one the boards run)."""
    return quantize_probs(np.asarray(q, dtype=np.float64), ell).probs()


def chi_square(observed_counts: np.ndarray, expected_probs: np.ndarray) -> tuple[float, float, float]:
    """(statistic, p-value, total variation) of counts against probabilities; p = 0 cells must be empty."""
    n = observed_counts.sum()
    support = expected_probs > 0
    assert observed_counts[~support].sum() == 0, "a token with target probability 0 was emitted"
    tv = 0.5 * np.abs(observed_counts / n - expected_probs).sum()
    if support.sum() == 1:  # a one-hot target: the zero-cell check above is the whole test
        return 0.0, 1.0, float(tv)
    result = stats.chisquare(observed_counts[support], n * expected_probs[support])
    return float(result.statistic), float(result.pvalue), float(tv)


def report(record_property, name: str, statistic: float, pvalue: float, tv: float) -> None:
    line = f"[{name}] chi2={statistic:.2f} p-value={pvalue:.3g} TV={tv:.4f} draws={N_DRAWS}"
    print(line)
    log.info(line)
    record_property(f"{name}.chi2", statistic)
    record_property(f"{name}.pvalue", pvalue)
    record_property(f"{name}.tv", tv)


def first_token_counts(p: np.ndarray, q: np.ndarray, ell: int, order: str, seed: int) -> np.ndarray:
    """Simulate one-draft rounds; count the first emitted token (x if accepted, else the residual draw)."""
    qhat = lattice_quantize(q, ell)
    gen = torch.Generator().manual_seed(seed)
    bonus = np.full_like(p, 1.0 / p.size)  # the bonus row does not affect the first token
    drafts, accepted, next_token = simulate_rounds(
        torch.tensor(np.stack([p, bonus])),
        torch.tensor(q).unsqueeze(0),
        torch.tensor(qhat).unsqueeze(0),
        N_DRAWS,
        gen,
        sampling_order=order,
    )
    first = torch.where(accepted >= 1, drafts[:, 0], next_token)
    return np.bincount(first.numpy(), minlength=p.size)


PAPER_P = np.array([0.5, 0.3, 0.2])
PAPER_Q = np.array([0.6, 0.3, 0.1])

QS_CASES = {
    "paper_example_ell2": (PAPER_P, PAPER_Q, 2),
    "random_V6_ell2": (np.array([0.05, 0.3, 0.1, 0.25, 0.2, 0.1]), np.array([0.2, 0.1, 0.3, 0.1, 0.05, 0.25]), 2),
    "random_V6_ell4": (np.array([0.05, 0.3, 0.1, 0.25, 0.2, 0.1]), np.array([0.2, 0.1, 0.3, 0.1, 0.05, 0.25]), 4),
    "random_V6_ell16": (np.array([0.05, 0.3, 0.1, 0.25, 0.2, 0.1]), np.array([0.2, 0.1, 0.3, 0.1, 0.05, 0.25]), 16),
    # q̂ = 0 on tokens where p > 0 (tail truncated by quantization): only the residual can produce them
    "qhat_zero_where_p_pos_ell4": (np.array([0.4, 0.2, 0.2, 0.1, 0.1]), np.array([0.7, 0.2, 0.06, 0.03, 0.01]), 4),
    # p = 0 on tokens where q̂ > 0 (e.g. target top-k): they must always be rejected
    "p_zero_where_qhat_pos_ell4": (np.array([0.0, 0.5, 0.0, 0.5]), np.array([0.25, 0.25, 0.25, 0.25]), 4),
    "p_zero_where_qhat_pos_ell16": (np.array([0.0, 0.6, 0.4, 0.0, 0.0]), np.array([0.3, 0.1, 0.1, 0.3, 0.2]), 16),
    # greedy target (one-hot p)
    "onehot_target_ell16": (np.array([0.0, 0.0, 1.0, 0.0]), np.array([0.1, 0.5, 0.3, 0.1]), 16),
}


@pytest.mark.parametrize("name", list(QS_CASES))
def test_qs_first_token_law_equals_target(name: str, record_property) -> None:
    p, q, ell = QS_CASES[name]
    qhat = lattice_quantize(q, ell)
    if name.startswith("qhat_zero"):
        assert np.any((qhat == 0) & (p > 0)), "case must have q̂ = 0 where p > 0"
    if name.startswith("p_zero"):
        assert np.any((p == 0) & (qhat > 0)), "case must have p = 0 where q̂ > 0"
    counts = first_token_counts(p, q, ell, "qs", seed=1234)
    statistic, pvalue, tv = chi_square(counts, p)
    report(record_property, f"QS/{name}", statistic, pvalue, tv)
    assert pvalue > ALPHA_SIGNIFICANCE, f"Q-S output law differs from p: p-value {pvalue:.3g}"
    assert tv < 0.01


def test_paper_example_quantization() -> None:
    np.testing.assert_allclose(lattice_quantize(PAPER_Q, 2), [0.5, 0.5, 0.0])


def test_sq_bias_is_detected_on_paper_example(record_property) -> None:
    counts = first_token_counts(PAPER_P, PAPER_Q, 2, "sq", seed=1234)
    statistic, pvalue, tv = chi_square(counts, PAPER_P)
    report(record_property, "SQ/paper_example_ell2", statistic, pvalue, tv)
    assert pvalue < 1e-12, "the test must reject S-Q: its output law is not p"
    assert abs(tv - 0.12) < 0.01, f"S-Q total variation {tv:.4f}, paper: 0.12"
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, [0.6, 0.18, 0.22], atol=0.005)


def _conditional_tables(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Target p1, p2[a], p3[a, b] and draft q1, q2[a] with sparse zeros so both truncation cases occur."""
    rng = np.random.default_rng(seed)

    def rows(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.gamma(1.5, size=shape + (vocab,))
        x[x < 0.3] = 0.0
        x[..., 0] += 1e-3  # keep every row nonempty
        return x / x.sum(-1, keepdims=True)

    return rows(()), rows((vocab,)), rows((vocab, vocab)), rows(()), rows((vocab,))


def test_qs_joint_law_of_two_tokens(record_property) -> None:
    """Two draft positions whose target and draft rows depend on the first token: the first two emitted tokens follow
    p1(a)·p2(b | a). A round that rejects at position 1 emits one token; the second then comes from the next round
    (one draft, rows conditioned on the emitted token), as a decoder would continue."""
    vocab, ell = 4, 4
    p1, p2, p3, q1, q2 = _conditional_tables(vocab, seed=7)
    qh1 = lattice_quantize(q1, ell)
    qh2 = np.stack([lattice_quantize(q2[a], ell) for a in range(vocab)])
    gen = torch.Generator().manual_seed(99)
    t = torch.tensor
    n = N_DRAWS

    def draw(rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cdf = torch.cumsum(rows, -1)
        return torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1).clamp(max=vocab - 1)

    # round 1: two drafts from q̂1, q̂2[x1]
    x1 = draw(t(qh1).expand(n, -1), torch.rand(n, generator=gen, dtype=torch.float64))
    x2 = draw(t(qh2)[x1], torch.rand(n, generator=gen, dtype=torch.float64))
    p_rows = torch.stack([t(p1).expand(n, -1), t(p2)[x1], t(p3)[x1, x2]], dim=1)
    q_rows = torch.stack([t(qh1).expand(n, -1), t(qh2)[x1]], dim=1)
    uniforms = torch.rand((n, 3), generator=gen, dtype=torch.float64)
    accepted, next_token, _ = verify_batch_with_uniforms(p_rows, q_rows, torch.stack([x1, x2], 1), uniforms)
    first = torch.where(accepted >= 1, x1, next_token)
    second = torch.where(accepted >= 2, x2, next_token)
    # rounds that emitted one token: a second round with one draft from q̂2[first]
    redo = accepted == 0
    m = int(redo.sum())
    a = first[redo]
    y = draw(t(qh2)[a], torch.rand(m, generator=gen, dtype=torch.float64))
    bonus = torch.full((m, vocab), 1.0 / vocab, dtype=torch.float64)
    acc2, nxt2, _ = verify_batch_with_uniforms(
        torch.stack([t(p2)[a], bonus], 1),
        t(qh2)[a].unsqueeze(1),
        y.unsqueeze(1),
        torch.rand((m, 2), generator=gen, dtype=torch.float64),
    )
    second[redo] = torch.where(acc2 >= 1, y, nxt2)
    counts = np.bincount((first * vocab + second).numpy(), minlength=vocab * vocab)
    joint = (p1[:, None] * p2).reshape(-1)
    statistic, pvalue, tv = chi_square(counts, joint)
    report(record_property, "QS/joint_two_tokens_ell4", statistic, pvalue, tv)
    assert (accepted == 0).any() and (accepted == 1).any() and (accepted == 2).any(), "all round outcomes must occur"
    assert pvalue > ALPHA_SIGNIFICANCE, f"joint law of two tokens differs from the target: p-value {pvalue:.3g}"
