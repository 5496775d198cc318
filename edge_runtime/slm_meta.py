"""What the runtime needs to know about an export, without torch: file names, the KV layout, meta.json reading.

An export directory (written by :mod:`qsv_tools.export.onnx_export`) holds ``meta.json`` whose ``files`` map
names each ONNX variant's file (``{"fp32": "model.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}``),
plus the KV layout, the EOS ids and, when the model has one, ``tokenizer.json``. The edge runtime imports this
module (onnxruntime + numpy only); the exporter, which needs torch, imports it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORT_FORMAT = 1
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT4_FILE = "model.int4.onnx"
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"


class ExportMetaError(FileNotFoundError):
    """An ONNX model / export directory that the runtime cannot use (missing file, no meta.json, unknown model)."""


@dataclass(frozen=True)
class KVLayout:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: object) -> KVLayout:
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return cls(int(config.num_hidden_layers), kv_heads, int(head_dim), int(config.vocab_size))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> KVLayout:
        return cls(int(meta["num_layers"]), int(meta["num_kv_heads"]), int(meta["head_dim"]), int(meta["vocab_size"]))


def kv_names(num_layers: int, prefix: str) -> list[str]:
    """``[prefix.0.key, prefix.0.value, prefix.1.key, …]``."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    meta: dict[str, Any]

    @property
    def fp32_path(self) -> Path:
        return self.directory / FP32_FILE

    @property
    def int8_path(self) -> Path:
        return self.directory / INT8_FILE

    @property
    def int4_path(self) -> Path:
        return self.directory / INT4_FILE

    @property
    def files(self) -> dict[str, str]:
        """variant → file name (relative to ``directory``)."""
        return dict(self.meta.get("files", {}))


def load_export(directory: Path) -> ExportResult:
    meta_path = Path(directory) / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} is not a QSV ONNX export (no {META_FILE}); run qsv export first")
    return ExportResult(Path(directory), json.loads(meta_path.read_text()))


def export_of_model(onnx_path: str | Path) -> tuple[ExportResult, str]:
    """(export, variant) of an exported ONNX model file: the export is the directory holding the file, whose
    meta.json must list the file under ``files``; the variant is the key it is listed under (matched by file
    name). Raises :class:`ExportMetaError` when the file is missing, no meta.json lies beside it, or meta.json
    does not list it."""
    path = Path(onnx_path)
    if path.is_dir():
        raise ExportMetaError(f"{path} is a directory; give the .onnx model file of the export (e.g. "
                              f"{path / FP32_FILE})")
    if not path.is_file():
        raise ExportMetaError(f"ONNX model {path} does not exist")
    meta_path = path.parent / META_FILE
    if not meta_path.is_file():
        raise ExportMetaError(f"no {META_FILE} beside {path}: the model must sit in its export directory as written "
                              f"by qsv export (model files, {META_FILE}, tokenizer.json)")
    try:
        export = ExportResult(path.parent, json.loads(meta_path.read_text()))
    except ValueError as exc:
        raise ExportMetaError(f"{meta_path} is not valid JSON: {exc}") from None
    files = export.files
    for variant, name in files.items():
        if name == path.name:
            return export, variant
    listed = ", ".join(f"{v}: {n}" for v, n in sorted(files.items())) or "none"
    raise ExportMetaError(f"{path.name} is not a model of the export in {path.parent} ({META_FILE} lists {listed})")
