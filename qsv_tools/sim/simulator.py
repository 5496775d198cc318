"""Round simulator: the round engine (edge_runtime.engine) with simulated roles. The drafter replays a trace's
per-position confidences (:class:`TraceDrafter`), the verifier link draws each round's acceptances from the trace's
α = min(1, p/q̂) and delivers the verdict after the simulated uplink, RTT, verification and downlink
(:class:`TraceLink`); compute times come from a timing profile (optionally calibrated from measured rounds), the
uplink from a Markov link model, and the engine reads the simulated clock (:class:`SimClock`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.controller.bits import uplink_bits_per_token
from edge_runtime.controller.estimators import AffineFit
from edge_runtime.controller.types import ChannelView
from edge_runtime.drafter import DraftConfig, DraftRound, SpeculationStats
from edge_runtime.engine import Verdict, VerifierInfo
from qsv_tools.channel.markov import MarkovChannel
from qsv_wire.protocol import SamplingParams

from .episode import ChannelSchedule, Episode
from .trace import SequenceTrace, TraceError, TraceSet


@dataclass(frozen=True)
class TimingProfile:
    """Compute times (seconds) and message overheads of one edge/cloud pair.

    ``jitter``: relative standard deviation (log-normal) applied to every compute time.
    """

    draft_per_token_s: float
    verify_intercept_s: float
    verify_per_token_s: float
    jitter: float = 0.05
    header_bits: int = 8 * 48
    downlink_bits: int = 8 * 40
    name: str = "custom"

    @property
    def target_token_s(self) -> float:
        """One target forward pass producing one token (the target-alone baseline)."""
        return self.verify_intercept_s + self.verify_per_token_s

    @classmethod
    def from_rounds(cls, rounds: Sequence[dict], name: str = "calibrated", **kw: object) -> TimingProfile:
        """Fit from measured round records (draft_s / L, and verify_s affine in L)."""
        if not rounds:
            raise TraceError("no round records to calibrate from")
        fit = AffineFit(0.0, 0.0, window=max(2, len(rounds)))
        for r in rounds:
            fit.update(float(r["L"]), float(r["verify_s"]))
        a, b = fit.coefficients()
        draft = float(np.mean([r["draft_s"] / r["L"] for r in rounds]))
        return cls(draft, max(a, 0.0), max(b, 0.0), name=name, **kw)  # type: ignore[arg-type]


# A cloud GPU verifier with a GPU-class drafter, close to the paper's setup (≈ 57 tok/s at (3, 240), 4 Mbps).
PROFILES: dict[str, TimingProfile] = {
    "paper-gpu": TimingProfile(0.004, 0.032, 0.0015, name="paper-gpu"),
    # An ARM board drafting on CPU (tens of ms per draft token) against a cloud GPU verifier.
    "edge-board": TimingProfile(0.025, 0.035, 0.0015, name="edge-board"),
}


class SimClock:
    """Simulated seconds: the roles advance it by the times they simulate; the engine reads it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _jittered(rng: np.random.Generator, seconds: float, jitter: float) -> float:
    return seconds * float(np.exp(jitter * rng.standard_normal() - 0.5 * jitter * jitter)) if jitter > 0 else seconds


@dataclass(frozen=True)
class _TraceVocabulary:
    vocab_size: int
    eos_token_ids: tuple[int, ...] = ()


class TraceDrafter:
    """The drafter role replayed from a trace: a round starting at position t drafts contexts t, t+1, … with the
    trace's confidences q(x) at the round's ℓ, asking the controller's early-stop rule after each token but the
    last; drafting takes the profile's time per token on the simulated clock. Traces hold no token ids: the tokens
    are placeholders (0) and the replay follows positions. No pre-drafting."""

    def __init__(self, traces: TraceSet, timing: TimingProfile, clock: SimClock, rng: np.random.Generator,
                 scheme: str = "qs") -> None:
        self.config = DraftConfig(mode=scheme, stop_at_eos=False)  # ℓ: each round's, from the controller
        self.slm = _TraceVocabulary(traces.vocab_size)
        self.speculation = SpeculationStats()
        self.forward_seconds = 0.0
        self.timing = timing
        self.clock = clock
        self.rng = rng
        self.sequence: SequenceTrace | None = None
        self.pos = 0  # committed tokens of the sequence
        self._rounds = 0
        self._pending: DraftRound | None = None

    def start(self, prompt_ids: Sequence[int]) -> None:
        if self.sequence is None:
            raise TraceError("no trace sequence selected")
        self.pos, self._rounds, self._pending = 0, 0, None

    def draft(self, length: int, config: DraftConfig | None = None,
              should_continue: Callable[[float, int], bool] | None = None) -> DraftRound:
        seq, config = self.sequence, config or self.config
        assert seq is not None
        column = seq.confidences(config.mode, config.ell)
        confs = [float(c) for c in column[self.pos:self.pos + length]]
        for i in range(len(confs) - 1):  # the controller's per-token early stop
            if should_continue is not None and not should_continue(confs[i], i + 1):
                del confs[i + 1:]
                break
        if not confs:
            raise TraceError(f"sequence {seq.seq} has only {len(seq)} contexts; generate longer traces")
        n = len(confs)
        draft_s = sum(_jittered(self.rng, self.timing.draft_per_token_s, self.timing.jitter) for _ in range(n))
        self.clock.advance(draft_s)
        record = DraftRound([0] * n, [], config.ell, config.mode, confidences=confs, index=self._rounds,
                            slm_seconds=draft_s, stopped_early=n < min(length, len(seq) - self.pos))
        self._rounds += 1
        self._pending = record
        return record

    def speculate(self, max_tokens: int, config: DraftConfig | None = None) -> bool:
        return False

    def feedback(self, accepted: int, next_token: int) -> list[int]:
        record, self._pending = self._pending, None
        if record is None or not 0 <= accepted <= record.length:
            raise TraceError("feedback without a matching drafted round")
        self.pos += accepted + 1
        return record.tokens[:accepted] + [int(next_token)]


