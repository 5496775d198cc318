"""Uplink codec of a lattice point (the quantized draft distribution) and of drafted token ids.

    data = encode(point, vocab_size, ell)            # bytes; mode "auto" (default), "enum" or "sparse"
    point = decode(data, vocab_size, ell)            # LatticePoint; CodecError on anything malformed
    bound_bits(vocab_size, ell)                      # ceil(log2 C(ell+V-1, V-1)), the paper's fixed length
    encoded_bits(point, vocab_size, ell, mode)       # exact message length in bits (before byte padding)
    pack_tokens(ids, vocab_size) / unpack_tokens(data, count, vocab_size)

A message is a 1-bit flag followed by either the enumerative index (exactly ``bound_bits`` bits) or the sparse code
(nonzero count, index gaps, counts; Rice or Exp-Golomb codes with per-message parameters); "auto" sends the shorter,
so a message never exceeds ``bound_bits + 1`` bits. Messages are zero-padded to whole bytes; the decoder accepts
exactly ``ceil(bits / 8)`` bytes with zero padding. Byte-by-byte layout: docs/CODEC.md. The work is done by the C
core (csrc/qsv_codec*.c); arrays are passed without copies.

Thread safety: per-(V, ell) constants are shared read-only; every thread gets its own workspace.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from qsv_wire._native import CodecError, check, ffi, lib
from qsv_wire.lattice import MAX_ELL, LatticePoint

__all__ = [
    "CodecError",
    "MAX_ELL",
    "MAX_VOCAB",
    "MODES",
    "bound_bits",
    "decode",
    "decode_arrays",
    "encode",
    "encode_arrays",
    "encoded_bits",
    "encoder_handle",
    "EncoderHandle",
    "message_mode",
    "pack_tokens",
    "token_bits",
    "token_bytes",
    "unpack_tokens",
    "workspace_bytes",
]

MAX_VOCAB = 1 << 24  # the codec's capacity (QSV_CODEC_MAX_VOCAB); drafts come from the quantizer's 2^21
MODES = {
    "auto": lib.QSV_CODEC_MODE_AUTO,
    "enum": lib.QSV_CODEC_MODE_ENUM,
    "sparse": lib.QSV_CODEC_MODE_SPARSE,
}
_MODE_NAMES = {lib.QSV_CODEC_MODE_ENUM: "enum", lib.QSV_CODEC_MODE_SPARSE: "sparse"}


def _status(rc: int, what: str) -> None:
    check(rc, what, CodecError)


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not low <= value <= high:
        raise CodecError(f"{name} must be in {low}..{high}, got {value}")
    return value


class _Codec:
    """Constants for one (V, ell) and a workspace per thread."""

    def __init__(self, vocab_size: int, ell: int) -> None:
        self.vocab_size = vocab_size
        self.ell = ell
        self.workspace_bytes = int(lib.qsv_codec_workspace_bytes(vocab_size, ell))
        self.params = ffi.new("qsv_codec_params *")
        self._local = threading.local()
        _status(
            lib.qsv_codec_params_init(self.params, vocab_size, ell, self.workspace()[0]),
            f"codec parameters for V={vocab_size}, ell={ell}",
        )
        self.bound_bits = int(self.params.bound_bits)
        self.max_nnz = int(self.params.max_nnz)

    def workspace(self) -> Any:
        """This thread's workspace as a ``qsv_workspace *`` (pass ``[0]``: the C functions take it by value)."""
        ws = getattr(self._local, "ws", None)
        if ws is None:
            buf = ffi.new("uint8_t[]", max(1, self.workspace_bytes))
            ws = ffi.new("qsv_workspace *", (buf, self.workspace_bytes))
            self._local.ws, self._local.buf = ws, buf
        return ws


@lru_cache(maxsize=64)
def _codec(vocab_size: int, ell: int) -> _Codec:
    return _Codec(vocab_size, ell)


def _get(vocab_size: Any, ell: Any) -> _Codec:
    return _codec(_check_int("vocab_size", vocab_size, 1, MAX_VOCAB), _check_int("ell", ell, 1, MAX_ELL))


def _mode(mode: str) -> int:
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise CodecError(f"mode must be one of {sorted(MODES)}, got {mode!r}") from None


@dataclass(frozen=True)
class EncoderHandle:
    """What a C caller of ``qsv_codec_encode`` needs for one (V, ell, mode): the parameter struct, the mode code and
    an output capacity that always suffices (the caller brings the workspace: ``qsv_draft_workspace_size``). Used by
    ``core.Quantizer.draft_token``."""

    params: Any
    mode_code: int
    capacity: int


