"""Uplink size per draft token as a function of (vocabulary size, ℓ): the prior before encoded sizes are measured."""

from __future__ import annotations

import functools
import logging
import math

log = logging.getLogger(__name__)

TOKEN_ID_BITS = 16


@functools.lru_cache(maxsize=256)
def uplink_bits_per_token(vocab_size: int, ell: int) -> int:
    """Token id + the fixed-length lattice-point index, as in the paper (16 + ⌈log2 C(ℓ+V−1, V−1)⌉).

    Uses the codec's ``bound_bits`` when the codec module is available; otherwise the same count computed here.
    """
    if vocab_size < 2 or ell < 1:
        raise ValueError(f"need vocab_size >= 2 and ell >= 1, got {vocab_size}, {ell}")
    try:
        from qsv_wire.codec import bound_bits  # type: ignore[attr-defined]

        return TOKEN_ID_BITS + int(bound_bits(vocab_size, ell))
    except (ImportError, AttributeError):
        n = math.comb(ell + vocab_size - 1, vocab_size - 1)
        return TOKEN_ID_BITS + (n - 1).bit_length()
