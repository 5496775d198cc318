"""The lattice point: the quantized draft distribution q̂ = b / ℓ in sparse form.

Shared by the edge (which produces and samples from it) and the cloud (which verifies against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qsv_wire._native import lib

# The lattice's and the quantizer's ranges, defined once (csrc/qsv_quant.h) and read from the loaded C core.
MAX_ELL = int(lib.QSV_MAX_ELL)  # ℓ: 1..MAX_ELL
MAX_VOCAB = int(lib.QSV_MAX_VOCAB)  # the largest vocabulary the quantizer takes (the codec carries up to 2^24)


class LatticeError(ValueError):
    """A lattice point that breaks its invariants."""


@dataclass(frozen=True)
class LatticePoint:
    """Integer counts b over a vocabulary of ``vocab_size`` tokens with Σ b = ``ell``.

    Only nonzero entries are stored: ``indices`` (uint32, strictly increasing token ids) and ``counts``
    (uint32, each in 1..ell, same length). q̂(token) = count / ell.
    """

    indices: np.ndarray
    counts: np.ndarray
    ell: int
    vocab_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", np.ascontiguousarray(self.indices, dtype=np.uint32))
        object.__setattr__(self, "counts", np.ascontiguousarray(self.counts, dtype=np.uint32))
        self.validate()

    def validate(self) -> None:
        if not 1 <= self.ell <= MAX_ELL:
            raise LatticeError(f"ell must be in 1..{MAX_ELL}, got {self.ell}")
        if self.vocab_size < 1:
            raise LatticeError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.indices.ndim != 1 or self.indices.shape != self.counts.shape:
            raise LatticeError("indices and counts must be 1-D arrays of the same length")
        if self.indices.size == 0:
            raise LatticeError("a lattice point has at least one nonzero count")
        if int(self.indices[-1]) >= self.vocab_size:
            raise LatticeError(f"token id {int(self.indices[-1])} out of range for vocab_size {self.vocab_size}")
        if self.indices.size > 1 and not np.all(np.diff(self.indices.astype(np.int64)) > 0):
            raise LatticeError("indices must be strictly increasing")
        if np.any(self.counts == 0):
            raise LatticeError("counts must be nonzero (store only nonzero entries)")
        total = int(self.counts.sum(dtype=np.uint64))
        if total != self.ell:
            raise LatticeError(f"counts sum to {total}, expected ell={self.ell}")

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def dense(self, dtype: type = np.int64) -> np.ndarray:
        """Dense counts b of length ``vocab_size``."""
        out = np.zeros(self.vocab_size, dtype=dtype)
        out[self.indices] = self.counts
        return out

    def probs(self) -> np.ndarray:
        """Dense q̂ = b / ell as float64."""
        return self.dense(np.float64) / float(self.ell)

    def count_of(self, token: int) -> int:
        """b[token] (0 when the token is not in the support)."""
        pos = int(np.searchsorted(self.indices, token))
        if pos < self.indices.size and int(self.indices[pos]) == token:
            return int(self.counts[pos])
        return 0

    @classmethod
    def trusted(cls, indices: np.ndarray, counts: np.ndarray, ell: int, vocab_size: int) -> LatticePoint:
        """A point from arrays the C core produced or already checked (contiguous uint32, invariants held): skips
        validation, which costs more than the C decoder itself. Anything else goes through the constructor."""
        point = object.__new__(cls)
        object.__setattr__(point, "indices", indices)
        object.__setattr__(point, "counts", counts)
        object.__setattr__(point, "ell", int(ell))
        object.__setattr__(point, "vocab_size", int(vocab_size))
        return point

    @classmethod
    def from_dense(cls, counts: np.ndarray, ell: int | None = None) -> LatticePoint:
        counts = np.asarray(counts)
        if counts.ndim != 1:
            raise LatticeError("dense counts must be 1-D")
        if np.any(counts < 0):
            raise LatticeError("dense counts must be non-negative")
        idx = np.flatnonzero(counts)
        total = int(counts.sum())
        return cls(idx.astype(np.uint32), counts[idx].astype(np.uint32), total if ell is None else ell, counts.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatticePoint):
            return NotImplemented
        return (
            self.ell == other.ell
            and self.vocab_size == other.vocab_size
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.counts, other.counts)
        )

    __hash__ = None  # type: ignore[assignment]
