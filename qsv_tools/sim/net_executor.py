"""The experiments over the real networked runtime: the edge drafter (real SLM + C core) driven by the round engine,
its rounds published over MQTT (:class:`edge_runtime.transport.remote.MqttLink`) to a verifier worker (real target)
through whatever link lies between them — in ``experiments.link_run`` a veth pair between two network namespaces
shaped with tc — and the link rate follows a Markov chain, applied with a caller-supplied ``set_rate`` (tc).

The engine asks the link for the coming round's channel once at the start of every round; :class:`NetLink` applies
that round's rate there, before the round's clock starts. The engine runs serially (no pre-drafting): a round's
time is the wall clock of drafting (with per-token early stop) + the round trip + the feedback step. Uplink bits are
the real message's lattice bytes plus the packed token ids (the engine's count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from edge_runtime.controller.types import ChannelView
from edge_runtime.drafter import DraftRound
from edge_runtime.engine import Verdict, VerifierInfo
from qsv_tools.channel.markov import MarkovChannel
from qsv_wire.protocol import SamplingParams

from .episode import ChannelSchedule, Episode

FEEDBACK_BITS = 8 * 40  # feedback message size used for the downlink term (accept probabilities add a few bytes)


class NetLink:
    """The engine's verifier link for a shaped-link experiment: a fresh MQTT session per sequence (``connect()``
    returns a connected ``RemoteVerifier``), the link rate set to the channel's state before each round."""

    def __init__(self, connect: Callable[[], Any], schedule: ChannelSchedule,
                 set_rate: Callable[[float], None] | None = None) -> None:
        self.connect = connect
        self.schedule = schedule
        self.set_rate = set_rate
        self.remote: Any = None
        self._link: Any = None

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo:
        from edge_runtime.transport.remote import MqttLink

        self.close()
        self.remote = self.connect()
        self._link = MqttLink(self.remote)
        return self._link.open(prompt, sampling, vocab_size, vocab_hash)

    def channel_view(self) -> ChannelView | None:
        if self.set_rate is not None:
            self.set_rate(self.schedule.channel.rate_bps)
        return self.schedule.view()

    def submit(self, draft: DraftRound) -> None:
        if self._link is None:
            raise RuntimeError("open() first")
        self.schedule.begin_round()
        self._link.submit(draft)

    def poll(self) -> Verdict | None:
        verdict = self._link.poll()
        return None if verdict is None else self._deliver(verdict)

    def wait(self) -> Verdict:
        return self._deliver(self._link.wait())

    def _deliver(self, verdict: Verdict) -> Verdict:
        self.schedule.end_round()
        return dataclasses.replace(verdict, downlink_bits=FEEDBACK_BITS)

    def close(self) -> None:
        if self.remote is not None:
            self.remote.disconnect()
            self.remote = self._link = None


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
        self.prompts = [[int(t) for t in p] for p in prompts]
        self.vocab_hash = bytes(vocab_hash)
        self.seed = seed
        self.schedule = ChannelSchedule(channel, channel_known)
        self.drafter = Drafter(slm, DraftConfig(ell=240, temperature=temperature, mode=QS, stop_at_eos=False),
                               seed=seed)
        self.link = NetLink(connect, self.schedule, set_rate)

    @property
    def remote(self) -> Any:
        return self.link.remote

    def close(self) -> None:
        self.link.close()

    def begin(self, seq: int) -> Episode:
        if not 0 <= seq < len(self.prompts):
            raise ValueError(f"no prompt {seq} (have {len(self.prompts)})")
        return Episode(self.drafter, self.link, self.prompts[seq], self.schedule, seed=self.seed + seq,
                       vocab_hash=self.vocab_hash)

    def channel_view(self) -> ChannelView | None:
        return self.schedule.view()
