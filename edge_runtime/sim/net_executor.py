"""A ``RoundExecutor`` over the real networked runtime: the edge drafter (real SLM + C core) publishes each round over
MQTT to a verifier worker (real target) through whatever link lies between them — in ``experiments.link_run`` a veth
pair between two network namespaces shaped with tc — and the link rate follows a Markov chain, applied with a
caller-supplied ``set_rate`` (tc) before every round.

Per round: set the link to the channel's current rate (untimed), draft up to ``max_draft`` tokens asking the
controller after each token (per-token early stop), encode the lattice points (auto codec mode), publish, wait for
the feedback, apply it to the drafter; the round time is the wall clock of drafting + encoding + the round trip +
the feedback step. Uplink bits are the real message's lattice bytes plus the packed token ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_runtime import codec
from edge_runtime.channel.markov import MarkovChannel
from edge_runtime.controller.types import ChannelView, Decision, RoundObservation

from .loop import RoundResult

FEEDBACK_BITS = 8 * 40  # feedback message size used for the downlink term (accept probabilities add a few bytes)


class NetRoundExecutor:
    """Real drafter + remote verifier over a real (shaped) link; one MQTT session per sequence."""

    def __init__(
        self,
        slm: Any,
        connect: Callable[[], Any],
        prompts: Sequence[Sequence[int]],
        channel: MarkovChannel,
        vocab_hash: bytes,
        set_rate: Callable[[float], None] | None = None,
        temperature: float = 0.4,
        channel_known: bool = True,
        seed: int = 0,
    ) -> None:
        """``connect()`` returns a connected ``RemoteVerifier`` (a new one per sequence: a fresh session)."""
        from edge_runtime.drafter import QS, DraftConfig, Drafter

        if not prompts or any(len(p) < 2 for p in prompts):
            raise ValueError("need prompts of at least 2 tokens")
        self.slm = slm
        self.connect = connect
        self.prompts = [[int(t) for t in p] for p in prompts]
        self.channel = channel
        self.vocab_hash = bytes(vocab_hash)
        self.set_rate = set_rate
        self.channel_known = channel_known
        self.temperature = temperature
        self.seed = seed
        self.vocab_size = int(slm.vocab_size)
        self.id_bits = codec.token_bits(self.vocab_size)
        self._config = DraftConfig(ell=240, temperature=temperature, mode=QS, stop_at_eos=False)
        self.drafter = Drafter(slm, self._config, seed=seed)
        self.remote: Any = None

    def close(self) -> None:
        if self.remote is not None:
            self.remote.disconnect()
            self.remote = None

    def begin(self, seq: int) -> None:
        from edge_runtime.protocol import SamplingParams

        if not 0 <= seq < len(self.prompts):
            raise ValueError(f"no prompt {seq} (have {len(self.prompts)})")
        self.close()
        prompt = self.prompts[seq]
        self.drafter.start(prompt)
        self.remote = self.connect()
        self.remote.open(prompt, SamplingParams(self.temperature, 0, 1.0, self.seed + seq), self.vocab_size,
                         self.vocab_hash)

    def channel_view(self) -> ChannelView | None:
        if not self.channel_known:
            return None
        return self.channel.view()

    def execute(self, decision: Decision, should_continue: Callable[[float, int], bool]) -> RoundResult:
        from dataclasses import replace

        from edge_runtime.transport.board import CODEC_MODE_QSV1

        if self.remote is None:
            raise RuntimeError("begin() first")
        rate, state = self.channel.rate_bps, self.channel.state
        if self.set_rate is not None:
            self.set_rate(rate)
        config = replace(self._config, ell=decision.ell)
        t_start = time.perf_counter()
        draft = self.drafter.draft(decision.max_draft, config, should_continue)
        blobs = [codec.encode(point, self.vocab_size, draft.ell) for point in draft.points]
        t_sent = time.perf_counter()
        fb = self.remote.verify(draft.tokens, blobs, draft.ell, CODEC_MODE_QSV1)
        t_feedback = time.perf_counter()
        self.drafter.feedback(fb.accepted, fb.next_token)
        t_end = time.perf_counter()
        bits = 8 * sum(len(b) for b in blobs) + draft.length * self.id_bits
        obs = RoundObservation(
            ell=decision.ell, confidences=list(draft.confidences), accepted=fb.accepted,
            draft_s=(t_sent - t_start) + (t_end - t_feedback), verify_s=fb.verify_us / 1e6, uplink_bits=bits,
            elapsed_s=t_feedback - t_sent, alphas=list(fb.accept_probs) or None, entropies=list(draft.entropies),
            downlink_bits=FEEDBACK_BITS, channel_state=state,
        )
        self.channel.step()
        return RoundResult(obs, fb.accepted + 1, t_end - t_start, state, rate)
