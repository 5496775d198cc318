"""The numeric paths the target can run in on a CPU (or GPU), and how a dense model is turned into each.

- ``fp32``: float32 weights and GEMMs; everywhere.
- ``bf16``: bfloat16 weights and GEMMs; CPUs with native bf16 (avx512_bf16 or AMX), CUDA.
- ``int8``: int8 weights, one scale per output channel; each Linear's input quantized to 8 bits per token
  (``Int8Linear``), int8×int8→int32 GEMM (fbgemm/oneDNN on x86-64, qnnpack on ARM), float32 elsewhere.
- ``fp16``: float16 weights and GEMMs; CUDA only.

``int8`` replaces every ``nn.Linear`` (the language-model head included) by ``Int8Linear``; embeddings and norms stay
float32. Measured alternatives that lost (benchmarks/verifier_paths.py, 1.5B target, one AVX-512 BF16 core; figures
in BENCHMARKS.md): int8 weight-only ``_weight_int8pack_mm`` and int4 weight-only ``_weight_int4pack_mm_for_cpu``
with bf16 activations cost 2.2× and 1.3× int8's 1-token pass and 3.6× and 2.4× its 5-token pass; PyTorch's stock
dynamic int8 is 5 % faster but takes one activation scale per pass (not row-independent, see below) and lands 4×
further from fp32.

Exactness: the verifier samples from the target's p as this path computes it, so QSV's output follows the law of the
target *in that precision*. In every path a position's p depends only on the tokens before it (``Int8Linear`` makes
the int8 path row-independent bit for bit; fp32/bf16 GEMMs are row-independent by construction), which is what the
speculative-sampling argument needs.
"""

from __future__ import annotations

import logging
import platform
import threading

import torch
from torch import nn

from qsv_wire.cpu import CpuInfo, cpu_info  # noqa: F401 - re-exported: the calibration key and tests use them

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8", "fp16")
AUTO = "auto"
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "qint8": "int8"}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


class PrecisionError(ValueError):
    """An unknown precision name, or one this device cannot run."""


def canonical(name: str) -> str:
    """``fp32``/``bf16``/``int8``/``fp16``/``auto`` from a name or alias; PrecisionError otherwise."""
    key = ALIASES.get(name.lower(), name.lower())
    if key != AUTO and key not in PRECISIONS:
        raise PrecisionError(f"unknown precision {name!r}; choose from auto, {', '.join(PRECISIONS)}")
    return key


def available(device: torch.device) -> list[str]:
    """The precisions worth trying on ``device``: on a CPU fp32 always, bf16 only with native bf16 units (emulated
    bf16 was slower than fp32 on every AVX2/AVX-512-without-bf16 CPU measured), int8 where a quantized engine exists;
    on CUDA bf16 (where supported) and fp16."""
    if device.type == "cuda":
        out = ["fp16"]
        if torch.cuda.is_bf16_supported():
            out.insert(0, "bf16")
        return out
    out = ["fp32"]
    if cpu_info().native_bf16:
        out.append("bf16")
    if _int8_engine() is not None:
        out.append("int8")
    return out


def check_supported(name: str, device: torch.device) -> None:
    """PrecisionError if ``name`` cannot run on ``device`` at all (emulated bf16 on a CPU is allowed when pinned)."""
    if device.type == "cuda" and name == "int8":
        raise PrecisionError("int8 (dynamic quantization) runs on CPUs only; use bf16 or fp16 on CUDA")
    if device.type == "cpu" and name == "fp16":
        raise PrecisionError("fp16 runs on CUDA only; on a CPU use fp32, bf16 or int8")
    if name == "int8" and _int8_engine() is None:
        raise PrecisionError("int8 needs a quantized engine (fbgemm, x86, onednn or qnnpack); this torch has none")


def _int8_engine() -> str | None:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack", "onednn"):
        if engine in engines:
            return engine
    return None


def of_dtype(dtype: torch.dtype) -> str:
    """The precision name of a plain floating dtype (``str(dtype)`` for any other)."""
    return next((name for name, d in TORCH_DTYPES.items() if d == dtype and name != "int8"), str(dtype))


def torch_dtype(name: str) -> torch.dtype:
    """The floating dtype of the non-quantized parts (int8 keeps embeddings and norms in float32)."""
    return TORCH_DTYPES[canonical(name)]


