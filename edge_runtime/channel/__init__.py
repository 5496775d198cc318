"""Uplink channel: online estimator, in-process Markov link model, and real tc/netem shaping in namespaces."""

from .estimator import ChannelEstimator
from .markov import PAPER_4MBPS, PAPER_350KBPS, SCENARIOS, MarkovChannel, MarkovChannelSpec, symmetric_two_state

__all__ = [
    "ChannelEstimator",
    "MarkovChannel",
    "MarkovChannelSpec",
    "PAPER_350KBPS",
    "PAPER_4MBPS",
    "SCENARIOS",
    "symmetric_two_state",
]
