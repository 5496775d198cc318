"""Python API of the QSV C core: lattice quantization of a draft distribution and Q-S sampling.

    point = quantize_logits(logits, ell=720, temperature=0.4)   # float32 logits -> LatticePoint
    token = sample(point, u)                                    # u uniform integer in [0, ell)
    data = encode(point, vocab_size, ell)                       # uplink bytes (qsv_wire.codec)
    token, data = Quantizer(V).draft_token(logits, 720, u, 0.4)  # all three in one C call (the hot path)

Arrays go to C without copies (``ffi.from_buffer``). For the per-token hot path use a ``Quantizer``: it owns the
workspace and output buffers, and ``quantize_logits_into`` returns only the number of nonzeros (the point is in
``quantizer.indices[:nnz]`` / ``quantizer.counts[:nnz]``). A ``Quantizer`` serves one thread at a time; the
module-level functions keep one per thread and vocabulary size, so they are thread-safe.
The rules (temperature, top-k / top-p ties, rounding and sum fix, tolerance of the float path) are documented in
csrc/qsv_quant.h; qsv_wire/reference.py is the numpy specification.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from qsv_wire import codec as codec_module
from qsv_wire._native import CoreError, check, ffi, lib
from qsv_wire.codec import bound_bits, decode, encode  # noqa: F401  (re-exported: the public core API)
from qsv_wire.lattice import MAX_ELL, MAX_VOCAB, LatticePoint

KERNELS = {
    "auto": lib.QSV_KERNEL_AUTO,
    "scalar": lib.QSV_KERNEL_SCALAR,
    "vector": lib.QSV_KERNEL_VECTOR,
    "avx2": lib.QSV_KERNEL_AVX2,
}

__all__ = [
    "CoreError",
    "CoreTypeError",
    "Quantizer",
    "quantize_logits",
    "quantize_probs",
    "sample",
    "logits_scaled",
    "kernel_available",
    "encode",
    "decode",
    "bound_bits",
    "MAX_ELL",
    "MAX_VOCAB",
]


class CoreTypeError(TypeError):
    """Input of the wrong type, dtype, shape or memory layout."""


def _check_array(arr: Any, name: str, dtypes: tuple[type, ...]) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise CoreTypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype not in [np.dtype(d) for d in dtypes]:
        allowed = " or ".join(np.dtype(d).name for d in dtypes)
        raise CoreTypeError(f"{name} must have dtype {allowed}, got {arr.dtype}")
    if arr.ndim != 1:
        raise CoreTypeError(f"{name} must be 1-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise CoreTypeError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if arr.size == 0:
        raise CoreError(f"{name} is empty")
    if arr.size > MAX_VOCAB:
        raise CoreError(f"{name} has {arr.size} entries, more than the supported vocabulary {MAX_VOCAB}")
    return arr


def _check_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CoreTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise CoreError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


def _check_params(ell: Any, temperature: Any, top_k: Any, top_p: Any) -> tuple[int, float, int, float]:
    ell = _check_int(ell, "ell", 1, MAX_ELL)
    top_k = _check_int(top_k, "top_k", 0, 2**32 - 1)
    for name, val in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)):
            raise CoreTypeError(f"{name} must be a number, got {type(val).__name__}")
    temperature, top_p = float(temperature), float(top_p)
    if not (temperature == 0.0 or 1e-6 <= temperature <= 1e6):
        raise CoreError(f"temperature must be 0 (greedy) or in [1e-6, 1e6], got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise CoreError(f"top_p must be in (0, 1], got {top_p}")
    return ell, temperature, top_k, top_p


def _kernel_id(kernel: str) -> int:
    if kernel not in KERNELS:
        raise CoreError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    return int(KERNELS[kernel])


def kernel_available(kernel: str) -> bool:
    """Whether a softmax kernel ("scalar", "vector", "avx2") runs on this CPU / build."""
    return bool(lib.qsv_kernel_available(_kernel_id(kernel)))


class Quantizer:
    """Workspace and output buffers for one vocabulary size; reuse it per token (one thread at a time)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = _check_int(vocab_size, "vocab_size", 1, MAX_VOCAB)
        ws = np.empty(lib.qsv_quant_workspace_size(self.vocab_size), dtype=np.uint8)
        cap = min(self.vocab_size, MAX_ELL)
        self.indices = np.zeros(cap, dtype=np.uint32)
        self.counts = np.zeros(cap, dtype=np.uint32)
        self.nnz = 0
        self.ell = 0
        self._ws_ptr = ffi.from_buffer("uint8_t[]", ws, require_writable=True)
        self._ws_owner = ffi.new("qsv_workspace *", (self._ws_ptr, ws.nbytes))
        self._ws = self._ws_owner[0]  # the struct the C functions take by value (a view of _ws_owner)
        self._idx_ptr = ffi.from_buffer("uint32_t[]", self.indices, require_writable=True)
        self._cnt_ptr = ffi.from_buffer("uint32_t[]", self.counts, require_writable=True)
        self._point = ffi.new("qsv_point *", (self._idx_ptr, self._cnt_ptr, cap, 0))
        self._params = ffi.new("qsv_quant_params *")
        self._buffers = (self._ws_ptr, self._idx_ptr, self._cnt_ptr)  # the memory the structs point into
        self._draft_settings: tuple | None = None  # draft_token: last validated (ell, T, top_k, top_p, mode) ...
        self._draft_args: tuple = ()  # ... and what it needs for them (codec handle, message buffer)
        self._draft_logits: np.ndarray | None = None  # ... and the last logits array with its cffi buffer
        self._draft_logits_ptr: Any = None

    def _dense_ptr(self, dense_out: np.ndarray | None) -> Any:
        if dense_out is None:
            return ffi.NULL
        _check_array(dense_out, "dense_out", (np.uint32,))
        if dense_out.size != self.vocab_size:
            raise CoreError(f"dense_out must have {self.vocab_size} entries, got {dense_out.size}")
        return ffi.from_buffer("uint32_t[]", dense_out, require_writable=True)

    def _check_vocab(self, arr: np.ndarray, name: str) -> None:
        if arr.size != self.vocab_size:
            raise CoreError(f"{name} has {arr.size} entries, this quantizer is for vocab_size={self.vocab_size}")

    def quantize_logits_into(
        self,
        logits: np.ndarray,
        ell: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        dense_out: np.ndarray | None = None,
        kernel: str = "auto",
    ) -> int:
        """Quantizes float32 logits into ``self.indices`` / ``self.counts``; returns nnz."""
        _check_array(logits, "logits", (np.float32,))
        self._check_vocab(logits, "logits")
        ell, temperature, top_k, top_p = _check_params(ell, temperature, top_k, top_p)
        params = self._params
        params.ell, params.temperature, params.top_k, params.top_p = ell, temperature, top_k, top_p
        params.kernel = _kernel_id(kernel)
        rc = lib.qsv_quantize_logits(ffi.from_buffer("float[]", logits), logits.size, params, self._ws, self._point,
                                     self._dense_ptr(dense_out))  # fmt: skip
        check(rc, "quantize_logits")
        self.nnz, self.ell = int(self._point.nnz), ell
        return self.nnz

    def quantize_probs_into(self, probs: np.ndarray, ell: int, dense_out: np.ndarray | None = None) -> int:
        """Quantizes probabilities (float64 or float32, sum within 1e-3 of 1, not renormalized); returns nnz."""
        _check_array(probs, "probs", (np.float64, np.float32))
        self._check_vocab(probs, "probs")
        ell = _check_int(ell, "ell", 1, MAX_ELL)
        if probs.dtype == np.float64:
            fn, ptr = lib.qsv_quantize_probs_f64, ffi.from_buffer("double[]", probs)
        else:
            fn, ptr = lib.qsv_quantize_probs_f32, ffi.from_buffer("float[]", probs)
        check(fn(ptr, probs.size, ell, self._ws, self._point, self._dense_ptr(dense_out)), "quantize_probs")
        self.nnz, self.ell = int(self._point.nnz), ell
        return self.nnz

    def draft_token(
        self,
        logits: np.ndarray,
        ell: int,
        u: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        mode: str = "auto",
    ) -> tuple[int, bytes]:
        """One draft token in one C call (``qsv_draft_token``): quantize the logits, draw the token from the lattice
        point with the uniform integer u in [0, ell) (Q-S), encode the point ("auto" or "enum" codec mode).
        Returns (token, message); the point stays in ``indices[:nnz]`` / ``counts[:nnz]`` as after
        ``quantize_logits_into``. Per-token overhead is kept low: parameters are validated when they change, the
        logits array when it is a different object than last time (an SLM reuses its output buffer)."""
        settings = (type(ell), ell, type(temperature), temperature, type(top_k), top_k, type(top_p), top_p, mode)
        if settings != self._draft_settings:
            self._draft_args = self._draft_setup(ell, temperature, top_k, top_p, mode)
            self._draft_settings = settings
        if logits is not self._draft_logits:
            _check_array(logits, "logits", (np.float32,))
            self._check_vocab(logits, "logits")
            self._draft_logits, self._draft_logits_ptr = logits, ffi.from_buffer("float[]", logits)
        elif logits.dtype != np.float32 or logits.size != self.vocab_size:  # changed in place since
            self._draft_logits = None
            return self.draft_token(logits, ell, u, temperature, top_k, top_p, mode)
        ell_i, params, handle, out, msg, ws = self._draft_args
        if type(u) is not int or not 0 <= u < ell_i:
            u = _check_int(u, "u", 0, ell_i - 1)
        token = lib.qsv_draft_token(self._draft_logits_ptr, params, handle.params, u, ws, self._point, msg)
        if token < 0:
            check(token, "draft_token")
        self.nnz, self.ell = self._point.nnz, ell_i
        return token, bytes(out[: (msg.bits + 7) >> 3])

    def _draft_setup(self, ell: Any, temperature: Any, top_k: Any, top_p: Any, mode: str) -> tuple:
        ell, temperature, top_k, top_p = _check_params(ell, temperature, top_k, top_p)
        handle = codec_module.encoder_handle(self.vocab_size, ell, mode)
        params = ffi.new("qsv_quant_params *", (ell, temperature, top_k, top_p, lib.QSV_KERNEL_AUTO))
        out = bytearray(handle.capacity)
        out_ptr = ffi.from_buffer("uint8_t[]", out, require_writable=True)
        msg = ffi.new("qsv_message *", (out_ptr, handle.capacity, handle.mode_code, 0, 0))
        ws = self._ws
        if lib.qsv_draft_workspace_size(handle.params) > ws.size:  # the codec needs more scratch than the quantizer
            buf = ffi.new("uint8_t[]", lib.qsv_draft_workspace_size(handle.params))
            owner = ffi.new("qsv_workspace *", (buf, len(buf)))
            ws = owner[0]
            self._buffers += (buf, owner)
        self._buffers += (out_ptr,)
        return ell, params, handle, out, msg, ws

    def point(self) -> LatticePoint:
        """The last result as a LatticePoint (copies the buffers; no re-validation of the C output)."""
        if self.nnz == 0:
            raise CoreError("nothing quantized yet")
        nnz = self.nnz
        return LatticePoint.trusted(self.indices[:nnz].copy(), self.counts[:nnz].copy(), self.ell, self.vocab_size)

    def sample_last(self, u: int) -> int:
        """Q-S sample from the last result without building a LatticePoint."""
        if self.nnz == 0:
            raise CoreError("nothing quantized yet")
        u = _check_int(u, "u", 0, self.ell - 1)
        self._point.nnz = self.nnz
        return check(lib.qsv_sample(self._point, self.ell, u), "sample")

    def quantize_logits(self, logits: np.ndarray, ell: int, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0, kernel: str = "auto") -> LatticePoint:  # fmt: skip
        self.quantize_logits_into(logits, ell, temperature, top_k, top_p, kernel=kernel)
        return self.point()

    def quantize_probs(self, probs: np.ndarray, ell: int) -> LatticePoint:
        self.quantize_probs_into(probs, ell)
        return self.point()


