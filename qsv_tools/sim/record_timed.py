"""Record traces and compute timings from the real edge SLM (KV-cached, e.g. ONNX int8) and the cloud target (torch).

Per prompt, both models walk the same target-sampled continuation in lockstep, one token per step with their KV
caches, as they would during decoding:

- context i (prompt + y_<i): the draft's one-token step gives q_i (timed: the per-token draft time), the target's
  one-token step gives p_i (timed: one autoregressive target step, the target-alone baseline);
- per ℓ, x ~ q̂_ℓ (Q-S) and one x ~ q (S-Q) are drawn and (q(x), q̂(x), p(x)) stored (``position_draws``);
- the continuation token y_i is then drawn from p_i, so the contexts follow the target's law, which is the law of
  the text exact speculative decoding produces.

After the walk, the verifier's pass over L drafts (pending token + L inputs on top of the prompt cache, then the
target distributions p of the L + 1 rows, as ``verify_round`` needs them) is timed for each L in ``verify_lengths``;
each becomes a ``round`` record (``kind: "timing"``) with the draft time of L consecutive measured steps, which
``TimingProfile.from_rounds`` fits (draft per token, verify affine in L).

Approximation (also in docs/CONTROLLER.md): the simulator accepts draft i with probability α_i = min(1, p(x)/q̂(x))
at trace context i. At the first position of every round this is exact (the real context has the target's law).
Inside a round, after an acceptance the real context continues with the accepted draft x_i, whose law given
acceptance is min(p, q̂)/Σmin(p, q̂), while the trace continues with y_i ~ p; the marginal law of each position's
context is right, the within-round correlation of acceptances is approximated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .record import _draw, _probs, position_draws
from .trace import SequenceTrace, TraceSet

log = logging.getLogger(__name__)

VERIFY_LENGTHS = (1, 2, 4, 8, 12)


def _numpy_row(logits: Any) -> np.ndarray:
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


def record_sequence_timed(
    seq: int,
    prompt_ids: Sequence[int],
    slm: Any,
    target: Any,
    ells: Sequence[int],
    n_tokens: int,
    rng: np.random.Generator,
    temperature: float = 0.4,
    verify_lengths: Sequence[int] = VERIFY_LENGTHS,
    repeats: int = 2,
) -> tuple[SequenceTrace, list[dict]]:
    """Trace of ``n_tokens`` contexts after ``prompt_ids`` and the timing records of this prompt.

    ``slm``: a KV-cached DraftModel (``prefill``, ``forward``); ``target``: cloud_verifier.target.TargetModel.
    """
    if len(prompt_ids) < 2 or n_tokens < 1:
        raise ValueError("need a prompt of at least 2 tokens and n_tokens >= 1")
    if max(verify_lengths, default=0) > n_tokens:
        raise ValueError(f"verify lengths up to {max(verify_lengths)} need n_tokens >= that")
    prompt = [int(t) for t in prompt_ids]
    base = target.prefill(prompt[:-1])
    state, pending = base, prompt[-1]
    q_logits = _numpy_row(slm.prefill(prompt)).copy()
    entropy = np.empty(n_tokens)
    draws: dict[str, dict[int, np.ndarray]] = {"qs": {e: np.empty((n_tokens, 3)) for e in ells},
                                               "sq": {e: np.empty((n_tokens, 3)) for e in ells}}
    draft_s = np.empty(n_tokens)
    target_s = np.empty(n_tokens)
    path: list[int] = []
    for i in range(n_tokens):
        t0 = time.perf_counter()
        out = target.forward_round(state, [pending])
        p_logits = _numpy_row(out.logits[-1])
        target_s[i] = time.perf_counter() - t0
        vocab = min(q_logits.size, p_logits.size)
        q = _probs(q_logits[:vocab], temperature, 0, 1.0)
        p = _probs(p_logits[:vocab], temperature, 0, 1.0)
        entropy[i], qs, sq = position_draws(q, p, ells, rng)
        for ell in ells:
            draws["qs"][ell][i] = qs[ell]
            draws["sq"][ell][i] = sq[ell]
        y = _draw(p, rng)
        path.append(y)
        state, pending = out.committed_state(1), y
        t0 = time.perf_counter()
        q_logits = _numpy_row(slm.forward([y])[-1]).copy()
        draft_s[i] = time.perf_counter() - t0
    from cloud_verifier import SamplingParams, target_probs

    params = SamplingParams(temperature, 0, 1.0)
    rounds = []
    for n_draft in verify_lengths:
        inputs = [prompt[-1], *path[:n_draft]]
        verify_s = float("inf")
        for _ in range(repeats):  # the fastest of ``repeats`` passes: the CPU is shared, slow outliers are noise
            t0 = time.perf_counter()
            out = target.forward_round(base, inputs)
            target_probs(out.logits, params)  # the verifier's p rows (float64 softmax over V per row) are round time
            verify_s = min(verify_s, time.perf_counter() - t0)
        rounds.append({"kind": "timing", "seq": seq, "L": n_draft, "draft_s": float(draft_s[:n_draft].sum()),
                       "verify_s": verify_s})
    rounds.append({"kind": "target_step", "seq": seq, "mean_s": float(target_s.mean()),
                   "draft_step_mean_s": float(draft_s.mean()), "prompt_tokens": len(prompt)})
    return SequenceTrace(seq, entropy, draws), rounds


def record_traces_timed(
    prompts: Sequence[Sequence[int]],
    slm: Any,
    target: Any,
    ells: Sequence[int],
    vocab_size: int,
    n_tokens: int = 64,
    seed: int = 0,
    temperature: float = 0.4,
    verify_lengths: Sequence[int] = VERIFY_LENGTHS,
    meta: dict | None = None,
    progress: bool = False,
    time_budget_s: float | None = None,
) -> TraceSet:
    """Record every prompt, or stop starting new prompts once ``time_budget_s`` has passed (at least 2 prompts)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    seqs: list[SequenceTrace] = []
    rounds: list[dict] = []
    t0 = time.monotonic()
    for i, prompt in enumerate(tqdm(prompts, desc="record (draft + target)", disable=not progress)):
        if time_budget_s is not None and i >= 2 and time.monotonic() - t0 > time_budget_s:
            log.warning("time budget of %.0f s used: recorded %d of %d prompts", time_budget_s, i, len(prompts))
            break
        s, r = record_sequence_timed(i, prompt, slm, target, ells, n_tokens, rng, temperature, verify_lengths)
        seqs.append(s)
        rounds.extend(r)
    return TraceSet(vocab_size, tuple(sorted(ells)), seqs, rounds,
                    meta={"source": "recorded-timed", "seed": seed, "temperature": temperature,
                          "recorded_prompts": len(seqs), **(meta or {})})