class TraceLink:
    """The verifier link of the simulator: the verifier holds the same trace, accepts draft i with probability
    α_i = min(1, p(x)/q̂(x)) (first rejection ends the round), and its verdict arrives after uplink bits / the
    channel's current rate + RTT + verification (profile, jittered) + downlink bits / downlink rate."""

    def __init__(self, traces: TraceSet, schedule: ChannelSchedule, timing: TimingProfile, clock: SimClock,
                 rng: np.random.Generator) -> None:
        self.traces = traces
        self.schedule = schedule
        self.timing = timing
        self.clock = clock
        self.rng = rng
        self.sequence: SequenceTrace | None = None
        self.pos = 0
        self._verdict: Verdict | None = None
        self._due = 0.0

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo:
        self.pos, self._verdict = 0, None
        return VerifierInfo()

    def channel_view(self) -> ChannelView | None:
        return self.schedule.view()

    def submit(self, draft: DraftRound) -> None:
        seq, t = self.sequence, self.timing
        assert seq is not None
        n = draft.length
        _, rate = self.schedule.begin_round()
        alphas = seq.alphas(draft.mode, draft.ell)[self.pos:self.pos + n]
        rejected = np.flatnonzero(self.rng.random(n) >= alphas)
        accepted = int(rejected[0]) if rejected.size else n
        verify_s = _jittered(self.rng, t.verify_intercept_s + t.verify_per_token_s * n, t.jitter)
        bits = t.header_bits + n * uplink_bits_per_token(self.traces.vocab_size, draft.ell)
        spec = self.schedule.channel.spec
        self._due = self.clock() + bits / rate + spec.rtt_s + verify_s + t.downlink_bits / spec.downlink_bps
        self._verdict = Verdict(accepted, 0, verify_s, tuple(float(a) for a in alphas), t.downlink_bits, bits)

    def poll(self) -> Verdict | None:
        return self.wait() if self._verdict is not None and self.clock() >= self._due else None

    def wait(self) -> Verdict:
        verdict, self._verdict = self._verdict, None
        if verdict is None:
            raise TraceError("no round in flight")
        self.clock.advance(max(0.0, self._due - self.clock()))
        self.pos += verdict.accepted + 1
        self.schedule.end_round()
        return verdict


class SimRoundExecutor:
    """The simulated roles over a trace set; one instance per (policy, scenario) run, seeded (one generator for the
    drafting jitter, the acceptance draws and the verification jitter)."""

    def __init__(
        self,
        traces: TraceSet,
        channel: MarkovChannel,
        timing: TimingProfile,
        scheme: str = "qs",
        channel_known: bool = True,
        seed: int = 0,
    ) -> None:
        if scheme not in ("qs", "sq"):
            raise ValueError(f"scheme must be 'qs' or 'sq', got {scheme!r}")
        self.traces = traces
        self.channel = channel
        self.timing = timing
        self.scheme = scheme
        self.schedule = ChannelSchedule(channel, channel_known)
        self.clock = SimClock()
        rng = np.random.default_rng(seed)
        self.drafter = TraceDrafter(traces, timing, self.clock, rng, scheme)
        self.link = TraceLink(traces, self.schedule, timing, self.clock, rng)
        self._seq_index = {s.seq: i for i, s in enumerate(traces.sequences)}

    @property
    def pos(self) -> int:
        """Tokens committed in the current sequence (the position the next round drafts from)."""
        return self.drafter.pos

    def begin(self, seq: int) -> Episode:
        try:
            sequence = self.traces.sequences[self._seq_index[seq]]
        except KeyError:
            raise TraceError(f"trace has no sequence {seq}") from None
        self.drafter.sequence = self.link.sequence = sequence
        return Episode(self.drafter, self.link, [0], self.schedule, clock=self.clock)

    def channel_view(self) -> ChannelView | None:
        return self.schedule.view()


def target_alone_time(timing: TimingProfile, tokens: int, rtt_s: float = 0.0) -> float:
    """Cloud generates all tokens autoregressively and streams them down (one RTT to start)."""
    return rtt_s + tokens * timing.target_token_s
