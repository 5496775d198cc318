"""Synthetic traces: draft/target distribution pairs with a realistic mix of easy and hard stretches.

Each context has target logits u over a small synthetic support (``support`` tokens: quantization and acceptance only
depend on the probabilities that matter, not on V; uplink sizes still use the real vocabulary size). A hidden
two-state Markov regime makes stretches: *easy* contexts have one dominant token and a close draft model (draft
confidence mostly ≥ 0.9); *hard* contexts are flatter, with a larger draft/target mismatch. Both models are sampled at
temperature 0.4, q is quantized at every ℓ with the paper's lattice rule and x is drawn from q̂ (Q-S) and from q (S-Q).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qsv_wire.reference import lattice_rule

from .trace import SequenceTrace, TraceSet


def lattice_quantize_rows(q: np.ndarray, ell: int) -> np.ndarray:
    """Counts b (rows sum to ℓ) for each row of q by the lattice rule (``qsv_wire.reference.lattice_rule``, the
    specification the C core is tested against); used only to build synthetic traces."""
    return np.stack([lattice_rule(ell * row, ell) for row in np.asarray(q, dtype=np.float64)])


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the generator (defaults: mean α ≈ 0.73 at ℓ=240, ≈ half the draft tokens with q(x) ≥ 0.9)."""

    support: int = 256
    temperature: float = 0.4
    p_stay_easy: float = 0.85
    p_stay_hard: float = 0.7
    easy_margin: tuple[float, float] = (3.0, 5.0)
    hard_margin: tuple[float, float] = (0.5, 2.5)
    easy_mismatch: float = 0.25
    hard_mismatch: float = 0.8
    logit_scale: float = 0.5


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * c[:, -1:]
    return np.minimum((c <= u).sum(axis=1), probs.shape[1] - 1)


def generate_sequence(
    seq: int, length: int, ells: Sequence[int], rng: np.random.Generator, spec: SyntheticSpec = SyntheticSpec()
) -> SequenceTrace:
    n, k = length, spec.support
    easy = np.empty(n, dtype=bool)
    state = rng.random() < 0.6
    for i in range(n):
        easy[i] = state
        stay = spec.p_stay_easy if state else spec.p_stay_hard
        state = state if rng.random() < stay else not state
    base = spec.logit_scale * rng.standard_normal((n, k))
    top = rng.integers(0, k, n)
    lo = np.where(easy, spec.easy_margin[0], spec.hard_margin[0])
    hi = np.where(easy, spec.easy_margin[1], spec.hard_margin[1])
    base[np.arange(n), top] += lo + (hi - lo) * rng.random(n)
    mismatch = np.where(easy, spec.easy_mismatch, spec.hard_mismatch)[:, None]
    draft = base + mismatch * rng.standard_normal((n, k))
    p = _softmax(base / spec.temperature)
    q = _softmax(draft / spec.temperature)
    rows = np.arange(n)
    with np.errstate(divide="ignore"):
        entropy = -(np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0)), 0.0)).sum(axis=1)  # bits, as the drafter
    draws: dict[str, dict[int, np.ndarray]] = {"qs": {}, "sq": {}}
    x_sq = _sample_rows(q, rng)
    for ell in ells:
        qhat = lattice_quantize_rows(q, ell) / float(ell)
        x = _sample_rows(qhat, rng)
        draws["qs"][ell] = np.stack([q[rows, x], qhat[rows, x], p[rows, x]], axis=1)
        draws["sq"][ell] = np.stack([q[rows, x_sq], qhat[rows, x_sq], p[rows, x_sq]], axis=1)
    return SequenceTrace(seq, entropy, draws)


def generate_traces(
    n_sequences: int,
    length: int,
    ells: Sequence[int],
    vocab_size: int = 151_936,
    seed: int = 0,
    spec: SyntheticSpec = SyntheticSpec(),
) -> TraceSet:
    """``n_sequences`` independent sequences of ``length`` contexts, reproducible from ``seed``."""
    if n_sequences < 1 or length < 1 or not ells:
        raise ValueError("need n_sequences >= 1, length >= 1 and at least one ell")
    rng = np.random.default_rng(seed)
    seqs = [generate_sequence(s, length, ells, rng, spec) for s in range(n_sequences)]
    return TraceSet(vocab_size, tuple(sorted(ells)), seqs, meta={"source": "synthetic", "seed": seed,
                                                                  "temperature": spec.temperature})