def timing_rounds(rounds: Sequence[dict], fastest: bool = False) -> list[dict]:
    """The round records usable by ``TimingProfile.from_rounds`` (measured rounds or verify timings).

    ``fastest``: per L, one record with the fastest draft and verify times over all prompts. On a shared CPU other
    processes only add time, so the fastest measurement is the best estimate of the uncontended compute time.
    """
    usable = [r for r in rounds if "L" in r and "verify_s" in r and "draft_s" in r]
    if not fastest:
        return usable
    by_len: dict[int, list[dict]] = {}
    for r in usable:
        by_len.setdefault(int(r["L"]), []).append(r)
    return [{"kind": "timing", "L": n, "draft_s": min(float(r["draft_s"]) for r in rs),
             "verify_s": min(float(r["verify_s"]) for r in rs)} for n, rs in sorted(by_len.items())]


def measured_target_step_s(rounds: Sequence[dict], fastest: bool = False) -> float | None:
    """Measured autoregressive target step (seconds) from ``target_step`` records — the mean over prompts, or the
    fastest prompt's mean with ``fastest``; None when absent."""
    vals = [float(r["mean_s"]) for r in rounds if r.get("kind") == "target_step"]
    if not vals:
        return None
    return float(min(vals)) if fastest else float(np.mean(vals))
