"""The reference the speedup is measured against: the target model decoding alone in the cloud (autoregressive, one
forward per token), same model, dtype, thread count, prompts and sampling as the verifier worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from cloud_verifier import SamplingParams, target_probs
from cloud_verifier.target import TargetModel


@dataclass
class BaselineRun:
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    decode_s: float = 0.0


def run_target_alone(target: TargetModel, prompt_ids: Sequence[int], max_new_tokens: int, params: SamplingParams,
                     generator: torch.Generator, eos_token_ids: Sequence[int] = (),
                     on_token: Callable[[int], None] | None = None) -> BaselineRun:
    """Sample up to ``max_new_tokens`` from the target alone (stops after EOS). The prompt is prefilled the way the
    verifier does it (all but the last token), so prefill and decode split the same way in both runs."""
    if max_new_tokens < 1 or not prompt_ids:
        raise ValueError("need a non-empty prompt and max_new_tokens >= 1")
    run = BaselineRun([int(t) for t in prompt_ids])
    eos = set(eos_token_ids)
    t0 = time.perf_counter()
    state = target.prefill(run.prompt_ids[:-1])
    pending = run.prompt_ids[-1]
    start = time.perf_counter()
    run.prefill_s = start - t0
    while len(run.tokens) < max_new_tokens:
        step = target.forward_round(state, [pending])
        probs = target_probs(step.logits[-1], params)
        pending = int(torch.multinomial(probs, 1, generator=generator))
        state = step.committed_state(1)
        run.tokens.append(pending)
        if on_token is not None:
            on_token(pending)
        if pending in eos:
            break
    run.decode_s = time.perf_counter() - start
    return run
