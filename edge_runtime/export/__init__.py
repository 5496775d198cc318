"""Export of a causal LM to ONNX with an explicit KV cache (past in, present out), optional int8 quantization."""

from edge_runtime.export.wrapper import KVCacheWrapper, kv_names

__all__ = ["KVCacheWrapper", "kv_names"]
