"""The generation loop shared by the simulator and (later) the real edge/verifier pair: a controller drives a
``RoundExecutor`` until ``max_new_tokens`` are produced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge_runtime.controller.base import Controller
from edge_runtime.controller.types import ChannelView, Decision, RoundObservation


@dataclass(frozen=True)
class RoundResult:
    """What one executed round produced: the controller's observation plus ground truth for reporting."""

    observation: RoundObservation
    emitted: int  # accepted drafts + the corrected/bonus token
    round_time_s: float  # drafting + send→feedback
    channel_state: int | None = None
    uplink_rate_bps: float | None = None


class RoundExecutor(Protocol):
    """One speculative round end to end. Implementations: ``SimRoundExecutor`` (edge_runtime.sim.simulator); a real
    executor wraps the drafter, the transport over the (shaped) link and the cloud verifier."""

    def begin(self, seq: int) -> None:
        """Start a new sequence (prompt) ``seq``."""

    def channel_view(self) -> ChannelView | None:
        """The coming round's channel when the executor knows it (paper setting), else None."""

    def execute(self, decision: Decision, should_continue: Callable[[float, int], bool]) -> RoundResult:
        """Draft up to decision.max_draft tokens (asking should_continue after each), send, verify, return."""


@dataclass
class EpisodeResult:
    seq: int
    policy: str
    rounds: list[RoundResult] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.emitted for r in self.rounds)

    @property
    def time_s(self) -> float:
        return sum(r.round_time_s for r in self.rounds)

    @property
    def throughput(self) -> float:
        return self.tokens / self.time_s if self.time_s > 0 else 0.0

    @property
    def uplink_bits(self) -> int:
        return sum(r.observation.uplink_bits for r in self.rounds)


def run_episode(
    controller: Controller,
    executor: RoundExecutor,
    seq: int,
    max_new_tokens: int,
    on_round: Callable[[Decision, RoundResult], None] | None = None,
) -> EpisodeResult:
    """Generate ``max_new_tokens`` tokens for sequence ``seq`` (the last round may overshoot; the extra tokens are
    counted, as a real run would have produced them)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    controller.reset()
    executor.begin(seq)
    ep = EpisodeResult(seq, controller.name)
    while ep.tokens < max_new_tokens:
        decision = controller.choose(executor.channel_view())
        res = executor.execute(decision, controller.should_continue)
        controller.observe(res.observation)
        ep.rounds.append(res)
        ep.decisions.append(decision)
        if on_round is not None:
            on_round(decision, res)
    return ep
