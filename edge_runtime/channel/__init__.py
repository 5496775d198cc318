"""The board's view of the uplink: an online estimator of rate and delay from the rounds it has seen."""

from .estimator import ChannelEstimator

__all__ = ["ChannelEstimator"]
