"""Round-level controllers choosing the draft length L and quantizer resolution ℓ (and stopping drafts early)."""

from .base import Controller, StaticController
from .model import AcceptanceModel, ThroughputModel, TimingModel, TimingPriors, expected_tokens
from .model_based import ModelBasedController
from .types import ChannelView, ControllerError, Decision, RoundObservation

__all__ = [
    "AcceptanceModel",
    "ChannelView",
    "Controller",
    "ControllerError",
    "Decision",
    "ModelBasedController",
    "RoundObservation",
    "StaticController",
    "ThroughputModel",
    "TimingModel",
    "TimingPriors",
    "expected_tokens",
]
