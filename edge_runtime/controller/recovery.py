"""Acceptance after a rejection: a calibration of α̂ by the number of tokens committed since the last rejection.

On the real Qwen pair, the drafts right after a rejected round are accepted far less often than elsewhere: the round's
last token was then drawn from the residual norm(max(p − q̂, 0)), a token the draft model did not expect, and the text
stays hard for it for a few tokens. static(4,240), 20 BBC prompts (``qsv experiment recovery
experiment_out/link_s4``): the first draft after a rejection was accepted in 68 % of the rounds, after a fully
accepted round in 90 %; with s = tokens committed since the last rejection, the acceptance was 0.67, 0.69, 0.74 and
0.87 for s = 0..3 and 0.94 for s ≥ 10 (docs/CONTROLLER.md).

``RecoveryModel`` learns one factor per bucket of s, f(s) = E[α] / E[α̂(c)] over the positions seen in that bucket,
and the controller predicts α̂(c, s) = α̂(c)·f(s). One scalar per bucket, pooled over ℓ and confidence, learns in a few
rounds; a bucket with n samples is shrunk toward 1 with ``prior_weight`` pseudo-samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .estimators import Ewma
from .types import ControllerError

# Bucket b holds s in [EDGES[b-1], EDGES[b]): 0, 1, 2, 3, 4–5, 6–9, 10+.
DEFAULT_RECOVERY_EDGES: tuple[int, ...] = (1, 2, 3, 4, 6, 10)


class RecoveryModel:
    """Per-bucket factor f(s) on the acceptance estimate, s = tokens committed since the last rejection."""

    def __init__(self, edges: Sequence[int] = DEFAULT_RECOVERY_EDGES, alpha: float = 0.02, prior_weight: float = 8.0,
                 bounds: tuple[float, float] = (0.25, 1.5)) -> None:
        e = np.asarray(edges, dtype=np.int64)
        if e.ndim != 1 or e.size < 1 or e[0] < 1 or np.any(np.diff(e) <= 0):
            raise ControllerError("recovery bucket edges must be increasing positive integers")
        if prior_weight < 0 or not 0 < bounds[0] <= 1 <= bounds[1]:
            raise ControllerError("need prior_weight >= 0 and bounds lo <= 1 <= hi")
        self.edges = e
        self.prior_weight = prior_weight
        self.bounds = bounds
        self._observed = [Ewma(alpha) for _ in range(e.size + 1)]
        self._predicted = [Ewma(alpha) for _ in range(e.size + 1)]

    def bucket(self, since: int) -> int:
        if since < 0:
            raise ControllerError(f"tokens since the last rejection must be >= 0, got {since}")
        return int(np.searchsorted(self.edges, since, side="right"))

    def factor(self, since: int) -> float:
        """f(s): observed / predicted acceptance in s's bucket, shrunk toward 1, clipped to ``bounds``."""
        b = self.bucket(since)
        obs, pred = self._observed[b], self._predicted[b]
        if not obs.ready or pred.value <= 0:
            return 1.0
        n = min(obs.count, 1.0 / obs.alpha)
        ratio = obs.value / pred.value
        f = (n * ratio + self.prior_weight) / (n + self.prior_weight)
        return float(np.clip(f, *self.bounds))

    def update(self, since: int, predicted: Sequence[float], observed: Sequence[float]) -> None:
        """One round: position j (0-based) was drafted s = ``since`` + j tokens after the last rejection; its
        acceptance was predicted (without this factor) and then observed (the verifier's α_j or the 0/1 outcome).
        Pass only positions the round actually reached in sequence: up to and including the first rejection."""
        if len(predicted) != len(observed):
            raise ControllerError("predicted and observed acceptance need one value per position")
        for j, (p, o) in enumerate(zip(predicted, observed, strict=True)):
            if not (0.0 <= p <= 1.0 and 0.0 <= o <= 1.0):
                raise ControllerError(f"acceptance values must lie in [0, 1], got {p}, {o}")
            b = self.bucket(since + j)
            self._observed[b].update(float(o))
            self._predicted[b].update(float(p))

    def table(self) -> list[tuple[str, float, float]]:
        """(bucket label, factor, samples) for reporting."""
        lows = [0, *self.edges.tolist()]
        rows = []
        for b, lo in enumerate(lows):
            hi = self.edges[b] - 1 if b < self.edges.size else None
            label = f"{lo}" if hi == lo else (f"{lo}-{hi}" if hi is not None else f"{lo}+")
            rows.append((label, self.factor(lo), self._observed[b].count))
        return rows


def since_after_round(since: int, drafted: int, accepted: int) -> int:
    """Tokens since the last rejection after a round: 0 if it ended in a rejection (its last token is the correction
    drawn from the residual), else ``since`` + the accepted drafts + the bonus token."""
    return 0 if accepted < drafted else since + accepted + 1
