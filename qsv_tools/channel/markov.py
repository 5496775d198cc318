"""In-process uplink model: a finite-state Markov chain over rates, redrawn once per round (as in the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_runtime.controller.types import ChannelView


class ChannelConfigError(ValueError):
    """Invalid channel model parameters."""


@dataclass(frozen=True)
class MarkovChannelSpec:
    """States with rates in bit/s, a row-stochastic transition matrix, a fixed RTT and a downlink rate."""

    rates_bps: tuple[float, ...]
    transitions: tuple[tuple[float, ...], ...]
    rtt_s: float = 0.0
    downlink_bps: float = 20e6
    name: str = "markov"

    def __post_init__(self) -> None:
        k = len(self.rates_bps)
        if k < 1 or any(not r > 0 for r in self.rates_bps):
            raise ChannelConfigError("need at least one state and positive rates")
        p = np.asarray(self.transitions, dtype=np.float64)
        if p.shape != (k, k) or np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0):
            raise ChannelConfigError(f"transitions must be a {k}x{k} row-stochastic matrix")
        if self.rtt_s < 0 or not self.downlink_bps > 0:
            raise ChannelConfigError("rtt_s must be >= 0 and downlink_bps > 0")

    @property
    def stationary(self) -> np.ndarray:
        p = np.asarray(self.transitions, dtype=np.float64)
        w, v = np.linalg.eig(p.T)
        pi = np.real(v[:, int(np.argmin(np.abs(w - 1.0)))])
        return pi / pi.sum()

    @property
    def mean_rate_bps(self) -> float:
        return float(self.stationary @ np.asarray(self.rates_bps))

    @property
    def mean_sec_per_bit(self) -> float:
        return float(self.stationary @ (1.0 / np.asarray(self.rates_bps)))


def symmetric_two_state(low_bps: float, high_bps: float, switch_p: float = 0.5, **kw: object) -> MarkovChannelSpec:
    q = 1.0 - switch_p
    return MarkovChannelSpec((low_bps, high_bps), ((q, switch_p), (switch_p, q)), **kw)  # type: ignore[arg-type]


# The paper's conditions: 2/6 Mbps (mean 4 Mbps) and a low-rate one at about 350 kbps mean.
PAPER_4MBPS = symmetric_two_state(2e6, 6e6, name="markov-4mbps")
PAPER_350KBPS = symmetric_two_state(175e3, 525e3, name="markov-350kbps")
SCENARIOS: dict[str, MarkovChannelSpec] = {"4mbps": PAPER_4MBPS, "350kbps": PAPER_350KBPS}


class MarkovChannel:
    """Seeded sampler of the per-round uplink state."""

    def __init__(self, spec: MarkovChannelSpec, seed: int = 0, initial_state: int | None = None) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(seed)
        self._p = np.asarray(spec.transitions, dtype=np.float64)
        self._cum = np.cumsum(self._p, axis=1)
        k = len(spec.rates_bps)
        self.state = int(self._rng.choice(k, p=spec.stationary)) if initial_state is None else int(initial_state)
        if not 0 <= self.state < k:
            raise ChannelConfigError(f"initial_state {initial_state} out of range")

    def step(self) -> int:
        """Redraw the state for the next round; returns it."""
        row = self._cum[self.state]
        self.state = min(int(np.searchsorted(row, self._rng.random() * row[-1], side="right")), row.size - 1)
        return self.state

    @property
    def rate_bps(self) -> float:
        return self.spec.rates_bps[self.state]

    def view(self) -> ChannelView:
        """The current state as a controller sees it when the channel is known (the paper's setting)."""
        from edge_runtime.controller.types import ChannelView

        spec = self.spec
        return ChannelView(1.0 / self.rate_bps, spec.rtt_s, self.state, 1.0 / spec.downlink_bps)

    def states(self, rounds: int) -> Sequence[int]:
        return [self.step() for _ in range(rounds)]
