"""Export of a causal LM to ONNX with an explicit KV cache (past in, present out), optional int8 quantization.

Importing the package does not import torch: :mod:`edge_runtime.slm_meta` (file names, KV layout, meta.json)
is what the edge runtime uses; ``KVCacheWrapper`` (torch) is imported on first access.
"""

from typing import Any

from edge_runtime.slm_meta import kv_names

__all__ = ["KVCacheWrapper", "kv_names"]


def __getattr__(name: str) -> Any:
    if name == "KVCacheWrapper":
        from qsv_tools.export.wrapper import KVCacheWrapper

        return KVCacheWrapper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