def encoder_handle(vocab_size: int, ell: int, mode: str = "auto") -> EncoderHandle:
    """Encoder state for one (V, ell) in "auto" or "enum" mode: messages of these modes never
    exceed 1 + bound_bits bits, so the capacity is known before the point ("sparse" alone can be longer)."""
    codec = _get(vocab_size, ell)
    mode_code = _mode(mode)
    if mode_code == lib.QSV_CODEC_MODE_SPARSE:
        raise CodecError("encoder_handle serves the bounded modes 'auto' and 'enum'; use encode_arrays for 'sparse'")
    capacity = (codec.bound_bits + 1 + 7) // 8
    return EncoderHandle(codec.params, mode_code, capacity)


def _c_point(idx: Any, cnt: Any, nnz: int) -> Any:
    return ffi.new("qsv_point *", (idx, cnt, nnz, nnz))


def _point_arrays(point: LatticePoint, codec: _Codec) -> tuple[Any, Any, int]:
    if not isinstance(point, LatticePoint):
        raise TypeError(f"point must be a LatticePoint, got {type(point).__name__}")
    if point.vocab_size != codec.vocab_size or point.ell != codec.ell:
        raise CodecError(
            f"point has vocab_size={point.vocab_size}, ell={point.ell}; codec called with "
            f"vocab_size={codec.vocab_size}, ell={codec.ell}"
        )
    return ffi.from_buffer("uint32_t[]", point.indices), ffi.from_buffer("uint32_t[]", point.counts), point.nnz


def workspace_bytes(vocab_size: int, ell: int) -> int:
    """Bytes of scratch memory the C enumerative coder needs at these V, ell (what a C caller must provide)."""
    return _get(vocab_size, ell).workspace_bytes


def bound_bits(vocab_size: int, ell: int) -> int:
    """Exact ceil(log2 C(ell+V-1, V-1)): the length of the enumerative index (the paper's per-point bound).

    The paper's per-token uplink figures add a 16-bit token id: V=50,272, ell=240 gives 2,193 here, 2,209 there.
    """
    return _get(vocab_size, ell).bound_bits


def token_bits(vocab_size: int) -> int:
    """Width of one packed token id: ceil(log2 V) (0 for V = 1)."""
    vocab_size = _check_int("vocab_size", vocab_size, 1, MAX_VOCAB)
    return (vocab_size - 1).bit_length()


def encoded_bits(point: LatticePoint, vocab_size: int, ell: int, mode: str = "auto") -> int:
    """Exact length in bits (flag bit included, padding excluded) of ``encode(point, vocab_size, ell, mode)``."""
    codec = _get(vocab_size, ell)
    idx, cnt, nnz = _point_arrays(point, codec)
    bits = ffi.new("uint64_t *")
    _status(lib.qsv_codec_encoded_bits(codec.params, _c_point(idx, cnt, nnz), _mode(mode), bits, ffi.NULL),
            "encoded_bits")
    return int(bits[0])


def encode(point: LatticePoint, vocab_size: int, ell: int, mode: str = "auto") -> bytes:
    """Encode a lattice point; ``mode`` is "auto" (the shorter payload), "enum" or "sparse"."""
    codec = _get(vocab_size, ell)
    idx, cnt, nnz = _point_arrays(point, codec)
    return _encode(codec, idx, cnt, nnz, _mode(mode))


def encode_arrays(indices: np.ndarray, counts: np.ndarray, vocab_size: int, ell: int, mode: str = "auto") -> bytes:
    """``encode`` for a point given as two contiguous uint32 arrays (e.g. a Quantizer's output buffers sliced to
    nnz): no LatticePoint is built; the C side validates the point (CodecError if it is not one)."""
    codec = _get(vocab_size, ell)
    for name, arr in (("indices", indices), ("counts", counts)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint32 or arr.ndim != 1 or not arr.flags.c_contiguous:
            raise TypeError(f"{name} must be a 1-D C-contiguous uint32 numpy array")
    if indices.size != counts.size:
        raise CodecError(f"indices ({indices.size}) and counts ({counts.size}) differ in length")
    idx, cnt = ffi.from_buffer("uint32_t[]", indices), ffi.from_buffer("uint32_t[]", counts)
    return _encode(codec, idx, cnt, int(indices.size), _mode(mode))


def _encode(codec: _Codec, idx: Any, cnt: Any, nnz: int, mode_code: int) -> bytes:
    point = _c_point(idx, cnt, nnz)
    if mode_code == lib.QSV_CODEC_MODE_SPARSE:
        bits = ffi.new("uint64_t *")
        _status(lib.qsv_codec_encoded_bits(codec.params, point, mode_code, bits, ffi.NULL), "encode")
        capacity = (int(bits[0]) + 7) // 8
    else:
        capacity = (codec.bound_bits + 1 + 7) // 8
    out = bytearray(capacity)
    out_ptr = ffi.from_buffer("uint8_t[]", out)
    msg = ffi.new("qsv_message *", (out_ptr, capacity, mode_code, 0, 0))
    _status(lib.qsv_codec_encode(codec.params, point, msg, codec.workspace()[0]), "encode")
    size = (int(msg.bits) + 7) // 8
    return bytes(out[:size]) if size != capacity else bytes(out)


def _as_buffer(data: Any) -> Any:
    try:
        return ffi.from_buffer("uint8_t[]", data)
    except TypeError:
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}") from None


