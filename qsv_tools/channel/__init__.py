"""Link models for experiments: the paper's two-state Markov channel in process, and tc/netem shaping in namespaces."""

from .markov import PAPER_4MBPS, PAPER_350KBPS, SCENARIOS, MarkovChannel, MarkovChannelSpec, symmetric_two_state

__all__ = [
    "MarkovChannel",
    "MarkovChannelSpec",
    "PAPER_350KBPS",
    "PAPER_4MBPS",
    "SCENARIOS",
    "symmetric_two_state",
]
