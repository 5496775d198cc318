"""Small online estimators used by the throughput model and the channel estimator."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from qsv_wire.throughput import pass_cost

from .types import ControllerError


class Ewma:
    """Exponentially weighted mean that starts as a plain running mean.

    The weight of a new sample is max(1/n, ``alpha``): the first samples are averaged equally (no bias toward the
    prior), later ones are forgotten with time constant ≈ 1/alpha samples. ``prior``/``prior_weight`` act as
    pseudo-samples.
    """

    def __init__(self, alpha: float = 0.1, prior: float | None = None, prior_weight: float = 1.0) -> None:
        if not 0 < alpha <= 1:
            raise ControllerError(f"EWMA alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.count = 0.0
        self.value = math.nan
        if prior is not None:
            self.value = float(prior)
            self.count = float(prior_weight)

    def update(self, x: float) -> float:
        if not math.isfinite(x):
            raise ControllerError(f"EWMA sample must be finite, got {x}")
        self.count += 1.0
        w = max(1.0 / self.count, self.alpha)
        self.value = x if math.isnan(self.value) else self.value + w * (x - self.value)
        return self.value

    @property
    def ready(self) -> bool:
        return not math.isnan(self.value)

    def get(self, default: float) -> float:
        return default if math.isnan(self.value) else self.value


class AffineFit:
    """Windowed least-squares fit y ≈ intercept + slope·x over the last ``window`` samples.

    Before there are two distinct x values the slope is ``prior_slope`` and the intercept is chosen to match the
    mean of what was seen (or ``prior_intercept`` with no data).
    """

    def __init__(self, prior_intercept: float, prior_slope: float, window: int = 256) -> None:
        if window < 2:
            raise ControllerError("AffineFit window must be >= 2")
        self.prior_intercept = float(prior_intercept)
        self.prior_slope = float(prior_slope)
        self._xs: deque[float] = deque(maxlen=window)
        self._ys: deque[float] = deque(maxlen=window)
        self._cache: tuple[float, float] | None = None

    def update(self, x: float, y: float) -> None:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ControllerError("AffineFit samples must be finite")
        self._xs.append(float(x))
        self._ys.append(float(y))
        self._cache = None

    @property
    def count(self) -> int:
        return len(self._xs)

    def coefficients(self) -> tuple[float, float]:
        """(intercept, slope)."""
        if self._cache is not None:
            return self._cache
        if not self._xs:
            return self.prior_intercept, self.prior_slope
        xs = np.fromiter(self._xs, dtype=np.float64)
        ys = np.fromiter(self._ys, dtype=np.float64)
        xm, ym = xs.mean(), ys.mean()
        sxx = float(((xs - xm) ** 2).sum())
        if sxx < 1e-12 * max(1.0, xm * xm) * xs.size:
            slope = self.prior_slope
        else:
            slope = float(((xs - xm) * (ys - ym)).sum() / sxx)
        self._cache = (float(ym - slope * xm), slope)
        return self._cache

    def predict(self, x: float) -> float:
        a, b = self.coefficients()
        return a + b * x


class CurveFit:
    """Verification time for L drafts from the verifier's measured pass-cost curve: t(L) ≈ k · c(L + 1).

    ``pass_s[n - 1]`` is the cost of one target pass over n tokens as the verifier measured it at start
    (cloud_verifier.calibration; sent in the OPEN reply). The curve's shape is kept (fp32 on a CPU grows steeply with
    n, bf16 and int8 stay nearly flat) and only its scale k is learned: an EWMA of observed / predicted, so a loaded
    or batching verifier is followed without losing the shape. Same interface as ``AffineFit``; ``coefficients``
    gives the least-squares line through the scaled curve (the controller's marginal cost of one more token).
    """

    def __init__(self, pass_s: Sequence[float], alpha: float = 0.1) -> None:
        costs = [float(c) for c in pass_s]
        if len(costs) < 2 or not all(math.isfinite(c) and c > 0 for c in costs):
            raise ControllerError("a pass-cost curve needs >= 2 positive finite costs")
        self.pass_s = costs
        self.scale = Ewma(alpha, prior=1.0, prior_weight=1.0)

    def _cost(self, tokens: float) -> float:
        return pass_cost(self.pass_s, tokens)

    def update(self, x: float, y: float) -> None:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ControllerError("CurveFit samples must be finite")
        if y > 0:
            self.scale.update(y / self._cost(x + 1))

    def predict(self, x: float) -> float:
        return self.scale.value * self._cost(x + 1)

    def coefficients(self) -> tuple[float, float]:
        xs = np.arange(1, len(self.pass_s), dtype=np.float64)
        ys = np.array([self.predict(x) for x in xs])
        slope, intercept = np.polyfit(xs, ys, 1)
        return float(intercept), float(slope)


class WindowedMin:
    """Minimum over the last ``window`` samples (a standard RTT estimator: queueing only adds delay)."""

    def __init__(self, window: int = 32) -> None:
        self._vals: deque[float] = deque(maxlen=window)

    def update(self, x: float) -> None:
        self._vals.append(float(x))

    @property
    def ready(self) -> bool:
        return bool(self._vals)

    def get(self, default: float) -> float:
        return min(self._vals) if self._vals else default
