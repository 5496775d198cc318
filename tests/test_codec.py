"""Round trips, size guarantees and error handling of the lattice-point codec and token packing."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsv_wire import codec
from qsv_wire.codec import CodecError
from qsv_wire.lattice import LatticePoint

MODES = ("auto", "enum", "sparse")
SETTINGS = settings(max_examples=200, derandomize=True, deadline=None)


def make_point(indices: list[int] | np.ndarray, counts: list[int] | np.ndarray, ell: int, vocab: int) -> LatticePoint:
    return LatticePoint(np.asarray(indices), np.asarray(counts), ell, vocab)


def random_point(rng: np.random.Generator, vocab_size: int, ell: int, nnz: int) -> LatticePoint:
    nnz = max(1, min(nnz, vocab_size, ell))
    indices = np.sort(rng.choice(vocab_size, nnz, replace=False))
    counts = np.ones(nnz, dtype=np.int64)
    np.add.at(counts, rng.integers(0, nnz, ell - nnz), 1)
    return make_point(indices, counts, ell, vocab_size)


def check_roundtrip(point: LatticePoint) -> dict[str, bytes]:
    """Every mode decodes to the point; lengths are exact; auto never exceeds the bound + 1 bit."""
    vocab_size, ell = point.vocab_size, point.ell
    bound = codec.bound_bits(vocab_size, ell)
    out = {}
    for mode in MODES:
        data = codec.encode(point, vocab_size, ell, mode=mode)
        bits = codec.encoded_bits(point, vocab_size, ell, mode=mode)
        assert len(data) == (bits + 7) // 8
        assert codec.decode(data, vocab_size, ell) == point
        out[mode] = data
    assert codec.encoded_bits(point, vocab_size, ell, "enum") == bound + 1
    auto_bits = codec.encoded_bits(point, vocab_size, ell, "auto")
    assert auto_bits <= bound + 1
    assert auto_bits == min(bound + 1, codec.encoded_bits(point, vocab_size, ell, "sparse"))
    assert codec.message_mode(out["enum"]) == "enum" and codec.message_mode(out["sparse"]) == "sparse"
    return out


@st.composite
def points(draw: st.DrawFn) -> LatticePoint:
    vocab_size = draw(st.one_of(st.integers(1, 64), st.integers(1, 300_000), st.sampled_from([1 << 24, 151936])))
    ell = draw(st.one_of(st.integers(1, 40), st.sampled_from([16, 240, 720]), st.integers(1, 3000)))
    limit = min(vocab_size, ell)
    nnz = draw(st.one_of(st.integers(1, min(limit, 8)), st.integers(1, min(limit, 300)), st.just(limit)))
    if nnz > 300 and vocab_size * ell > 10**8:  # keep the dense, huge cases for the explicit tests below
        nnz = 300
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_point(rng, vocab_size, ell, nnz)


@SETTINGS
@given(points())
def test_roundtrip_random_points(point: LatticePoint) -> None:
    check_roundtrip(point)


@pytest.mark.parametrize(
    ("name", "point"),
    [
        ("V=1", make_point([0], [5], 5, 1)),
        ("V=1, ell=65535", make_point([0], [65535], 65535, 1)),
        ("V=2 split", make_point([0, 1], [1, 65534], 65535, 2)),
        ("V=2 last", make_point([1], [3], 3, 2)),
        ("ell=1 first", make_point([0], [1], 1, 50272)),
        ("ell=1 last", make_point([50271], [1], 1, 50272)),
        ("ell=1 V=2^24", make_point([(1 << 24) - 1], [1], 1, 1 << 24)),
        ("all mass on last token", make_point([151935], [720], 720, 151936)),
        ("max gaps", make_point([0, 151935], [1, 719], 720, 151936)),
        ("max gaps V=2^24", make_point([0, (1 << 24) - 1], [65534, 1], 65535, 1 << 24)),
        ("uniform over ell tokens", make_point(np.arange(240), np.ones(240), 240, 50272)),
        ("uniform over last ell tokens", make_point(np.arange(151936 - 720, 151936), np.ones(720), 720, 151936)),
        ("spread uniform", make_point(np.arange(720) * 211, np.ones(720), 720, 151936)),
        ("ell=65535 sparse", make_point([5, 70000, 262143], [65000, 500, 35], 65535, 262144)),
        ("dense V = ell", make_point(np.arange(300), np.ones(300), 300, 300)),
    ],
)
def test_roundtrip_adversarial(name: str, point: LatticePoint) -> None:
    check_roundtrip(point)


def test_auto_prefers_sparse_for_llm_like_points_and_enum_for_dense() -> None:
    rng = np.random.default_rng(3)
    sparse_point = random_point(rng, 151936, 720, 30)
    assert codec.message_mode(codec.encode(sparse_point, 151936, 720)) == "sparse"
    assert codec.encoded_bits(sparse_point, 151936, 720) < codec.bound_bits(151936, 720) / 5
    dense = make_point(np.sort(rng.choice(151936, 720, replace=False)), np.ones(720), 720, 151936)
    assert codec.message_mode(codec.encode(dense, 151936, 720)) == "enum"


def test_encode_arrays_matches_encode_and_validates() -> None:
    point = random_point(np.random.default_rng(4), 50272, 240, 31)
    for mode in MODES:
        assert codec.encode_arrays(point.indices, point.counts, 50272, 240, mode) == codec.encode(
            point, 50272, 240, mode
        )
    with pytest.raises(CodecError, match="invalid lattice point"):
        codec.encode_arrays(np.array([5, 3], np.uint32), np.array([120, 120], np.uint32), 50272, 240)
    with pytest.raises(CodecError, match="invalid lattice point"):
        codec.encode_arrays(np.array([3, 5], np.uint32), np.array([120, 119], np.uint32), 50272, 240)
    with pytest.raises(CodecError, match="invalid lattice point"):
        codec.encode_arrays(np.array([], np.uint32), np.array([], np.uint32), 50272, 240)
    with pytest.raises(TypeError):
        codec.encode_arrays(np.array([3, 5]), np.array([120, 120]), 50272, 240)


def test_decode_arrays_matches_decode() -> None:
    point = random_point(np.random.default_rng(6), 151936, 720, 77)
    for mode in MODES:
        indices, counts = codec.decode_arrays(codec.encode(point, 151936, 720, mode), 151936, 720)
        assert indices.dtype == counts.dtype == np.uint32
        assert np.array_equal(indices, point.indices) and np.array_equal(counts, point.counts)
    with pytest.raises(CodecError):
        codec.decode_arrays(b"\xff", 151936, 720)


def test_empty_and_mismatched_arguments() -> None:
    point = make_point([3, 9], [2, 3], 5, 10)
    with pytest.raises(CodecError, match="vocab_size=10, ell=5"):
        codec.encode(point, 11, 5)
    with pytest.raises(CodecError, match="vocab_size=10, ell=5"):
        codec.encode(point, 10, 6)
    with pytest.raises(CodecError, match="mode"):
        codec.encode(point, 10, 5, mode="zip")
    for vocab_size, ell in [(0, 5), (10, 0), (10, 65536), ((1 << 24) + 1, 5), (-3, 5)]:
        with pytest.raises(CodecError):
            codec.bound_bits(vocab_size, ell)
        with pytest.raises(CodecError):
            codec.decode(b"\x00", vocab_size, ell)
    with pytest.raises(TypeError):
        codec.bound_bits(10.0, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode([3, 9], 10, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.decode("abc", 10, 5)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(b"", 10, 5)
    with pytest.raises(CodecError):
        codec.message_mode(b"")


def test_decode_accepts_any_bytes_like() -> None:
    point = make_point([3, 9], [2, 3], 5, 10)
    data = codec.encode(point, 10, 5)
    assert codec.decode(bytearray(data), 10, 5) == point
    assert codec.decode(memoryview(data), 10, 5) == point
    assert codec.decode(np.frombuffer(data, dtype=np.uint8), 10, 5) == point


def test_truncated_extended_and_padded_messages_are_rejected() -> None:
    rng = np.random.default_rng(11)
    for vocab_size, ell, nnz in [(50272, 240, 12), (151936, 720, 60), (1000, 16, 16), (7, 9, 3)]:
        point = random_point(rng, vocab_size, ell, nnz)
        for mode, data in check_roundtrip(point).items():
            for cut in range(len(data)):
                with pytest.raises(CodecError):
                    codec.decode(data[:cut], vocab_size, ell)
            with pytest.raises(CodecError, match="trailing"):
                codec.decode(data + b"\x00", vocab_size, ell)
            bits = codec.encoded_bits(point, vocab_size, ell, mode)
            if bits % 8:
                padded = bytearray(data)
                padded[-1] |= 1  # the last bit is padding
                with pytest.raises(CodecError, match="padding"):
                    codec.decode(bytes(padded), vocab_size, ell)


def test_enum_index_beyond_the_count_is_rejected() -> None:
    # V=3, ell=4: C(6, 2) = 15 points, 4 index bits; index 15 is out of range.
    assert codec.bound_bits(3, 4) == 4
    for index in range(16):
        message = bytes([index << 3])
        if index < 15:
            assert codec.decode(message, 3, 4).ell == 4
        else:
            with pytest.raises(CodecError, match="out of range"):
                codec.decode(message, 3, 4)
    # all-ones index bits at a realistic size
    width = codec.bound_bits(50272, 240)
    all_ones = int("0" + "1" * width + "0" * (-(width + 1) % 8), 2).to_bytes((width + 8) // 8, "big")
    with pytest.raises(CodecError, match="out of range"):
        codec.decode(all_ones, 50272, 240)


def test_bit_flips_and_random_bytes_never_crash() -> None:
    rng = np.random.default_rng(5)
    pyrng = random.Random(5)
    accepted = rejected = 0
    for vocab_size, ell, nnz in [(50272, 240, 20), (1000, 720, 90), (33, 40, 33)]:
        point = random_point(rng, vocab_size, ell, nnz)
        for data in check_roundtrip(point).values():
            positions = range(len(data) * 8) if len(data) <= 64 else pyrng.sample(range(len(data) * 8), 256)
            for bit in positions:
                flipped = bytearray(data)
                flipped[bit // 8] ^= 0x80 >> (bit % 8)
                try:
                    decoded = codec.decode(bytes(flipped), vocab_size, ell)
                except CodecError:
                    rejected += 1
                else:  # a valid message (of this point with other sparse-code parameters, or of another point)
                    accepted += 1
                    decoded.validate()  # decode() trusts the C decoder's checks: the invariants must hold
                    assert codec.decode(codec.encode(decoded, vocab_size, ell), vocab_size, ell) == decoded
        for _ in range(300):
            junk = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            try:
                decoded = codec.decode(junk, vocab_size, ell)
            except CodecError:
                rejected += 1
            else:
                accepted += 1
                decoded.validate()
    assert rejected > 0 and accepted > 0  # both outcomes occur: the test exercises both paths


def test_wrong_dimensions_on_decode_fail_cleanly() -> None:
    point = random_point(np.random.default_rng(2), 50272, 240, 25)
    for mode in MODES:
        data = codec.encode(point, 50272, 240, mode=mode)
        for vocab_size, ell in [(50271, 240), (50272, 239), (151936, 720), (2, 240)]:
            try:
                other = codec.decode(data, vocab_size, ell)
            except CodecError:
                continue
            assert (other.vocab_size, other.ell) == (vocab_size, ell)
            other.validate()


def test_threads_share_parameters_but_not_workspaces() -> None:
    rng = np.random.default_rng(9)
    cases = [random_point(rng, 151936, 720, n) for n in (5, 50, 200, 720)]
    expected = [codec.encode(p, 151936, 720, "enum") for p in cases]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                for point, data in zip(cases, expected, strict=True):
                    assert codec.encode(point, 151936, 720, "enum") == data
                    assert codec.decode(data, 151936, 720) == point
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_worked_examples_of_the_layout_document() -> None:
    """The byte strings spelled out in docs/CODEC.md (the enumerative one is canonical; any encoder must decode the
    sparse ones to the same points)."""
    point = make_point([3, 9], [2, 3], 5, 10)
    assert codec.encode(point, 10, 5, "enum") == bytes.fromhex("07f0")
    assert codec.decode(bytes.fromhex("07f0"), 10, 5) == point
    assert codec.decode(bytes.fromhex("904066 80"), 10, 5) == point
    realistic = make_point([2, 7, 40000, 151935], [700, 15, 4, 1], 720, 151936)
    assert codec.decode(bytes.fromhex("80772900 0a002370 e0fa9f02 cbf4c0"), 151936, 720) == realistic
    assert codec.encoded_bits(realistic, 151936, 720) <= 114
    assert codec.pack_tokens([5, 1, 7], 8) == bytes.fromhex("a780")


# ------------------------------------------------------------------------------------------ token ids


@pytest.mark.parametrize("vocab_size", [1, 2, 3, 255, 256, 257, 32000, 50272, 151936, 1 << 24])
def test_tokens_roundtrip(vocab_size: int) -> None:
    rng = np.random.default_rng(vocab_size)
    width = codec.token_bits(vocab_size)
    assert width == (vocab_size - 1).bit_length()
    for count in (0, 1, 7, 8, 9, 100):
        ids = rng.integers(0, vocab_size, count)
        if count:
            ids[-1] = vocab_size - 1
        data = codec.pack_tokens(ids, vocab_size)
        assert len(data) == (count * width + 7) // 8
        back = codec.unpack_tokens(data, count, vocab_size)
        assert back.dtype == np.uint32 and np.array_equal(back, ids)
        assert codec.pack_tokens(list(map(int, ids)), vocab_size) == data


def test_tokens_layout_is_msb_first() -> None:
    assert codec.pack_tokens([5, 1, 7], 8) == bytes([0b10100111, 0b10000000])
    assert codec.pack_tokens([50271], 50272) == (50271).to_bytes(2, "big")  # 16 bits
    assert codec.pack_tokens([1, 65536], 65537) == (((1 << 17) | 65536) << 6).to_bytes(5, "big")  # 17 bits each


def test_tokens_errors() -> None:
    with pytest.raises(CodecError, match="0..9"):
        codec.pack_tokens([3, 10], 10)
    with pytest.raises(CodecError):
        codec.pack_tokens([-1], 10)
    with pytest.raises(CodecError):
        codec.pack_tokens([[1, 2]], 10)
    with pytest.raises(TypeError):
        codec.pack_tokens([1.5], 10)
    data = codec.pack_tokens([1, 2, 3], 10)  # 12 bits -> 2 bytes
    with pytest.raises(CodecError, match="truncated"):
        codec.unpack_tokens(data[:1], 3, 10)
    with pytest.raises(CodecError, match="trailing"):
        codec.unpack_tokens(data + b"\x00", 3, 10)
    with pytest.raises(CodecError, match="padding"):
        codec.unpack_tokens(bytes([data[0], data[1] | 1]), 3, 10)
    with pytest.raises(CodecError, match="out of range"):
        codec.unpack_tokens(bytes([0xF0]), 1, 10)  # id 15 for V = 10
    with pytest.raises(CodecError):
        codec.unpack_tokens(data, 3, 0)
