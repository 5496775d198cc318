"""Real compute for the experiments: the edge drafter (real SLM + C core) and the cloud verifier (real target) in
one process, driven by the round engine, with the link emulated from a Markov channel by sleeping for the transfer
times.

The link (:class:`EmulatedLink`) wraps the in-process verifier (:class:`qsv_tools.local_loop.LocalLink`): per
round it sleeps uplink bits / current rate + RTT/2, verifies (the target over pending + drafts, ``verify_round``,
timed), sleeps downlink bits / downlink rate + RTT/2, and redraws the channel state when the verdict is taken. The
engine runs serially (no pre-drafting), so a round's time is the measured wall clock of drafting, the emulated round
trip and the feedback step: the comparison with the simulator checks the compute timings, the acceptance and the
bookkeeping on real models.

The controller's per-token early stop is applied (``Drafter.draft`` asks ``should_continue`` after each token).
Uplink size: the paper's fixed-length encoding (``uplink_bits_per_token``) plus a header, as in the simulator.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edge_runtime.controller.bits import uplink_bits_per_token
from edge_runtime.controller.types import ChannelView
from edge_runtime.drafter import DraftRound
from edge_runtime.engine import Verdict, VerifierInfo, VerifierLink
from qsv_tools.channel.markov import MarkovChannel
from qsv_wire.protocol import SamplingParams

from .episode import ChannelSchedule, Episode

HEADER_BITS = 8 * 48
DOWNLINK_BITS = 8 * 40


class EmulatedLink:
    """A verifier link with the Markov uplink emulated around it: the round's transfer times are slept, its uplink
    is counted as the paper's fixed-length encoding plus a header."""

    def __init__(self, inner: VerifierLink, schedule: ChannelSchedule, vocab_size: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.sleep = sleep
        self._bits = 0

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo:
        return self.inner.open(prompt, sampling, vocab_size, vocab_hash)

    def channel_view(self) -> ChannelView | None:
        return self.schedule.view()

    def submit(self, draft: DraftRound) -> None:
        _, rate = self.schedule.begin_round()
        spec = self.schedule.channel.spec
        self._bits = HEADER_BITS + draft.length * uplink_bits_per_token(self.vocab_size, draft.ell)
        self.sleep(self._bits / rate + spec.rtt_s / 2)
        self.inner.submit(draft)
        self.sleep(DOWNLINK_BITS / spec.downlink_bps + spec.rtt_s / 2)

    def poll(self) -> Verdict | None:
        verdict = self.inner.poll()
        return None if verdict is None else self._deliver(verdict)

    def wait(self) -> Verdict:
        return self._deliver(self.inner.wait())

    def _deliver(self, verdict: Verdict) -> Verdict:
        self.schedule.end_round()
        return dataclasses.replace(verdict, uplink_bits=self._bits, downlink_bits=DOWNLINK_BITS)


class RealRoundExecutor:
    """Real drafter + real verifier in process; link delays slept from ``channel`` (redrawn every round)."""

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
        from edge_runtime.drafter import QS, SQ, DraftConfig, Drafter
        from qsv_tools.local_loop import LocalLink

        if scheme not in ("qs", "sq"):
            raise ValueError(f"scheme must be 'qs' or 'sq', got {scheme!r}")
        if not prompts or any(len(p) < 2 for p in prompts):
            raise ValueError("need prompts of at least 2 tokens")
        self.prompts = [[int(t) for t in p] for p in prompts]
        self.schedule = ChannelSchedule(channel, channel_known)
        self.drafter = Drafter(slm, DraftConfig(ell=240, temperature=temperature, mode=QS if scheme == "qs" else SQ,
                                                stop_at_eos=False), seed=seed)
        verifier = LocalLink(target, torch.Generator().manual_seed(seed + 1))
        self.link = EmulatedLink(verifier, self.schedule, int(slm.vocab_size), sleep)

    def begin(self, seq: int) -> Episode:
        if not 0 <= seq < len(self.prompts):
            raise ValueError(f"no prompt {seq} (have {len(self.prompts)})")
        return Episode(self.drafter, self.link, self.prompts[seq], self.schedule)

    def channel_view(self) -> ChannelView | None:
        return self.schedule.view()
