"""The controller interface shared by static, model-based and learned policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .types import ChannelView, Decision, RoundObservation


class Controller(ABC):
    """Per round: ``choose`` → drafter drafts up to ``max_draft`` tokens at resolution ``ell``, asking
    ``should_continue(confidence, position)`` after each drafted token (position = tokens drafted so far, 1-based;
    False stops the round early) → the round runs → ``observe`` with what came back.

    ``choose`` gets a ChannelView when the executor knows the coming round's channel (the paper's DQN state
    includes the uplink state); ``None`` means the controller must rely on its own estimate.
    """

    name: str = "controller"

    @abstractmethod
    def choose(self, channel: ChannelView | None = None) -> Decision: ...

    def should_continue(self, confidence: float, position: int) -> bool:
        return True

    def observe(self, obs: RoundObservation) -> None:  # noqa: B027 - optional hook
        """Learn from a finished round (default: nothing)."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """A new sequence starts (per-sequence state only; learned parameters persist)."""

    def set_verifier_costs(self, pass_s: Sequence[float], precision: str = "") -> None:  # noqa: B027 - optional
        """The verifier's measured cost of one pass over n = 1, 2, … tokens (seconds), from the OPEN reply
        (default: ignored; the model-based controller predicts verification time from it)."""


class StaticController(Controller):
    """Fixed (L, ℓ), never stops early: the paper's baselines (3, 240) and (4, 240)."""

    def __init__(self, length: int, ell: int) -> None:
        self.decision = Decision(length, ell)
        self.name = f"static({length},{ell})"

    def choose(self, channel: ChannelView | None = None) -> Decision:
        return self.decision
