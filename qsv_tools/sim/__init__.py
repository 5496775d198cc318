"""Fast simulation of speculative rounds from traces, for comparing controllers and training the DDQN: the round
engine (edge_runtime.engine) with simulated roles (qsv_tools.sim.simulator), episodes in qsv_tools.sim.episode."""

from .episode import ChannelSchedule, Episode, EpisodeResult, RoundExecutor, RoundResult, run_episode
from .simulator import PROFILES, SimClock, SimRoundExecutor, TimingProfile, TraceDrafter, TraceLink, target_alone_time
from .synthetic import SyntheticSpec, generate_traces
from .trace import SequenceTrace, TraceError, TraceSet

__all__ = [
    "ChannelSchedule",
    "Episode",
    "EpisodeResult",
    "PROFILES",
    "RoundExecutor",
    "RoundResult",
    "SequenceTrace",
    "SimClock",
    "SimRoundExecutor",
    "SyntheticSpec",
    "TimingProfile",
    "TraceDrafter",
    "TraceError",
    "TraceLink",
    "TraceSet",
    "generate_traces",
    "run_episode",
    "target_alone_time",
]