# ---------------------------------------------------------------------------------------------- int8 linear layers


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight (out, in), float32 scale (out,)); w ≈ q · scale."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class RowRanges:
    """The per-row normalization of ``Int8Linear``'s input, remembered for the last input tensor of this thread, so
    layers fed the same tensor (q/k/v projections, gate/up) normalize it once. One per model
    (``weight_cache.build_model``), per thread (forwards may run concurrently). The reuse is keyed by tensor identity
    (and its version counter outside inference mode): the decoder layers feed their projections fresh tensors."""

    def __init__(self) -> None:
        self._local = threading.local()

    def normalize(self, x: torch.Tensor, width: int,
                  pins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        version = -1 if x.is_inference() else x._version  # inference tensors have no version counter
        last = getattr(self._local, "last", None)
        if last is not None and last[0] is x and last[1] == version:
            return last[2]
        rows = x.reshape(-1, width).float()
        lo, hi = torch.aminmax(rows, dim=1, keepdim=True)
        center = (hi + lo) * 0.5
        half = ((hi - lo) * 0.5).clamp_min(1e-30)
        unit = torch.cat([((rows - center) / half).clamp_(-1.0, 1.0), pins.expand(rows.shape[0], 2)], dim=1)
        self._local.last = (x, version, (unit, center, half))
        return unit, center, half


class Int8Linear(nn.Module):
    """y = W·x + b with W int8 per output channel and x quantized to 8 bits *per row* (per token).

    PyTorch's int8 GEMM (``quantized::linear_dynamic``) quantizes its whole input with one scale and zero point taken
    from the input's min and max. Over a verification pass that would make the distribution at position i depend on
    the values of the *later* draft tokens in the same pass (their activations move the scale), which breaks the
    exactness argument of speculative sampling. Each row is therefore mapped affinely onto [−1, 1] first,
    x = c + h·x′ with c = (max + min)/2, h = (max − min)/2 per row, and two constant input columns +1 and −1 (with zero
    weights) pin the GEMM's range to exactly [−1, 1]; then W·x = h·(W·x′) + c·(W·1). The quantization parameters are
    the same for every pass, the int8 products are accumulated exactly in int32, so each row's output depends on that
    row alone, bit for bit, whatever else is in the pass or the batch; and every token gets its own 8-bit range
    (a token with huge activations, such as the first one, no longer coarsens the others).

    ``reduce_range`` (7-bit activations) is needed on CPUs whose int8 dot products accumulate pairs in saturating
    16-bit lanes (AVX2 ``vpmaddubsw``); with VNNI (``vpdpbusd``, 32-bit accumulation) or on ARM the full range is safe.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool,
                 shared: RowRanges | None = None, row_sums: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.ranges = shared or RowRanges()
        padded = torch.cat([q, torch.zeros(q.shape[0], 2, dtype=torch.int8)], dim=1)
        qweight = torch._make_per_channel_quantized_tensor(padded, scale.double(),
                                                           torch.zeros(q.shape[0], dtype=torch.long), 0)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        if row_sums is None:
            row_sums = weight_row_sums(q, scale)
        self.register_buffer("row_sums", row_sums.float(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float(), persistent=False)
        self.register_buffer("pins", torch.tensor([[1.0, -1.0]]), persistent=False)
        self.reduce_range = reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        unit, center, half = self.ranges.normalize(x, self.in_features, self.pins)
        y = torch.ops.quantized.linear_dynamic(unit, self._packed, reduce_range=self.reduce_range)
        y = torch.addcmul(y * half, center, self.row_sums)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, reduce_range={self.reduce_range}"


def weight_row_sums(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """W·1 of the dequantized weights (an exact integer row sum times the channel scale); the converted-weight cache
    stores it, since the sum costs a third of a layer's load."""
    return q.sum(dim=1, dtype=torch.int32).float() * scale.float()


def full_range_int8() -> bool:
    """Whether 8-bit activations cannot overflow the int8 GEMM's accumulators on this CPU (see ``Int8Linear``)."""
    info = cpu_info()
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & info.flags) or platform.machine() in ("aarch64", "arm64")


def int8_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                shared: RowRanges | None = None, row_sums: torch.Tensor | None = None) -> nn.Module:
    """An int8 Linear from an int8 weight and its per-channel scales (what ``quantize_weight`` gives); layers of one
    model share ``shared`` (``RowRanges``). The weights are packed for this machine's preferred quantized engine."""
    engine = _int8_engine()
    if engine is None:
        raise PrecisionError("int8 needs a quantized engine (fbgemm, x86, onednn or qnnpack); this torch has none")
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine
    return Int8Linear(q, scale, bias, reduce_range=not full_range_int8(), shared=shared, row_sums=row_sums)


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Linear`` in ``model`` (the layers the int8 path quantizes)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def describe(name: str) -> str:
    return {
        "fp32": "float32 weights and GEMMs",
        "bf16": "bfloat16 weights and GEMMs",
        "fp16": "float16 weights and GEMMs (CUDA)",
        "int8": "int8 per-channel weights, 8-bit activations per token",
    }[canonical(name)]
