"""The edge SLM: an exported causal LM (see :mod:`qsv_tools.export`) run by onnxruntime with a KV cache.

One object holds one sequence. ``forward(ids)`` runs T new tokens against the cache (T = len(prompt) for prefill,
1 for decode, several for a multi-token step) and returns the logits as a float32 numpy array that *is* the buffer
onnxruntime wrote (bound with io_binding): no copy, valid until the next ``forward``. ``rollback(n)`` keeps the
first n cached tokens exactly (it slices the cache; nothing is recomputed).

Loading: ``OnnxSLM(export_dir, variant)`` for an export directory, ``OnnxSLM.from_file(onnx_path)`` for one model
file of an export (its meta.json beside it names the variant), :func:`slm_from_config` for a board config's
``model`` section. This module needs onnxruntime, numpy and tokenizers only (no torch).

:class:`qsv_tools.torch_slm.TorchSLM` has the same interface on a transformers model (the eager baseline of the
benchmarks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_runtime.slm_meta import ExportMetaError, KVLayout, export_of_model, kv_names, load_export

if TYPE_CHECKING:
    from edge_runtime.config import BoardConfig, ModelConfig

log = logging.getLogger(__name__)


class SLMError(RuntimeError):
    """Bad use of an SLM (rollback past the cache, empty step, token out of range)."""


class DraftModel(Protocol):
    """What the drafter needs from a small model."""

    vocab_size: int
    eos_token_ids: list[int]

    @property
    def length(self) -> int: ...

    def forward(self, token_ids: Sequence[int]) -> np.ndarray: ...

    def rollback(self, length: int) -> None: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime settings. ``threads``: intra-op threads, 0 lets onnxruntime choose (one per physical core).
    Spinning off: idle worker threads sleep instead of burning a shared CPU."""

    threads: int = 1
    spinning: bool = False
    optimization: str = "all"  # "all" | "extended" | "basic" | "none"

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: onnxruntime's default), got {self.threads}")
        if self.optimization not in ("all", "extended", "basic", "none"):
            raise ValueError(f"unknown optimization level {self.optimization!r}")

    def session_options(self) -> Any:
        import onnxruntime as ort

        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = levels[self.optimization]
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return opts


def check_step(token_ids: Sequence[int], vocab_size: int) -> np.ndarray:
    ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
    if ids.shape[1] == 0:
        raise SLMError("a step needs at least one token")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise SLMError(f"token id out of range 0..{vocab_size - 1}")
    return ids


