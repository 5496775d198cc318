"""Round-level controllers choosing the draft length L and quantizer resolution ℓ (and stopping drafts early)."""

from .base import Controller, StaticController
from .ddqn_policy import DdqnPolicy, OnnxDdqnController, load_policy
from .model import AcceptanceModel, ThroughputModel, TimingModel, TimingPriors, expected_tokens
from .model_based import ModelBasedController
from .types import ChannelView, ControllerError, Decision, RoundObservation

__all__ = [
    "AcceptanceModel",
    "ChannelView",
    "Controller",
    "ControllerError",
    "DdqnPolicy",
    "Decision",
    "ModelBasedController",
    "OnnxDdqnController",
    "RoundObservation",
    "StaticController",
    "ThroughputModel",
    "TimingModel",
    "TimingPriors",
    "expected_tokens",
    "load_policy",
]
