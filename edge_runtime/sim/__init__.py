"""Fast simulation of speculative rounds from traces, for comparing controllers and training the DDQN."""

from .loop import EpisodeResult, RoundExecutor, RoundResult, run_episode
from .simulator import PROFILES, SimRoundExecutor, TimingProfile, target_alone_time
from .synthetic import SyntheticSpec, generate_traces
from .trace import SequenceTrace, TraceError, TraceSet

__all__ = [
    "EpisodeResult",
    "PROFILES",
    "RoundExecutor",
    "RoundResult",
    "SequenceTrace",
    "SimRoundExecutor",
    "SyntheticSpec",
    "TimingProfile",
    "TraceError",
    "TraceSet",
    "generate_traces",
    "run_episode",
    "target_alone_time",
]
