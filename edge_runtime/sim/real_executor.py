"""A ``RoundExecutor`` on real compute: the edge drafter (real SLM + C core) and the cloud verifier (real target)
in one process, with the link emulated from a Markov channel by sleeping for the transfer times.

Per round: draft ``max_draft`` tokens (timed), sleep uplink bits / current rate + RTT/2, run the target over
pending + drafts and ``verify_round`` (timed), sleep downlink bits / downlink rate + RTT/2, apply the feedback to the
drafter, redraw the channel state. The round time is the measured wall clock of all of that, so the comparison
with the simulator checks the compute timings, the acceptance and the bookkeeping on real models.

The controller's per-token early stop is applied (``Drafter.draft`` asks ``should_continue`` after each token).
Uplink size: the paper's fixed-length encoding (``uplink_bits_per_token``) plus a header, as in the
simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edge_runtime.channel.markov import MarkovChannel
from edge_runtime.controller.bits import uplink_bits_per_token
from edge_runtime.controller.types import ChannelView, Decision, RoundObservation

from .loop import RoundResult

HEADER_BITS = 8 * 48
DOWNLINK_BITS = 8 * 40


class RealRoundExecutor:
    """Real drafter + real verifier; link delays slept from ``channel`` (redrawn every round)."""

    def __init__(
        self,
        slm: Any,
        target: Any,
        prompts: Sequence[Sequence[int]],
        channel: MarkovChannel,
        temperature: float = 0.4,
        scheme: str = "qs",
        channel_known: bool = True,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from cloud_verifier import SamplingParams
        from edge_runtime.drafter import QS, SQ, DraftConfig, Drafter

        if scheme not in ("qs", "sq"):
            raise ValueError(f"scheme must be 'qs' or 'sq', got {scheme!r}")
        if not prompts or any(len(p) < 2 for p in prompts):
            raise ValueError("need prompts of at least 2 tokens")
        self.target = target
        self.prompts = [[int(t) for t in p] for p in prompts]
        self.channel = channel
        self.channel_known = channel_known
        self.mode = QS if scheme == "qs" else SQ
        self.temperature = temperature
        self.params = SamplingParams(temperature, 0, 1.0)
        self.vocab_size = int(slm.vocab_size)
        self.drafter = Drafter(slm, DraftConfig(ell=240, temperature=temperature, mode=self.mode, stop_at_eos=False),
                               seed=seed)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.sleep = sleep
        self._draft_config = DraftConfig
        self._state: Any = None
        self._pending = 0

    def begin(self, seq: int) -> None:
        if not 0 <= seq < len(self.prompts):
            raise ValueError(f"no prompt {seq} (have {len(self.prompts)})")
        prompt = self.prompts[seq]
        self.drafter.start(prompt)
        self._state = self.target.prefill(prompt[:-1])
        self._pending = prompt[-1]

    def channel_view(self) -> ChannelView | None:
        if not self.channel_known:
            return None
        return self.channel.view()

    def execute(self, decision: Decision, should_continue: Callable[[float, int], bool]) -> RoundResult:
        from cloud_verifier import target_probs, verify_round
        from edge_runtime.drafter import QS, SQ

        config = self._draft_config(ell=decision.ell, temperature=self.temperature, mode=self.mode,
                                    stop_at_eos=False)
        spec = self.channel.spec
        rate, state = self.channel.rate_bps, self.channel.state
        t_start = time.perf_counter()
        draft = self.drafter.draft(decision.max_draft, config, should_continue)
        t_sent = time.perf_counter()
        bits = HEADER_BITS + draft.length * uplink_bits_per_token(self.vocab_size, decision.ell)
        self.sleep(bits / rate + spec.rtt_s / 2)
        t0 = time.perf_counter()
        out = self.target.forward_round(self._state, [self._pending, *draft.tokens])
        p = target_probs(out.logits, self.params)
        verdict = verify_round(p, draft.tokens, draft.points, draft.ell, self.generator,
                               sampling_order=QS if draft.mode == QS else SQ)
        self._state = out.committed_state(1 + verdict.accepted)
        self._pending = verdict.next_token
        verify_s = time.perf_counter() - t0
        self.sleep(DOWNLINK_BITS / spec.downlink_bps + spec.rtt_s / 2)
        t_feedback = time.perf_counter()
        self.drafter.feedback(verdict.accepted, verdict.next_token)
        t_end = time.perf_counter()
        obs = RoundObservation(
            ell=decision.ell, confidences=list(draft.confidences), accepted=verdict.accepted,
            draft_s=(t_sent - t_start) + (t_end - t_feedback), verify_s=verify_s, uplink_bits=bits,
            elapsed_s=t_feedback - t_sent, alphas=list(verdict.acceptance_probs), entropies=list(draft.entropies),
            downlink_bits=DOWNLINK_BITS, channel_state=state,
        )
        self.channel.step()
        return RoundResult(obs, verdict.emitted, t_end - t_start, state, rate)