def decode(data: bytes | bytearray | memoryview, vocab_size: int, ell: int) -> LatticePoint:
    """Decode a whole message; raises CodecError if it is malformed, truncated, padded wrongly or too long."""
    indices, counts = decode_arrays(data, vocab_size, ell)
    return LatticePoint.trusted(indices, counts, ell, vocab_size)  # the C decoder checked every invariant


def decode_arrays(data: bytes | bytearray | memoryview, vocab_size: int, ell: int) -> tuple[np.ndarray, np.ndarray]:
    """``decode`` without building a LatticePoint: (indices, counts) as uint32 arrays, already fully validated by
    the C decoder (strictly increasing indices < V, counts >= 1 summing to ell)."""
    codec = _get(vocab_size, ell)
    buf = _as_buffer(data)
    indices = np.empty(codec.max_nnz, dtype=np.uint32)
    counts = np.empty(codec.max_nnz, dtype=np.uint32)
    idx, cnt = ffi.from_buffer("uint32_t[]", indices), ffi.from_buffer("uint32_t[]", counts)
    point = ffi.new("qsv_point *", (idx, cnt, codec.max_nnz, 0))
    rc = lib.qsv_codec_decode(codec.params, buf, len(buf), point, ffi.NULL, codec.workspace()[0])
    _status(rc, f"decode ({len(buf)} bytes, V={vocab_size}, ell={ell})")
    n = int(point.nnz)
    return indices[:n].copy(), counts[:n].copy()


def message_mode(data: bytes | bytearray | memoryview) -> str:
    """Which payload a message carries ("enum" or "sparse"), from its first bit (no validation)."""
    view = memoryview(data)
    if view.nbytes == 0:
        raise CodecError("empty message")
    return "sparse" if view.cast("B")[0] & 0x80 else "enum"


def token_bytes(count: int, vocab_size: int) -> int:
    """Bytes of ``count`` packed token ids: ceil(count * token_bits(V) / 8)."""
    vocab_size = _check_int("vocab_size", vocab_size, 1, MAX_VOCAB)
    return int(lib.qsv_codec_token_bytes(vocab_size, _check_int("count", count, 0, 1 << 40)))


def pack_tokens(ids: Sequence[int] | np.ndarray, vocab_size: int) -> bytes:
    """Token ids at ceil(log2 V) bits each, MSB first, zero-padded to whole bytes."""
    vocab_size = _check_int("vocab_size", vocab_size, 1, MAX_VOCAB)
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise CodecError(f"token ids must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab_size):
        raise CodecError(f"token ids must be in 0..{vocab_size - 1}, got range {int(arr.min())}..{int(arr.max())}")
    arr = np.ascontiguousarray(arr, dtype=np.uint32)
    size = int(lib.qsv_codec_token_bytes(vocab_size, arr.size))
    out = bytearray(size)
    rc = lib.qsv_codec_pack_tokens(
        ffi.from_buffer("uint32_t[]", arr), arr.size, vocab_size, ffi.from_buffer("uint8_t[]", out), size
    )
    _status(rc, "pack_tokens")
    return bytes(out)


def unpack_tokens(data: bytes | bytearray | memoryview, count: int, vocab_size: int) -> np.ndarray:
    """Inverse of pack_tokens: ``count`` ids (uint32); the data must be exactly the packed length."""
    vocab_size = _check_int("vocab_size", vocab_size, 1, MAX_VOCAB)
    count = _check_int("count", count, 0, 1 << 40)
    buf = _as_buffer(data)
    expected = int(lib.qsv_codec_token_bytes(vocab_size, count))
    if len(buf) != expected:
        kind = "truncated" if len(buf) < expected else "trailing bytes"
        raise CodecError(f"unpack_tokens: {kind}: {len(buf)} bytes, {count} ids at V={vocab_size} need {expected}")
    ids = np.empty(count, dtype=np.uint32)
    rc = lib.qsv_codec_unpack_tokens(buf, len(buf), count, vocab_size, ffi.from_buffer("uint32_t[]", ids))
    _status(rc, f"unpack_tokens ({len(buf)} bytes, {count} ids, V={vocab_size})")
    return ids
