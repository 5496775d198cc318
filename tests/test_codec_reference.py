"""The C codec against an independent pure-Python (big int) implementation of the layout in docs/CODEC.md.

The reference ranks lattice points exactly with Python integers and parses / writes both payloads bit by bit;
the C output must match it byte for byte (enumerative payload) or field for field (sparse payload).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsv_wire import codec
from qsv_wire.lattice import LatticePoint

# ------------------------------------------------------------------------------------------ reference code


def ref_bound(vocab_size: int, ell: int) -> int:
    return (math.comb(ell + vocab_size - 1, ell) - 1).bit_length()


def ref_subset_rank(xs: list[int], lo: int, n: int) -> int:
    """Rank of a sorted subset of [lo, lo+n) by universe halving (docs/CODEC.md, "enumerative index")."""
    m = len(xs)
    if m == 0 or m == n:
        return 0
    if m == 1:
        return xs[0] - lo
    h, nr = n // 2, n - n // 2
    a = sum(1 for x in xs if x < lo + h)
    offset = sum(math.comb(h, ap) * math.comb(nr, m - ap) for ap in range(max(0, m - nr), a))
    return offset + ref_subset_rank(xs[:a], lo, h) * math.comb(nr, m - a) + ref_subset_rank(xs[a:], lo + h, nr)


def ref_subset_unrank(r: int, m: int, lo: int, n: int) -> list[int]:
    if m == 0:
        return []
    if m == n:
        return list(range(lo, lo + n))
    if m == 1:
        return [lo + r]
    h, nr = n // 2, n - n // 2
    a = max(0, m - nr)
    while True:
        term = math.comb(h, a) * math.comb(nr, m - a)
        if r < term:
            break
        r -= term
        a += 1
    low, high = divmod(r, math.comb(nr, m - a))
    return ref_subset_unrank(low, a, lo, h) + ref_subset_unrank(high, m - a, lo + h, nr)


def ref_enum_index(indices: list[int], counts: list[int], vocab_size: int, ell: int) -> int:
    m = len(indices)
    offset = sum(math.comb(vocab_size, k) * math.comb(ell - 1, k - 1) for k in range(1, m))
    partial = list(np.cumsum(counts[:-1]) - 1) if m > 1 else []
    rank_support = ref_subset_rank(list(indices), 0, vocab_size)
    rank_counts = ref_subset_rank([int(x) for x in partial], 0, ell - 1)
    return offset + rank_support * math.comb(ell - 1, m - 1) + rank_counts


def ref_enum_unindex(index: int, vocab_size: int, ell: int) -> tuple[list[int], list[int]]:
    m = 1
    while True:
        term = math.comb(vocab_size, m) * math.comb(ell - 1, m - 1)
        if index < term:
            break
        index -= term
        m += 1
    rank_support, rank_counts = divmod(index, math.comb(ell - 1, m - 1))
    indices = ref_subset_unrank(rank_support, m, 0, vocab_size)
    partial = [x + 1 for x in ref_subset_unrank(rank_counts, m - 1, 0, ell - 1)]
    bounds = [0, *partial, ell]
    return indices, [bounds[i + 1] - bounds[i] for i in range(m)]


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.bits = "".join(f"{b:08b}" for b in data)
        self.pos = 0

    def take(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise EOFError
        value = int(self.bits[self.pos : self.pos + n], 2) if n else 0
        self.pos += n
        return value

    def zeros(self) -> int:
        n = 0
        while self.take(1) == 0:
            n += 1
        self.pos -= 1  # the 1 bit is not consumed
        return n


def ref_value(reader: BitReader, family: int, k: int) -> int:
    zeros = reader.zeros()
    if family == 0:  # Rice: q zeros, a 1, k low bits
        reader.take(1)
        return (zeros << k) | reader.take(k)
    return reader.take(zeros + k + 1) - (1 << k)  # Exp-Golomb: zeros, then x + 2^k in (zeros + k + 1) bits


def ref_sparse_parse(data: bytes, vocab_size: int, ell: int) -> tuple[list[int], list[int], tuple[int, ...], int]:
    """Parse a sparse message by the documented layout: (indices, counts, (gap_family, gap_k, cnt_family, cnt_k),
    bits used)."""
    reader = BitReader(data)
    assert reader.take(1) == 1
    nnz_bits = (min(vocab_size, ell) - 1).bit_length()
    m = reader.take(nnz_bits) + 1
    gap_family, gap_k = reader.take(1), reader.take(5)
    cnt_family, cnt_k = (reader.take(2), reader.take(4)) if m >= 2 else (0, 0)
    indices, nxt = [], 0
    for _ in range(m):
        nxt += ref_value(reader, gap_family, gap_k)
        indices.append(nxt)
        nxt += 1
    if cnt_family == 2:  # excess units: ell - m Rice-coded steps between nondecreasing entry positions
        counts, entry = [1] * m, 0
        for _ in range(ell - m):
            entry += ref_value(reader, 0, cnt_k)
            counts[entry] += 1
    else:
        counts = [ref_value(reader, cnt_family, cnt_k) + 1 for _ in range(m - 1)]
        counts.append(ell - sum(counts))
    return indices, counts, (gap_family, gap_k, cnt_family, cnt_k), reader.pos


def ref_put_value(bits: list[str], x: int, family: int, k: int) -> None:
    if family == 0:
        bits.append("0" * (x >> k) + "1" + (format(x & ((1 << k) - 1), f"0{k}b") if k else ""))
    else:
        y = x + (1 << k)
        bits.append("0" * (y.bit_length() - k - 1) + format(y, "b"))


def to_bytes(bitstring: str) -> bytes:
    bitstring += "0" * (-len(bitstring) % 8)
    return int(bitstring, 2).to_bytes(len(bitstring) // 8, "big") if bitstring else b""


def ref_sparse_write(
    indices: list[int], counts: list[int], vocab_size: int, ell: int, params: tuple[int, ...]
) -> bytes:
    gap_family, gap_k, cnt_family, cnt_k = params
    m = len(indices)
    nnz_bits = (min(vocab_size, ell) - 1).bit_length()
    bits = ["1", format(m - 1, f"0{nnz_bits}b") if nnz_bits else "", str(gap_family), format(gap_k, "05b")]
    if m >= 2:
        bits += [format(cnt_family, "02b"), format(cnt_k, "04b")]
    prev = -1
    for i in indices:
        ref_put_value(bits, i - prev - 1, gap_family, gap_k)
        prev = i
    if cnt_family == 2:
        entry = 0
        for j, c in enumerate(counts):
            for _ in range(c - 1):
                ref_put_value(bits, j - entry, 0, cnt_k)
                entry = j
    else:
        for c in counts[:-1]:
            ref_put_value(bits, c - 1, cnt_family, cnt_k)
    return to_bytes("".join(bits))


def ref_enum_message(indices: list[int], counts: list[int], vocab_size: int, ell: int) -> bytes:
    width = ref_bound(vocab_size, ell)
    index = ref_enum_index(indices, counts, vocab_size, ell)
    return to_bytes("0" + (format(index, f"0{width}b") if width else ""))


# ------------------------------------------------------------------------------------------ strategies


@st.composite
def points(draw: st.DrawFn, max_vocab: int = 400, max_ell: int = 80) -> LatticePoint:
    vocab_size = draw(st.integers(1, max_vocab))
    ell = draw(st.integers(1, max_ell))
    nnz = draw(st.integers(1, min(vocab_size, ell)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    indices = sorted(rng.sample(range(vocab_size), nnz))
    cuts = sorted(rng.sample(range(1, ell), nnz - 1)) if nnz > 1 else []
    bounds = [0, *cuts, ell]
    counts = [bounds[i + 1] - bounds[i] for i in range(nnz)]
    return LatticePoint(np.array(indices), np.array(counts), ell, vocab_size)


SETTINGS = settings(max_examples=300, derandomize=True, deadline=None)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    ("vocab_size", "ell", "paper_bits"),
    [(50272, 16, 222), (50272, 240, 2209), (50272, 720, 5467), (151936, 240, 2591), (151936, 720, 6611)],
)
def test_bound_matches_paper_figures(vocab_size: int, ell: int, paper_bits: int) -> None:
    # The paper's per-token uplink = 16-bit token id + ceil(log2 C(ell+V-1, V-1)).
    assert codec.bound_bits(vocab_size, ell) == ref_bound(vocab_size, ell) == paper_bits - 16


def test_bound_exact_on_grid_including_powers_of_two() -> None:
    cases = [(v, e) for v in (1, 2, 3, 4, 5, 8, 16, 17, 100, 1024, 50272, 1 << 24) for e in (1, 2, 3, 7, 15, 16, 240)]
    cases += [(2, (1 << k) - 1) for k in range(1, 17)]  # C = ell + 1 = 2^k exactly
    cases += [(1 << k, 1) for k in range(0, 25)]  # C = V = 2^k exactly
    for vocab_size, ell in cases:
        assert codec.bound_bits(vocab_size, ell) == ref_bound(vocab_size, ell), (vocab_size, ell)


def test_bound_large_parameters() -> None:
    for vocab_size, ell in [(262144, 65535), (1 << 24, 65535), (1 << 24, 720), (65535, 65535)]:
        assert codec.bound_bits(vocab_size, ell) == ref_bound(vocab_size, ell)


@SETTINGS
@given(points())
def test_enum_message_matches_reference_bytes(point: LatticePoint) -> None:
    data = codec.encode(point, point.vocab_size, point.ell, mode="enum")
    indices, counts = point.indices.tolist(), point.counts.tolist()
    assert data == ref_enum_message(indices, counts, point.vocab_size, point.ell)
    width = ref_bound(point.vocab_size, point.ell)
    index = BitReader(data).take(1 + width)
    assert ref_enum_unindex(index, point.vocab_size, point.ell) == (indices, counts)


@SETTINGS
@given(points(max_vocab=1 << 20, max_ell=2000))
def test_sparse_message_matches_reference_layout(point: LatticePoint) -> None:
    check_sparse_layout(point)


def test_sparse_layout_covers_every_code_family() -> None:
    rng = np.random.default_rng(1)
    families = set()
    for vocab_size, ell, nnz in [
        (151936, 720, 30),
        (151936, 720, 650),
        (300, 720, 300),
        (1 << 24, 65535, 5),
        (50272, 240, 240),
        (40, 2000, 40),
        (151936, 720, 720),
    ]:
        indices = np.sort(rng.choice(vocab_size, nnz, replace=False))
        counts = np.ones(nnz, dtype=np.int64)
        np.add.at(counts, rng.zipf(1.5, ell - nnz) % nnz, 1)
        families.add(check_sparse_layout(LatticePoint(indices, counts, ell, vocab_size)))
    clustered = np.concatenate([np.arange(40), [100_000, 150_000]])  # heavy-tailed gaps: Exp-Golomb
    families.add(check_sparse_layout(LatticePoint(clustered, np.full(42, 5), 210, 151936)))
    gap_families = {f[0] for f in families if f}
    cnt_families = {f[2] for f in families if f}
    assert gap_families == {0, 1} and cnt_families == {0, 1, 2}, families


def check_sparse_layout(point: LatticePoint) -> tuple[int, ...]:
    data = codec.encode(point, point.vocab_size, point.ell, mode="sparse")
    indices, counts, params, used = ref_sparse_parse(data, point.vocab_size, point.ell)
    assert (indices, counts) == (point.indices.tolist(), point.counts.tolist())
    assert used == codec.encoded_bits(point, point.vocab_size, point.ell, mode="sparse")
    assert len(data) == (used + 7) // 8
    assert data == ref_sparse_write(indices, counts, point.vocab_size, point.ell, params)
    return params if len(indices) >= 2 else ()


@pytest.mark.parametrize(("vocab_size", "ell"), [(1, 6), (2, 9), (3, 5), (5, 4), (6, 6), (9, 3)])
def test_enumerative_index_is_a_bijection_onto_range(vocab_size: int, ell: int) -> None:
    total = math.comb(ell + vocab_size - 1, ell)
    seen = set()
    for bars in _weak_compositions(ell, vocab_size):
        point = LatticePoint.from_dense(np.array(bars), ell)
        data = codec.encode(point, vocab_size, ell, mode="enum")
        index = BitReader(data).take(1 + ref_bound(vocab_size, ell))
        assert 0 <= index < total
        seen.add(index)
    assert len(seen) == total


def _weak_compositions(ell: int, parts: int) -> list[list[int]]:
    if parts == 1:
        return [[ell]]
    return [[first, *rest] for first in range(ell + 1) for rest in _weak_compositions(ell - first, parts - 1)]


def test_reference_on_large_random_points() -> None:
    rng = np.random.default_rng(7)
    for vocab_size, ell, nnz in [(151936, 720, 40), (151936, 720, 720), (50272, 240, 120), (1 << 24, 300, 17)]:
        indices = np.sort(rng.choice(vocab_size, nnz, replace=False))
        counts = np.ones(nnz, dtype=np.int64)
        np.add.at(counts, rng.integers(0, nnz, ell - nnz), 1)
        point = LatticePoint(indices, counts, ell, vocab_size)
        data = codec.encode(point, vocab_size, ell, mode="enum")
        assert data == ref_enum_message(indices.tolist(), counts.tolist(), vocab_size, ell)
