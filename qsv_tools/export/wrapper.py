"""A traceable wrapper around a transformers causal LM whose KV cache is a flat list of tensors.

Graph interface (batch 1, no padding; ``P`` cached tokens, ``T`` new tokens):

* inputs: ``input_ids`` int64 [1, T]; ``past.{i}.key`` / ``past.{i}.value`` float32 [1, H_kv, P, D] per layer i;
* outputs: ``logits`` float32 [1, T, V]; ``present.{i}.key`` / ``present.{i}.value`` [1, H_kv, P + T, D].

Positions are P … P+T−1 and the causal mask (new token t sees cached tokens and new tokens ≤ t) is built inside
the graph from the shapes, so prefill (P = 0), one-token decode and multi-token steps share one graph and the
caller only keeps the cache. Rolling the cache back to n tokens is slicing ``present`` to ``[:, :, :n]``.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from edge_runtime.slm_meta import KVLayout, kv_names

__all__ = ["KVCacheWrapper", "KVLayout", "kv_names"]


class KVCacheWrapper(nn.Module):
    """``forward(input_ids, *past)`` → ``(logits, *present)`` for a transformers causal LM using DynamicCache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layout = KVLayout.from_config(model.config)
        # transformers 5.2x renamed ``past_key_values`` to ``cache``; pass whichever forward() declares
        params = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        new_tokens = input_ids.shape[1]
        cached = past[0].shape[2]
        cache = DynamicCache(config=self.model.config)
        for layer in range(self.layout.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        positions = torch.arange(new_tokens, dtype=torch.long).unsqueeze(0) + cached
        key_positions = torch.arange(cached + new_tokens, dtype=torch.long).unsqueeze(0)
        mask = (key_positions <= positions[0].unsqueeze(1)).unsqueeze(0).unsqueeze(0)  # [1, 1, T, P + T]
        out = self.model(input_ids=input_ids, position_ids=positions, attention_mask=mask, use_cache=True,
                         **{self._cache_arg: cache})
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present.extend((layer.keys, layer.values))
        return (out.logits.float(), *present)

    def empty_past(self, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        shape = (1, self.layout.num_kv_heads, 0, self.layout.head_dim)
        return [torch.zeros(shape, dtype=dtype) for _ in range(2 * self.layout.num_layers)]
