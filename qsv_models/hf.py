"""Load a causal LM and its tokenizer with transformers from a registry name, a GGUF file or a HF model folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qsv_models.registry import MODELS

log = logging.getLogger(__name__)


def resolve_model(name_or_path: str | Path, fetch_missing: bool = True) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a registry name, a ``.gguf`` file or a HF model folder."""
    key = str(name_or_path)
    if key in MODELS:
        from qsv_models.fetch import fetch, gguf_path

        gguf = fetch(key) if fetch_missing else gguf_path(key)
        return gguf.parent, gguf.name
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").exists():
        return path, None
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a known model ({', '.join(sorted(MODELS))}), a .gguf file, nor a HF model "
        f"folder with config.json"
    )


def load_tokenizer(name_or_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    folder, gguf_file = resolve_model(name_or_path)
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file) if gguf_file else \
        AutoTokenizer.from_pretrained(folder)


def load_causal_lm(name_or_path: str | Path, dtype: str = "float32", with_tokenizer: bool = True,
                   dequantize: bool = True) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer or None).

    GGUF weights are unpacked into a plain dense ``dtype`` model when ``dequantize`` (what the ONNX export and the
    eager baselines need); otherwise transformers keeps them in GGUF blocks and computes with its GGUF matmul
    kernels (in float32, casting other dtypes).
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder, gguf_file = resolve_model(name_or_path)
    torch_dtype = getattr(torch, dtype)
    log.info("loading %s (%s) as %s", folder / (gguf_file or ""), "gguf" if gguf_file else "hf", dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if gguf_file:
        from transformers.utils.quantization_config import GgufConfig

        kwargs["gguf_file"] = gguf_file
        if dequantize:
            kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    if not with_tokenizer:
        return model, None
    try:
        tokenizer = load_tokenizer(name_or_path)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("no usable tokenizer with %s (%s): continuing with token ids only", name_or_path, exc)
        tokenizer = None
    return model, tokenizer


def save_tokenizer_json(tokenizer: Any, dest_dir: Path) -> Path:
    """Write ``tokenizer.json`` (readable by the ``tokenizers`` package alone) into ``dest_dir``; return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(dest_dir)
    path = dest_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{type(tokenizer).__name__}.save_pretrained wrote no tokenizer.json in {dest_dir}")
    return path
