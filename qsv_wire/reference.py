"""Pure-numpy reference of the C core (csrc/qsv_quant.c): float64 softmax, the lattice rule, Q-S sampling.

Slow (full sorts) and simple on purpose: it is the specification the C code is tested against.

* ``lattice_rule`` performs the same IEEE double operations as the C rule (x = ell * q, floor(x + 0.5), x - b), so
  the probability paths match the C core bit for bit.
* ``scaled_logits`` is the float64 counterpart of the fused float32 path: the C result equals the exact rule applied
  to some x' with |x' - x| <= FUSED_REL_TOL * x + FUSED_ABS_TOL * ell / V (see csrc/qsv_quant.h).
"""

from __future__ import annotations

import numpy as np

from qsv_wire.lattice import MAX_ELL, MAX_VOCAB, LatticePoint  # noqa: F401  (MAX_*: re-exported)

PROB_SUM_TOL = 1e-3
FUSED_REL_TOL = 1e-5
FUSED_ABS_TOL = 1e-9


def lattice_rule(x: np.ndarray, ell: int) -> np.ndarray:
    """Counts b (int64) from x = ell * q: round half up, then fix the sum.

    d = ell - sum(b) > 0: +1 on the d largest residuals x - b (all entries); d < 0: -1 on the |d| entries with b >= 1
    and the largest b - x. Ties go to the lower index.
    """
    x = np.asarray(x, dtype=np.float64)
    b = np.floor(x + 0.5).astype(np.int64)
    d = ell - int(b.sum())
    if d > 0:
        residual = x - b
        order = np.lexsort((np.arange(x.size), -residual))
        b[order[:d]] += 1
    elif d < 0:
        cand = np.flatnonzero(b >= 1)
        if cand.size < -d:
            raise ValueError("the rounding cannot be fixed: probabilities do not sum to 1")
        excess = b[cand] - x[cand]
        order = np.lexsort((cand, -excess))
        b[cand[order[:-d]]] -= 1
    return b


def check_probs(probs: np.ndarray) -> np.ndarray:
    q = np.asarray(probs, dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise ValueError("probabilities must be finite")
    if np.any(q < 0):
        raise ValueError("probabilities must be >= 0")
    if abs(float(q.sum()) - 1.0) > PROB_SUM_TOL:
        raise ValueError(f"probabilities must sum to 1 within {PROB_SUM_TOL}")
    return q


def quantize_probs(probs: np.ndarray, ell: int) -> LatticePoint:
    """The lattice point of given probabilities (float64 or float32; float32 values are widened exactly)."""
    q = check_probs(probs)
    counts = lattice_rule(float(ell) * q, ell)
    return LatticePoint.from_dense(counts, ell)


def _first_order_desc(values: np.ndarray) -> np.ndarray:
    """Indices sorted by value descending, ties by lower index."""
    return np.lexsort((np.arange(values.size), -values))


def scaled_logits(
    logits: np.ndarray, ell: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """x = ell * q in float64, q = softmax(logits / T) after top-k and top-p (the C core's rules)."""
    z = np.asarray(logits, dtype=np.float64)
    v = z.size
    x = np.zeros(v, dtype=np.float64)
    if temperature == 0 or v == 1:
        x[int(np.argmax(z))] = ell  # argmax returns the first maximum
        return x
    keep = np.ones(v, dtype=bool)
    if 0 < top_k < v:
        keep[:] = False
        keep[_first_order_desc(z)[:top_k]] = True
    e = np.where(keep, np.exp((z - z.max()) / temperature), 0.0)
    if top_p < 1.0:
        q = e / e.sum()
        order = _first_order_desc(q)
        cum = np.cumsum(q[order])
        n = int(np.searchsorted(cum, top_p, side="left")) + 1
        kept = np.zeros(v, dtype=bool)
        kept[order[: min(n, v)]] = True
        e = np.where(kept, e, 0.0)
    return ell * (e / e.sum())


def quantize_logits(
    logits: np.ndarray, ell: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> LatticePoint:
    """Float64 reference of the fused path."""
    x = scaled_logits(logits, ell, temperature, top_k, top_p)
    return LatticePoint.from_dense(lattice_rule(x, ell), ell)


def sample(point: LatticePoint, u: int) -> int:
    """Q-S sampling: the token whose cumulative count interval [cum - count, cum) contains u."""
    if not 0 <= u < point.ell:
        raise ValueError(f"u must be in [0, {point.ell}), got {u}")
    cum = np.cumsum(point.counts.astype(np.int64))
    return int(point.indices[int(np.searchsorted(cum, u, side="right"))])