_local = threading.local()


def _quantizer(vocab_size: int) -> Quantizer:
    cache: dict[int, Quantizer] | None = getattr(_local, "quantizers", None)
    if cache is None:
        cache = _local.quantizers = {}
    q = cache.get(vocab_size)
    if q is None:
        if len(cache) >= 4:  # a few vocabularies per thread are plenty; drop the oldest
            cache.pop(next(iter(cache)))
        q = cache[vocab_size] = Quantizer(vocab_size)
    return q


def quantize_logits(
    logits: np.ndarray, ell: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> LatticePoint:
    """Lattice point of softmax(logits / T) after top-k / top-p (float32 logits, C-contiguous)."""
    _check_array(logits, "logits", (np.float32,))
    return _quantizer(logits.size).quantize_logits(logits, ell, temperature, top_k, top_p)


def quantize_probs(probs: np.ndarray, ell: int) -> LatticePoint:
    """Lattice point of given probabilities (float64 or float32; exact integer steps, no softmax)."""
    _check_array(probs, "probs", (np.float64, np.float32))
    return _quantizer(probs.size).quantize_probs(probs, ell)


def sample(point: LatticePoint, u: int) -> int:
    """Q-S sampling: the token t with cum(t-1) <= u < cum(t) over the counts in index order; u in [0, ell)."""
    if not isinstance(point, LatticePoint):
        raise CoreTypeError(f"point must be a LatticePoint, got {type(point).__name__}")
    u = _check_int(u, "u", 0, point.ell - 1)
    idx, cnt = ffi.from_buffer("uint32_t[]", point.indices), ffi.from_buffer("uint32_t[]", point.counts)
    c_point = ffi.new("qsv_point *", (idx, cnt, point.nnz, point.nnz))
    return check(lib.qsv_sample(c_point, point.ell, u), "sample")


def logits_scaled(
    logits: np.ndarray, ell: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, kernel: str = "auto"
) -> np.ndarray:
    """The x = ell * q (float64, dense) that the fused path feeds into the lattice rule; for tests."""
    _check_array(logits, "logits", (np.float32,))
    ell, temperature, top_k, top_p = _check_params(ell, temperature, top_k, top_p)
    q = _quantizer(logits.size)
    out = np.empty(logits.size, dtype=np.float64)
    params = ffi.new("qsv_quant_params *", (ell, temperature, top_k, top_p, _kernel_id(kernel)))
    rc = lib.qsv_logits_scaled(ffi.from_buffer("float[]", logits), logits.size, params, q._ws,
                               ffi.from_buffer("double[]", out, require_writable=True))  # fmt: skip
    check(rc, "logits_scaled")
    return out
