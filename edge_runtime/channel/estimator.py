"""Online estimate of uplink seconds-per-bit and RTT from message timings.

Per round the edge knows the request size (bits), the send→feedback wall time and the verifier's reported compute
time; the network part t_net = elapsed − verify ≈ RTT + bits·s_round (+ small downlink). With a rate that changes
from round to round, the quantity that predicts upload time is E[s] (mean seconds per bit), estimated here; RTT
comes from explicit small-message probes when available (windowed minimum), else from the intercept of a
regression of t_net on bits once sizes vary, else from the prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edge_runtime.controller.estimators import AffineFit, Ewma, WindowedMin
from edge_runtime.controller.types import ChannelView, ControllerError


class ChannelEstimator:
    def __init__(
        self,
        prior_rate_bps: float = 4e6,
        prior_rtt_s: float = 0.02,
        alpha: float = 0.1,
        window: int = 32,
        fit_window: int = 512,
        state_rates_bps: Sequence[float] | None = None,
    ) -> None:
        if not prior_rate_bps > 0 or prior_rtt_s < 0:
            raise ControllerError("prior rate must be positive and prior RTT non-negative")
        self.prior_rtt_s = prior_rtt_s
        self.sec_per_bit = Ewma(alpha, prior=1.0 / prior_rate_bps, prior_weight=1.0)
        self.last_sec_per_bit = 1.0 / prior_rate_bps
        self._probe_rtt = WindowedMin(window)
        self._fit = AffineFit(prior_rtt_s, 1.0 / prior_rate_bps, window=fit_window)
        self.state_rates_bps = tuple(state_rates_bps) if state_rates_bps else None
        self.rounds = 0

    def observe_probe(self, rtt_s: float) -> None:
        """A round-trip time of a tiny message (ping over the same transport)."""
        if not rtt_s >= 0 or not math.isfinite(rtt_s):
            raise ControllerError(f"invalid RTT sample {rtt_s}")
        self._probe_rtt.update(rtt_s)

    def rtt_s(self) -> float:
        if self._probe_rtt.ready:
            return self._probe_rtt.get(self.prior_rtt_s)
        if self._fit.count >= 8:
            xs = list(self._fit._xs)
            if max(xs) > 1.5 * min(xs):
                return max(0.0, self._fit.coefficients()[0])
        return self.prior_rtt_s

    def observe_round(self, uplink_bits: int, elapsed_s: float, verify_s: float) -> None:
        if uplink_bits <= 0 or not elapsed_s >= 0 or not verify_s >= 0:
            raise ControllerError("need uplink_bits > 0, elapsed_s >= 0, verify_s >= 0")
        t_net = max(0.0, elapsed_s - verify_s)
        self._fit.update(float(uplink_bits), t_net)
        self.rounds += 1
        spb = max(t_net - self.rtt_s(), 0.0) / uplink_bits
        spb = max(spb, 1e-10)  # below 10 Gbit/s is noise in the RTT estimate
        self.last_sec_per_bit = spb
        self.sec_per_bit.update(spb)

    def state_of(self, sec_per_bit: float) -> int | None:
        """Nearest known state (by rate, in log scale) for a measured seconds-per-bit."""
        if not self.state_rates_bps:
            return None
        r = 1.0 / sec_per_bit
        return min(range(len(self.state_rates_bps)), key=lambda i: abs(math.log(self.state_rates_bps[i] / r)))

    def view(self, use_last: bool = False) -> ChannelView:
        """Expected channel for the next round (``use_last``: assume the last round's rate persists)."""
        spb = self.last_sec_per_bit if use_last else self.sec_per_bit.value
        return ChannelView(sec_per_bit=spb, rtt_s=self.rtt_s(), state=self.state_of(self.last_sec_per_bit))
