"""verify_round: the per-round API, its agreement with the batched sampler, input checks, target_probs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloud_verifier import SamplingParams, VerificationError, target_probs, verify_round
from cloud_verifier.sampling import dense_qhat, verify_batch_with_uniforms, verify_with_uniforms
from qsv_wire.lattice import LatticePoint


def random_point(rng: np.random.Generator, vocab: int, ell: int) -> LatticePoint:
    counts = rng.multinomial(ell, rng.dirichlet(np.full(vocab, 0.3)))
    return LatticePoint.from_dense(counts, ell)


def random_round(rng: np.random.Generator, n_drafts: int, vocab: int, ell: int):
    p = torch.tensor(rng.dirichlet(np.full(vocab, 0.5), size=n_drafts + 1))
    points = [random_point(rng, vocab, ell) for _ in range(n_drafts)]
    drafts = [int(rng.choice(pt.indices)) for pt in points]
    return p, drafts, points


def test_per_round_matches_batched_draw_for_draw() -> None:
    rng = np.random.default_rng(0)
    vocab, ell, n_drafts, rounds = 12, 8, 4, 300
    cases = [random_round(rng, n_drafts, vocab, ell) for _ in range(rounds)]
    uniforms = torch.tensor(rng.random((rounds, n_drafts + 1)))
    singles = [verify_with_uniforms(p, d, pts, ell, uniforms[i]) for i, (p, d, pts) in enumerate(cases)]
    p_b = torch.stack([c[0] for c in cases])
    q_b = torch.stack([dense_qhat(c[2], vocab) for c in cases])
    d_b = torch.tensor([c[1] for c in cases])
    accepted, next_token, alphas = verify_batch_with_uniforms(p_b, q_b, d_b, uniforms)
    assert [r.accepted for r in singles] == accepted.tolist()
    assert [r.next_token for r in singles] == next_token.tolist()
    np.testing.assert_allclose([r.acceptance_probs for r in singles], alphas.numpy(), rtol=1e-12)
    outcomes = {r.accepted for r in singles}
    assert outcomes == set(range(n_drafts + 1)), f"all acceptance counts should occur, got {outcomes}"


def test_same_seed_same_result_and_tokens_layout() -> None:
    rng = np.random.default_rng(1)
    p, drafts, points = random_round(rng, 5, 20, 16)
    a = verify_round(p, drafts, points, 16, torch.Generator().manual_seed(5))
    b = verify_round(p, drafts, points, 16, torch.Generator().manual_seed(5))
    assert a == b
    assert a.tokens == drafts[: a.accepted] + [a.next_token]
    assert a.emitted == a.accepted + 1 and a.exact
    for alpha, tok, point, row in zip(a.acceptance_probs, drafts, points, p[:-1], strict=True):
        assert alpha == pytest.approx(min(1.0, float(row[tok]) / (point.count_of(tok) / 16)))


def test_all_accepted_gives_bonus_from_last_row() -> None:
    vocab = 5
    p = torch.zeros((3, vocab), dtype=torch.float64)
    p[0, 1] = p[1, 2] = p[2, 4] = 1.0
    pts = [LatticePoint.from_dense(np.eye(vocab, dtype=np.int64)[1] * 4, 4),
           LatticePoint.from_dense(np.eye(vocab, dtype=np.int64)[2] * 4, 4)]
    res = verify_round(p, [1, 2], pts, 4, torch.Generator().manual_seed(0))
    assert (res.accepted, res.next_token, res.tokens) == (2, 4, [1, 2, 4])


def test_rejection_draws_from_residual_only() -> None:
    # p = (0, .5, .5), q̂ = (.5, .5, 0): draft 0 always rejected (α = 0), residual = (0, 0, .5) → token 2
    p = torch.tensor([[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    pt = LatticePoint.from_dense(np.array([1, 1, 0]), 2)
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        res = verify_round(p, [0], [pt], 2, gen)
        assert (res.accepted, res.next_token, res.acceptance_probs) == (0, 2, [0.0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, d, pts: (p[:-1], d, pts), "shape"),
        (lambda p, d, pts: (p, d[:-1], pts), "shape"),
        (lambda p, d, pts: (p, d, pts[:-1]), "lattice points"),
        (lambda p, d, pts: (p, [99] + d[1:], pts), "out of range"),
    ],
)
def test_malformed_rounds_raise(mutate, message: str) -> None:
    rng = np.random.default_rng(2)
    p, drafts, points = random_round(rng, 3, 10, 8)
    with pytest.raises(VerificationError, match=message):
        verify_round(*mutate(p, drafts, points), 8, torch.Generator().manual_seed(0))


def test_draft_outside_support_is_rejected_in_qs_and_allowed_in_sq() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]], dtype=torch.float64)
    pt = LatticePoint.from_dense(np.array([1, 1, 0]), 2)
    with pytest.raises(VerificationError, match="q̂ = 0"):
        verify_round(p, [2], [pt], 2, torch.Generator().manual_seed(0))
    res = verify_round(p, [2], [pt], 2, torch.Generator().manual_seed(0), sampling_order="sq")
    assert not res.exact and res.acceptance_probs == [1.0] and res.accepted == 1


def test_wrong_ell_and_vocab_raise() -> None:
    p = torch.full((2, 4), 0.25, dtype=torch.float64)
    with pytest.raises(VerificationError, match="ell"):
        verify_round(p, [0], [LatticePoint.from_dense(np.array([2, 0, 0, 0]), 2)], 4, torch.Generator())
    with pytest.raises(VerificationError, match="vocab_size"):
        verify_round(p, [0], [LatticePoint.from_dense(np.array([2, 0, 0]), 2)], 2, torch.Generator())


def test_target_probs_temperature_topk_topp() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, 3.0]])
    greedy = target_probs(logits, SamplingParams(temperature=0.0))
    assert greedy.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]  # ties → lowest id
    full = target_probs(logits, SamplingParams(temperature=2.0))
    torch.testing.assert_close(full, torch.softmax(logits.double() / 2.0, -1))
    top2 = target_probs(logits, SamplingParams(top_k=3))
    assert (top2[0, [0, 3]] == 0).all() and top2[0, [1, 2, 4]].gt(0).all()
    torch.testing.assert_close(top2.sum(-1), torch.ones(1, dtype=torch.float64))
    sm = torch.softmax(logits.double(), -1)[0]  # ≈ (.046, .345, .127, .017, .345)
    nucleus = target_probs(logits, SamplingParams(top_p=0.6))[0]
    assert (nucleus > 0).tolist() == [False, True, False, False, True]
    torch.testing.assert_close(nucleus[[1, 4]], sm[[1, 4]] / sm[[1, 4]].sum())
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1.0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)


@pytest.mark.parametrize("params", [SamplingParams(0.0), SamplingParams(0.7), SamplingParams(1.3, top_k=5),
                                    SamplingParams(1.0, top_p=0.8), SamplingParams(0.5, top_k=12, top_p=0.6)])
def test_target_probs_agree_with_the_edge_q_distribution(params: SamplingParams) -> None:
    """The same sampling parameters mean the same distribution on both sides (edge q vs cloud p)."""
    from edge_runtime.drafter import q_distribution

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(3)) * 3
    cloud = target_probs(logits, params).numpy()
    for row in range(4):
        edge = q_distribution(logits[row].numpy(), params.temperature, params.top_k, params.top_p)
        np.testing.assert_allclose(cloud[row], edge, atol=1e-6)


@pytest.mark.parametrize("params", [SamplingParams(1.0, top_k=5), SamplingParams(0.7, top_k=17),
                                    SamplingParams(1.0, top_p=0.5), SamplingParams(0.9, top_k=9, top_p=0.7)])
def test_target_probs_break_ties_as_the_edge_does(params: SamplingParams) -> None:
    """Logits with many equal values: top-k keeps exactly k (ties to the lower ids) and top-p orders equal
    probabilities by id, on both sides (torch.topk alone would keep every token tied with the k-th)."""
    from edge_runtime.drafter import q_distribution

    logits = torch.randint(0, 4, (6, 40), generator=torch.Generator().manual_seed(11)).float()
    cloud = target_probs(logits, params).numpy()
    for row in range(logits.shape[0]):
        edge = q_distribution(logits[row].numpy(), params.temperature, params.top_k, params.top_p)
        assert ((cloud[row] > 0) == (edge > 0)).all(), row
        if params.top_p == 1.0:
            assert int((cloud[row] > 0).sum()) == params.top_k
        np.testing.assert_allclose(cloud[row], edge, atol=1e-9)
