"""The speculative-decoding throughput formulas shared by the board's controller and the verifier's calibration
(both sides need them; neither owns them)."""

from __future__ import annotations

from collections.abc import Sequence


def expected_tokens_iid(alpha: float, length: int) -> float:
    """E[tokens per round] = (1 − α^{L+1}) / (1 − α) for i.i.d. acceptance α and L drafts."""
    if alpha >= 1.0:
        return float(length + 1)
    return (1.0 - alpha ** (length + 1)) / (1.0 - alpha)


def pass_cost(costs: Sequence[float], tokens: float) -> float:
    """c(n) from measured costs c(1), c(2), …: linear between them, beyond the last one extrapolated with the last
    slope (never negative; a single point extrapolates as c(1) per token)."""
    n = max(1.0, tokens)
    last = len(costs)
    if n >= last:
        slope = costs[-1] - costs[-2] if last > 1 else costs[0]
        return costs[-1] + max(slope, 0.0) * (n - last)
    lo = int(n)
    frac = n - lo
    return costs[lo - 1] * (1 - frac) + costs[lo] * frac
