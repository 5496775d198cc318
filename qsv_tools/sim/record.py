"""Record simulator traces from a real draft/target model pair (both run locally, e.g. on a GPU host).

Per prompt: a continuation is sampled from the target at the sampling temperature (the output distribution of exact
speculative decoding), then one forward pass of each model over prompt + continuation gives q and p at every
continuation position. For each ℓ, q is quantized with the C core, x is drawn from q̂ (Q-S) and from q (S-Q), and
q(x), q̂(x), p(x) are written with the entropy of q (bits). Models are plain callables: token ids → logits (T, V) of
the next token at every position; adapters for the edge's DraftModel and the cloud's TargetModel are below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .trace import SequenceTrace, TraceSet

log = logging.getLogger(__name__)

SequenceLogits = Callable[[Sequence[int]], np.ndarray]


def draft_model_logits(slm: Any) -> SequenceLogits:
    """Adapter for edge_runtime.slm.DraftModel (OnnxSLM, TorchSLM): reset, one forward over all tokens."""

    def run(ids: Sequence[int]) -> np.ndarray:
        slm.reset()
        return np.array(slm.forward(list(ids)), dtype=np.float32, copy=True)

    return run


def target_model_logits(target: Any) -> SequenceLogits:
    """Adapter for cloud_verifier.target.TargetModel: one uncached round over all tokens."""

    def run(ids: Sequence[int]) -> np.ndarray:
        out = target.forward_round(target.empty_state(), list(ids))
        return out.logits.detach().cpu().numpy().astype(np.float32)

    return run


def _probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    from edge_runtime.drafter import q_distribution

    return q_distribution(logits, temperature, top_k, top_p)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


def position_draws(q: np.ndarray, p: np.ndarray, ells: Sequence[int], rng: np.random.Generator
                   ) -> tuple[float, dict[int, tuple[float, float, float]], dict[int, tuple[float, float, float]]]:
    """One context: entropy of q (bits); per ℓ (q(x), q̂(x), p(x)) for x ~ q̂_ℓ (Q-S) and for one x ~ q (S-Q)."""
    from qsv_wire import core

    nz = q[q > 0]
    entropy = float(-(nz * np.log2(nz)).sum())
    x_sq = _draw(q, rng)
    qs: dict[int, tuple[float, float, float]] = {}
    sq: dict[int, tuple[float, float, float]] = {}
    for ell in ells:
        point = core.quantize_probs(q, ell)
        x = int(core.sample(point, int(rng.integers(0, ell))))
        qs[ell] = (float(q[x]), point.count_of(x) / ell, float(p[x]))
        sq[ell] = (float(q[x_sq]), point.count_of(x_sq) / ell, float(p[x_sq]))
    return entropy, qs, sq


def record_sequence(
    seq: int,
    prompt_ids: Sequence[int],
    draft: SequenceLogits,
    target: SequenceLogits,
    ells: Sequence[int],
    n_tokens: int,
    rng: np.random.Generator,
    temperature: float = 0.4,
    top_k: int = 0,
    top_p: float = 1.0,
) -> SequenceTrace:
    """Trace of ``n_tokens`` contexts following ``prompt_ids`` (the continuation is sampled from the target)."""
    if len(prompt_ids) == 0 or n_tokens < 1:
        raise ValueError("need a non-empty prompt and n_tokens >= 1")
    ids = [int(t) for t in prompt_ids]
    for _ in range(n_tokens):  # target-sampled path (quadratic but simple: n_tokens forwards over a short sequence)
        ids.append(_draw(_probs(target(ids)[-1], temperature, top_k, top_p), rng))
    start = len(prompt_ids) - 1
    d_logits = draft(ids)[start:start + n_tokens]
    t_logits = target(ids)[start:start + n_tokens]
    vocab = min(d_logits.shape[1], t_logits.shape[1])  # checkpoints may pad the output layer differently
    if d_logits.shape[1] != t_logits.shape[1]:
        log.warning("draft/target logits widths differ (%d vs %d): using the first %d", d_logits.shape[1],
                    t_logits.shape[1], vocab)
    entropy = np.empty(n_tokens)
    draws: dict[str, dict[int, np.ndarray]] = {"qs": {e: np.empty((n_tokens, 3)) for e in ells},
                                               "sq": {e: np.empty((n_tokens, 3)) for e in ells}}
    for i in range(n_tokens):
        q = _probs(d_logits[i, :vocab], temperature, top_k, top_p)
        p = _probs(t_logits[i, :vocab], temperature, top_k, top_p)
        entropy[i], qs, sq = position_draws(q, p, ells, rng)
        for ell in ells:
            draws["qs"][ell][i] = qs[ell]
            draws["sq"][ell][i] = sq[ell]
    return SequenceTrace(seq, entropy, draws)


def record_traces(
    prompts: Sequence[Sequence[int]],
    draft: SequenceLogits,
    target: SequenceLogits,
    ells: Sequence[int],
    vocab_size: int,
    n_tokens: int = 76,
    seed: int = 0,
    temperature: float = 0.4,
    meta: dict | None = None,
    progress: bool = False,
) -> TraceSet:
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    seqs = [record_sequence(i, p, draft, target, ells, n_tokens, rng, temperature)
            for i, p in enumerate(tqdm(prompts, desc="record", disable=not progress))]
    return TraceSet(vocab_size, tuple(sorted(ells)), seqs,
                    meta={"source": "recorded", "seed": seed, "temperature": temperature, **(meta or {})})
