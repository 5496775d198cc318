"""Data exchanged between a round executor (edge drafter + link + cloud verifier, or the simulator) and a controller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class ControllerError(ValueError):
    """Invalid controller input or configuration."""


@dataclass(frozen=True)
class Decision:
    """What to draft next round: at most ``max_draft`` tokens, each quantized at resolution ``ell``."""

    max_draft: int
    ell: int

    def __post_init__(self) -> None:
        if self.max_draft < 1:
            raise ControllerError(f"max_draft must be >= 1, got {self.max_draft}")
        if self.ell < 1:
            raise ControllerError(f"ell must be >= 1, got {self.ell}")


@dataclass(frozen=True)
class ChannelView:
    """What a controller knows about the uplink for the coming round.

    ``sec_per_bit`` is the expected transmission time per uplink bit (the mean of 1/rate, not 1/mean rate: with a
    rate that changes every round, expected upload time is bits·E[1/R]). ``state`` is a discrete channel state
    (0 low, 1 high, ...) when one is known, as in the paper's DQN state; ``None`` otherwise.
    """

    sec_per_bit: float
    rtt_s: float
    state: int | None = None
    downlink_sec_per_bit: float = 0.0

    def __post_init__(self) -> None:
        if not self.sec_per_bit > 0:
            raise ControllerError(f"sec_per_bit must be positive, got {self.sec_per_bit}")
        if self.rtt_s < 0 or self.downlink_sec_per_bit < 0:
            raise ControllerError("rtt_s and downlink_sec_per_bit must be non-negative")

    @property
    def rate_bps(self) -> float:
        return 1.0 / self.sec_per_bit

    @classmethod
    def from_rate(cls, rate_bps: float, rtt_s: float = 0.0, state: int | None = None) -> ChannelView:
        if not rate_bps > 0:
            raise ControllerError(f"rate_bps must be positive, got {rate_bps}")
        return cls(sec_per_bit=1.0 / rate_bps, rtt_s=rtt_s, state=state)


@dataclass(frozen=True)
class RoundObservation:
    """One finished round as the edge sees it.

    ``confidences[i]`` is the drafter's q(x_{i+1}) for the i-th drafted token (so ``len(confidences)`` is the number
    of tokens actually drafted, after any early stop). ``alphas`` are the verifier's per-position acceptance
    probabilities min(1, p(x)/q̂(x)) when it reports them (all drafted positions, or at least up to the first
    rejection); ``accepted`` is the number of accepted draft tokens. Timings in seconds: ``draft_s`` whole drafting
    time, ``verify_s`` verifier compute time (reported by the cloud), ``elapsed_s`` send→feedback wall time at the
    edge (includes verify_s), ``uplink_bits`` the encoded size of the request actually sent.
    """

    ell: int
    confidences: Sequence[float]
    accepted: int
    draft_s: float
    verify_s: float
    uplink_bits: int
    elapsed_s: float | None = None
    alphas: Sequence[float] | None = None
    entropies: Sequence[float] | None = None
    downlink_bits: int = 0
    channel_state: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.confidences)
        if n < 1:
            raise ControllerError("a round drafts at least one token")
        if not 0 <= self.accepted <= n:
            raise ControllerError(f"accepted={self.accepted} outside 0..{n}")
        if self.alphas is not None and len(self.alphas) < min(n, self.accepted + 1):
            raise ControllerError("alphas must cover the drafted positions up to the first rejection")
        if self.draft_s < 0 or self.verify_s < 0 or self.uplink_bits < 0:
            raise ControllerError("timings and sizes must be non-negative")

    @property
    def drafted(self) -> int:
        return len(self.confidences)

    @classmethod
    def from_draft_round(
        cls,
        draft: Any,
        accepted: int,
        verify_s: float,
        uplink_bits: int,
        elapsed_s: float | None,
        alphas: Sequence[float] | None = None,
        downlink_bits: int = 0,
    ) -> RoundObservation:
        """From the drafter's ``DraftRound`` (confidences, entropies, ell, slm/core/stats seconds) and the verifier's
        feedback. The drafter must record stats (``DraftConfig.record_stats``) so that confidences are present."""
        confs = list(getattr(draft, "confidences", []))
        if len(confs) != len(getattr(draft, "tokens", confs)):
            raise ControllerError("draft round has no per-token confidences (enable record_stats)")
        draft_s = sum(float(getattr(draft, k, 0.0)) for k in ("slm_seconds", "core_seconds", "stats_seconds"))
        return cls(ell=int(draft.ell), confidences=confs, accepted=accepted, draft_s=draft_s,
                   verify_s=verify_s, uplink_bits=uplink_bits, elapsed_s=elapsed_s, alphas=alphas,
                   entropies=list(getattr(draft, "entropies", [])) or None, downlink_bits=downlink_bits)

    def round_record(self, seq: int) -> dict:
        """The trace's ``round`` record (qsv_tools.sim.trace) for this round."""
        return {"seq": seq, "L": self.drafted, "ell": self.ell, "accepted": self.accepted, "draft_s": self.draft_s,
                "verify_s": self.verify_s, "uplink_bits": self.uplink_bits, "elapsed_s": self.elapsed_s}
