"""Round simulator: draft tokens come from a trace, the uplink from a Markov link model, compute times from a
timing profile (optionally calibrated from measured rounds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.channel.markov import MarkovChannel
from edge_runtime.controller.bits import uplink_bits_per_token
from edge_runtime.controller.estimators import AffineFit
from edge_runtime.controller.types import ChannelView, Decision, RoundObservation

from .loop import RoundResult
from .trace import TraceError, TraceSet


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


class SimRoundExecutor:
    """Executes rounds against a trace; one instance per (policy, scenario) run, seeded."""

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
        self.channel_known = channel_known
        self._rng = np.random.default_rng(seed)
        self._seq_index = {s.seq: i for i, s in enumerate(traces.sequences)}
        self._seq = traces.sequences[0]
        self.pos = 0

    def begin(self, seq: int) -> None:
        try:
            self._seq = self.traces.sequences[self._seq_index[seq]]
        except KeyError:
            raise TraceError(f"trace has no sequence {seq}") from None
        self.pos = 0

    def channel_view(self) -> ChannelView | None:
        if not self.channel_known:
            return None
        return self.channel.view()

    def _jit(self, t: float) -> float:
        j = self.timing.jitter
        return t * float(np.exp(j * self._rng.standard_normal() - 0.5 * j * j)) if j > 0 else t

    def execute(self, decision: Decision, should_continue: Callable[[float, int], bool]) -> RoundResult:
        seq, ell = self._seq, decision.ell
        conf_col = seq.confidences(self.scheme, ell)
        alpha_col = seq.alphas(self.scheme, ell)
        n_ctx = len(seq)
        confs: list[float] = []
        for i in range(decision.max_draft):
            idx = self.pos + i
            if idx >= n_ctx:
                break
            confs.append(float(conf_col[idx]))
            if i + 1 < decision.max_draft and not should_continue(confs[-1], i + 1):
                break
        if not confs:
            raise TraceError(f"sequence {seq.seq} has only {n_ctx} contexts; generate longer traces")
        n = len(confs)
        alphas = alpha_col[self.pos:self.pos + n]
        u = self._rng.random(n)
        rejected = np.flatnonzero(u >= alphas)
        accepted = int(rejected[0]) if rejected.size else n
        t = self.timing
        draft_s = sum(self._jit(t.draft_per_token_s) for _ in range(n))
        verify_s = self._jit(t.verify_intercept_s + t.verify_per_token_s * n)
        bits = t.header_bits + n * uplink_bits_per_token(self.traces.vocab_size, ell)
        spec = self.channel.spec
        rate, state = self.channel.rate_bps, self.channel.state
        elapsed = bits / rate + spec.rtt_s + verify_s + t.downlink_bits / spec.downlink_bps
        obs = RoundObservation(
            ell=ell, confidences=confs, accepted=accepted, draft_s=draft_s, verify_s=verify_s, uplink_bits=bits,
            elapsed_s=elapsed, alphas=[float(a) for a in alphas], downlink_bits=t.downlink_bits, channel_state=state,
        )
        self.pos += accepted + 1
        self.channel.step()  # the uplink state is redrawn every round
        return RoundResult(obs, accepted + 1, draft_s + elapsed, state, rate)


def target_alone_time(timing: TimingProfile, tokens: int, rtt_s: float = 0.0) -> float:
    """Cloud generates all tokens autoregressively and streams them down (one RTT to start)."""
    return rtt_s + tokens * timing.target_token_s