class OnnxSLM:
    """A causal LM exported by ``qsv export`` (directory with meta.json), run on onnxruntime's CPU provider.

    ``tokenizer_path``: a tokenizer.json to use instead of the export's own (default: the export's, if any)."""

    def __init__(self, export_dir: str | Path, variant: str = "fp32", config: SessionConfig | None = None,
                 tokenizer_path: str | Path | None = None) -> None:
        import onnxruntime as ort

        export = load_export(Path(export_dir))
        files = export.meta["files"]
        if variant not in files:
            raise SLMError(f"export {export_dir} has no {variant!r} model (has {sorted(files)}); "
                           f"run qsv export {'--' + variant + ' ' if variant in ('int8', 'int4') else ''}again")
        self.export = export
        self.variant = variant
        self.config = config or SessionConfig()
        meta = export.meta
        self.layout = KVLayout(meta["num_layers"], meta["num_kv_heads"], meta["head_dim"], meta["vocab_size"])
        self.vocab_size = self.layout.vocab_size
        self.eos_token_ids: list[int] = list(meta.get("eos_token_ids", []))
        self.session = ort.InferenceSession(str(export.directory / files[variant]), self.config.session_options(),
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = None
        if tokenizer_path is not None and not Path(tokenizer_path).is_file():
            raise ExportMetaError(f"tokenizer {tokenizer_path} does not exist")
        tokenizer_file = tokenizer_path or (export.directory / meta["tokenizer"] if meta.get("tokenizer") else None)
        if tokenizer_file is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._past_names = kv_names(self.layout.num_layers, "past")
        self._present_names = kv_names(self.layout.num_layers, "present")
        self._binding = self.session.io_binding()
        self._logits_buffers: dict[int, np.ndarray] = {}
        self._past: list[Any] = []
        self._past_arrays: list[np.ndarray] = []  # keep numpy memory alive behind OrtValues made from it
        self._length = 0
        self.reset()

    @classmethod
    def from_file(cls, onnx_path: str | Path, tokenizer_path: str | Path | None = None,
                  config: SessionConfig | None = None) -> OnnxSLM:
        """Load one model file of an export (e.g. ``…/model.int8.onnx``). The export's meta.json must lie beside
        it and list the file under ``files``; the variant is the entry naming it. Raises ExportMetaError
        (a FileNotFoundError) when the file, the meta.json or its entry is missing."""
        export, variant = export_of_model(onnx_path)
        return cls(export.directory, variant, config, tokenizer_path=tokenizer_path)

    # -- tokenization ------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise SLMError("this export has no tokenizer.json")
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise SLMError("this export has no tokenizer.json")
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=False))

    # -- cache ----------------------------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Number of tokens in the KV cache."""
        return self._length

    def reset(self) -> None:
        """Empty the cache."""
        from onnxruntime import OrtValue

        shape = (1, self.layout.num_kv_heads, 0, self.layout.head_dim)
        self._past_arrays = [np.zeros(shape, np.float32) for _ in self._past_names]
        self._past = [OrtValue.ortvalue_from_numpy(a) for a in self._past_arrays]
        self._length = 0

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached tokens (exact: a slice of the stored keys/values)."""
        from onnxruntime import OrtValue

        if not 0 <= length <= self._length:
            raise SLMError(f"cannot roll back to {length} tokens: the cache holds {self._length}")
        if length == self._length:
            return
        arrays = [np.ascontiguousarray(value.numpy()[:, :, :length]) for value in self._past]
        self._past_arrays = arrays
        self._past = [OrtValue.ortvalue_from_numpy(a) for a in arrays]
        self._length = length

    # -- compute --------------------------------------------------------------------------------------------------
    def _logits_buffer(self, new_tokens: int) -> np.ndarray:
        buffer = self._logits_buffers.get(new_tokens)
        if buffer is None:
            buffer = np.empty((1, new_tokens, self.vocab_size), np.float32)
            self._logits_buffers[new_tokens] = buffer
        return buffer

    def forward(self, token_ids: Sequence[int]) -> np.ndarray:
        """Append ``token_ids`` to the cache; logits (T, V) float32 for them — a view of onnxruntime's output
        buffer, overwritten by the next ``forward`` with the same T (copy it to keep it)."""
        ids = check_step(token_ids, self.vocab_size)
        binding = self._binding
        binding.bind_cpu_input("input_ids", ids)
        for name, value in zip(self._past_names, self._past, strict=True):
            binding.bind_ortvalue_input(name, value)
        logits = self._logits_buffer(ids.shape[1])
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        for name in self._present_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        self._past = binding.get_outputs()[1:]
        self._past_arrays = []
        self._length += ids.shape[1]
        return logits[0]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        """Reset, run the prompt; logits (V,) of the next token."""
        self.reset()
        return self.forward(token_ids)[-1]


def vocab_hash_of(cfg: BoardConfig, slm: OnnxSLM) -> bytes:
    """The vocabulary hash a board sends in its OPEN: the config's ``model.vocab_hash``, else the one its export
    recorded, else 32 zero bytes (unknown: a verifier then checks only the vocabulary size)."""
    text = cfg.model.vocab_hash or slm.export.meta.get("vocab_hash")
    return bytes.fromhex(text) if text else bytes(32)


def slm_from_config(cfg: ModelConfig | BoardConfig) -> OnnxSLM:
    """The SLM a board config's ``model`` section names. Give the whole BoardConfig to resolve relative paths
    against the config file's directory (a bare ModelConfig's paths are used as they are).

    * ``onnx_path``: an exported model file; the variant (fp32 / int8 / int4) is the one meta.json beside it lists
      for that file. An export directory is accepted too; then ``onnxruntime.int8`` picks ``model.int8.onnx`` over
      the fp32 model. ``onnxruntime.int8: true`` with a file that is not the int8 variant is an error (the flag is
      otherwise redundant: the file decides).
    * ``tokenizer_path``: tokenizer.json (default: the export's own).
    * ``vocab_hash``: when set, must equal the export's recorded vocabulary hash (if it recorded one).
    * ``onnxruntime.intra_op_threads``: 0 lets onnxruntime choose (one thread per physical core);
      ``spinning``: let idle intra-op threads spin.
    """
    model = getattr(cfg, "model", cfg)
    resolve = getattr(cfg, "resolve_path", None) or (lambda p: None if p is None else Path(p))
    onnx_path: Path | None = resolve(model.onnx_path)
    if onnx_path is None:
        raise ExportMetaError("model.onnx_path is not set: the board config must name the exported .onnx model")
    ort = model.onnxruntime
    session = SessionConfig(threads=ort.intra_op_threads, spinning=ort.spinning)
    tokenizer_path = resolve(model.tokenizer_path)
    if onnx_path.is_dir():
        slm = OnnxSLM(onnx_path, "int8" if ort.int8 else "fp32", session, tokenizer_path=tokenizer_path)
    else:
        export, variant = export_of_model(onnx_path)
        if ort.int8 and variant != "int8":
            raise SLMError(f"model.onnxruntime.int8 is true but model.onnx_path {onnx_path} is the {variant} model "
                           f"of its export; point onnx_path at the int8 file or drop int8")
        slm = OnnxSLM(export.directory, variant, session, tokenizer_path=tokenizer_path)
    recorded = slm.export.meta.get("vocab_hash")
    if model.vocab_hash and recorded and model.vocab_hash != recorded:
        raise SLMError(f"model.vocab_hash {model.vocab_hash} differs from the export's vocabulary hash {recorded}")
    log.info("SLM %s (%s), %s intra-op threads", onnx_path, slm.variant, ort.intra_op_threads or "auto")
    return slm
