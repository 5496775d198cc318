"""Exact speculative verification against a quantized draft distribution q̂ = b / ℓ.

Per round the board sends L draft tokens x_1..x_L and the lattice points q̂_1..q̂_L it sampled them from. Given the
target rows p_1..p_{L+1} (one forward pass), the verifier accepts x_i while u_i < α_i = min(1, p_i(x_i) / q̂_i(x_i)); at
the first rejection it draws the next token from norm(max(p_i − q̂_i, 0)); if all L are accepted it draws a bonus token
from p_{L+1}. This is exact (the output law is the target's) for any q̂, because x_i really was drawn from q̂ (Q-S).

Randomness: every round consumes exactly L + 1 uniforms from the caller's ``torch.Generator`` — L acceptance tests and
one inverse-CDF draw for the next token — so a round is a pure function of (p, drafts, q̂, uniforms). The batched
sampler in this module uses the same arithmetic on many rounds at once and gives identical results for identical
uniforms (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from qsv_wire.lattice import LatticePoint
from qsv_wire.protocol import SamplingParams  # the one definition, shared with the board (re-exported)

EXACT_ORDER = "qs"  # quantize, then sample: the edge drew x from q̂ (exact)
INEXACT_ORDER = "sq"  # sample from q, then quantize: the verifier still uses q̂ (biased; for comparisons only)
SAMPLING_ORDERS = (EXACT_ORDER, INEXACT_ORDER)


class VerificationError(ValueError):
    """A round that cannot be verified (shape mismatch, draft outside its lattice point's support, …)."""


@dataclass
class VerifyResult:
    """Outcome of one verified round."""

    accepted: int  # n: number of draft tokens accepted (0..L)
    next_token: int  # the corrected token (after a rejection) or the bonus token (all accepted)
    acceptance_probs: list[float]  # α_i for every draft position i = 1..L
    exact: bool = True  # False when the board sampled from q and not from q̂ (S-Q)
    tokens: list[int] = field(default_factory=list)  # accepted drafts followed by next_token

    @property
    def emitted(self) -> int:
        """Tokens this round adds to the sequence (n + 1)."""
        return self.accepted + 1


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Turn target logits (..., V) into the probability rows p the verifier checks against.

    Order: temperature, then top-k, then top-p (nucleus, keeping the smallest prefix of the sorted distribution whose
    mass reaches top_p; the top token is always kept). temperature 0 gives a one-hot argmax (ties → lowest id). The
    tie rules are the board's (csrc/qsv_quant.h): top-k keeps exactly k, ties to the lower ids; top-p orders equal
    probabilities by id.
    Output is float64 so acceptance ratios are not spoiled by bf16/fp32 rounding.
    """
    logits = logits.to(torch.float64)
    if params.temperature == 0.0:
        out = torch.zeros_like(logits)
        out.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
        return out
    scaled = logits / params.temperature
    vocab = scaled.shape[-1]
    if 0 < params.top_k < vocab:  # exactly k survive; ties at the k-th value go to the lower ids (the C core's rule)
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]
        above, tied = scaled > kth, scaled == kth
        room = params.top_k - above.sum(dim=-1, keepdim=True)
        keep = above | (tied & (torch.cumsum(tied, dim=-1) <= room))
        scaled = scaled.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:  # probability descending, ties: lower id first (a stable sort)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        drop_sorted = mass_before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def dense_qhat(points: Sequence[LatticePoint], vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack lattice points into dense q̂ rows (len(points), V), float64."""
    out = torch.zeros((len(points), vocab_size), dtype=torch.float64, device=device)
    for row, point in enumerate(points):
        idx = torch.from_numpy(point.indices.astype(np.int64)).to(device)
        out[row, idx] = torch.from_numpy(point.counts.astype(np.float64)).to(device) / float(point.ell)
    return out


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw from unnormalized non-negative ``weights`` (..., V) with uniforms ``u`` (...) by inverse CDF.

    Never returns a zero-weight token: the first index whose cumulative weight exceeds u·total has positive weight.
    """
    cdf = torch.cumsum(weights, dim=-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=weights.shape[-1] - 1)


def _validate_round(
    p: torch.Tensor, draft_tokens: Sequence[int], points: Sequence[LatticePoint], ell: int, strict: bool
) -> None:
    n_drafts = len(draft_tokens)
    if p.ndim != 2 or p.shape[0] != n_drafts + 1:
        raise VerificationError(f"p must have shape (L+1, V) = ({n_drafts + 1}, V), got {tuple(p.shape)}")
    if len(points) != n_drafts:
        raise VerificationError(f"{n_drafts} draft tokens but {len(points)} lattice points")
    vocab = p.shape[1]
    for i, (tok, point) in enumerate(zip(draft_tokens, points, strict=True)):
        if point.ell != ell:
            raise VerificationError(f"lattice point {i} has ell={point.ell}, round says ell={ell}")
        if point.vocab_size != vocab:
            raise VerificationError(f"lattice point {i} has vocab_size={point.vocab_size}, target has {vocab}")
        if not 0 <= int(tok) < vocab:
            raise VerificationError(f"draft token {i} = {tok} out of range for vocab {vocab}")
        if strict and point.count_of(int(tok)) == 0:
            raise VerificationError(f"draft token {i} = {tok} has q̂ = 0: it cannot have been sampled from q̂")


def verify_with_uniforms(
    p: torch.Tensor,
    draft_tokens: Sequence[int],
    points: Sequence[LatticePoint],
    ell: int,
    uniforms: torch.Tensor,
    exact: bool = True,
) -> VerifyResult:
    """Verify one round with explicit uniforms (L + 1 of them, in [0, 1)). See the module docstring.

    With ``exact=True`` (Q-S) a draft outside its lattice point's support is an error; with ``exact=False`` (S-Q) it
    is allowed and gets α = 1 when p(x) > 0 (the paper's S-Q convention).
    """
    _validate_round(p, draft_tokens, points, ell, strict=exact)
    n_drafts = len(draft_tokens)
    if uniforms.shape != (n_drafts + 1,):
        raise VerificationError(f"need {n_drafts + 1} uniforms, got shape {tuple(uniforms.shape)}")
    p64 = p.to(torch.float64)
    u = uniforms.to(device=p64.device, dtype=torch.float64)
    alphas: list[float] = []
    for i, (tok, point) in enumerate(zip(draft_tokens, points, strict=True)):
        q_x = point.count_of(int(tok)) / float(ell)
        p_x = float(p64[i, int(tok)])
        if q_x > 0:
            alphas.append(min(1.0, p_x / q_x))
        else:  # only under S-Q (exact=False): p/0 = +inf when p > 0, 0/0 = 0
            alphas.append(1.0 if p_x > 0 else 0.0)
    accepted = n_drafts
    for i, alpha in enumerate(alphas):
        if not float(u[i]) < alpha:
            accepted = i
            break
    if accepted == n_drafts:
        weights = p64[n_drafts]
    else:
        qhat = dense_qhat([points[accepted]], p64.shape[1], p64.device)[0]
        weights = torch.clamp(p64[accepted] - qhat, min=0.0)
        if float(weights.sum()) <= 0.0:  # only when p == q̂ up to rounding: rejection had ~0 probability
            weights = p64[accepted]
    next_token = int(inverse_cdf(weights, u[n_drafts]))
    tokens = [int(t) for t in draft_tokens[:accepted]] + [next_token]
    return VerifyResult(accepted=accepted, next_token=next_token, acceptance_probs=alphas, exact=exact, tokens=tokens)


def verify_round(
    p: torch.Tensor,
    draft_tokens: Sequence[int],
    points: Sequence[LatticePoint],
    ell: int,
    generator: torch.Generator,
    sampling_order: str = EXACT_ORDER,
) -> VerifyResult:
    """Verify one round of L drafts against target rows ``p`` (L+1, V); all randomness from ``generator``.

    ``sampling_order`` only labels the result: "qs" (the board sampled x from q̂: exact) or "sq" (it sampled from q:
    the same formula with q̂ is then biased, result marked ``exact=False``).
    """
    if sampling_order not in SAMPLING_ORDERS:
        raise VerificationError(f"sampling_order must be one of {SAMPLING_ORDERS}, got {sampling_order!r}")
    gen_device = generator.device
    uniforms = torch.rand(len(draft_tokens) + 1, generator=generator, dtype=torch.float64, device=gen_device)
    return verify_with_uniforms(p, draft_tokens, points, ell, uniforms, exact=sampling_order == EXACT_ORDER)


# ----------------------------------------------------------------------------------------------------------------
# Batched sampler: many independent rounds of the same L at once (statistics, simulation, benchmarks).
# ----------------------------------------------------------------------------------------------------------------


def sample_from_rows(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws from rows of ``probs`` (..., V) with uniforms ``u`` (...): what the board does."""
    return inverse_cdf(probs.to(torch.float64), u.to(torch.float64))


def _alpha(p_x: torch.Tensor, q_x: torch.Tensor) -> torch.Tensor:
    """α = min(1, p(x)/q̂(x)), with p/0 = +inf for p > 0 (accept) and 0/0 = 0 (reject): the S-Q convention."""
    ratio = torch.where(q_x > 0, p_x / torch.where(q_x > 0, q_x, torch.ones_like(q_x)), torch.where(p_x > 0, 1.0, 0.0))
    return torch.clamp(ratio, max=1.0)


def verify_batch_with_uniforms(
    p: torch.Tensor, qhat: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor, strict: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorized verification of B rounds: the same arithmetic as :func:`verify_with_uniforms`.

    p: (B, L+1, V) target rows · qhat: (B, L, V) dense q̂ rows · drafts: (B, L) int64 · uniforms: (B, L+1).
    ``strict`` rejects drafts with q̂(x) = 0 (impossible under Q-S); with ``strict=False`` (S-Q simulation) they get
    α = min(1, p(x)/0) = 1 when p(x) > 0, as in the paper's S-Q example.
    Returns (accepted (B,), next_token (B,), alphas (B, L)).
    """
    p = p.to(torch.float64)
    qhat = qhat.to(torch.float64)
    batch, n_drafts = drafts.shape
    rows = torch.arange(batch, device=p.device)
    if n_drafts == 0:
        zeros = torch.zeros(batch, dtype=torch.int64, device=p.device)
        return zeros, inverse_cdf(p[:, 0], uniforms[:, 0]), torch.zeros((batch, 0), dtype=torch.float64)
    p_x = torch.gather(p[:, :n_drafts], -1, drafts.unsqueeze(-1)).squeeze(-1)
    q_x = torch.gather(qhat, -1, drafts.unsqueeze(-1)).squeeze(-1)
    if strict and bool((q_x <= 0).any()):
        raise VerificationError("a draft token has q̂ = 0 in its own lattice point")
    alphas = _alpha(p_x, q_x)
    rejected = ~(uniforms[:, :n_drafts] < alphas)
    any_rej = rejected.any(dim=1)
    first_rej = torch.where(any_rej, rejected.to(torch.int64).argmax(dim=1), torch.full_like(rows, n_drafts))
    p_at = p[rows, first_rej]  # (B, V): the row after the accepted prefix
    q_at = qhat[rows, first_rej.clamp(max=n_drafts - 1)]
    residual = torch.clamp(p_at - q_at, min=0.0)
    residual = torch.where((residual.sum(dim=-1) <= 0.0).unsqueeze(-1), p_at, residual)
    weights = torch.where(any_rej.unsqueeze(-1), residual, p_at)
    next_token = inverse_cdf(weights, uniforms[:, n_drafts])
    return first_rej, next_token, alphas


def simulate_rounds(
    p: torch.Tensor,
    q: torch.Tensor,
    qhat: torch.Tensor,
    n_rounds: int,
    generator: torch.Generator,
    sampling_order: str = EXACT_ORDER,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Simulate ``n_rounds`` independent rounds with fixed rows, the board's draw included.

    p: (L+1, V) target rows · q: (L, V) unquantized draft distributions · qhat: (L, V) their lattice points (dense
    b/ℓ). The board draws each x_i from q̂_i ("qs", exact) or from q_i ("sq", biased); the verifier always uses q̂.
    Returns (drafts (B, L), accepted (B,), next_token (B,)).
    """
    if sampling_order not in SAMPLING_ORDERS:
        raise VerificationError(f"sampling_order must be one of {SAMPLING_ORDERS}, got {sampling_order!r}")
    n_drafts = q.shape[0]
    source = qhat if sampling_order == EXACT_ORDER else q
    u_draft = torch.rand((n_rounds, n_drafts), generator=generator, dtype=torch.float64)
    drafts = sample_from_rows(source.unsqueeze(0).expand(n_rounds, -1, -1), u_draft)
    uniforms = torch.rand((n_rounds, n_drafts + 1), generator=generator, dtype=torch.float64)
    p_b = p.unsqueeze(0).expand(n_rounds, -1, -1)
    q_b = qhat.unsqueeze(0).expand(n_rounds, -1, -1)
    accepted, next_token, _ = verify_batch_with_uniforms(
        p_b, q_b, drafts, uniforms, strict=sampling_order == EXACT_ORDER
    )
    return drafts, accepted, next_token
