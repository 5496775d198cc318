"""The target (large) model in PyTorch: per-session KV caches, prefill, and batched verification forwards.

A session's cache covers every committed token except the last one (the *pending* token). A round feeds
[pending, x_1..x_L] in one forward pass, which gives the L+1 target rows p_1..p_{L+1}; after verification the cache
keeps the entries of [pending, x_1..x_n] (n accepted) and the emitted next token becomes the new pending token.

Batching: rounds of several sessions run in one forward. Each session's cache is left-padded with zeros to the longest
cache in the batch and its round inputs are right-padded to the longest round; a 2-D attention mask hides the padding
and explicit position ids keep every session at its own positions (rotary embeddings were applied to cached keys when
they were computed, so the padding does not shift them). Only full-attention decoder models are supported (Llama,
Qwen2, OPT-style caches without sliding windows).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel

from cloud_verifier.precision import of_dtype

log = logging.getLogger(__name__)

@dataclass
class KVState:
    """One session's cache: per layer (keys, values), each (1, heads, length, head_dim)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


@dataclass
class RoundOutput:
    """Target logits for one session's round inputs and the cache extended by all of them (crop with ``keep``)."""

    logits: torch.Tensor  # (len(inputs), V), float32
    new_keys: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, the inputs' entries only: (1, H, len(inputs), D)
    base: KVState

    def committed_state(self, keep: int) -> KVState:
        """The base cache extended by the first ``keep`` round inputs (pending + accepted drafts)."""
        if not 0 <= keep <= self.logits.shape[0]:
            raise ValueError(f"keep={keep} outside 0..{self.logits.shape[0]}")
        if not self.base.layers:
            layers = [(nk[:, :, :keep].clone(), nv[:, :, :keep].clone()) for nk, nv in self.new_keys]
            return KVState(layers, keep)
        layers = []
        for (bk, bv), (nk, nv) in zip(self.base.layers, self.new_keys, strict=True):
            layers.append((torch.cat([bk, nk[:, :, :keep]], dim=2), torch.cat([bv, nv[:, :, :keep]], dim=2)))
        return KVState(layers, self.base.length + keep)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TargetModel:
    """A causal LM used as the verifier's target. Thread-safe for concurrent forwards (no shared mutable state)."""

    def __init__(self, model: PreTrainedModel, device: str | torch.device = "cpu",
                 precision: str | None = None) -> None:
        """``precision``: the numeric path the model runs in (cloud_verifier.precision); default: its parameters'
        dtype."""
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        head = model.get_output_embeddings()
        self.vocab_size = int(head.out_features if hasattr(head, "out_features") else head.weight.shape[0])
        self.dtype = next(model.parameters()).dtype
        self.precision = precision or of_dtype(self.dtype)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)  # 0: unknown
        # transformers ≥ 5.2x renamed ``past_key_values`` to ``cache``; accept both
        params = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str = "fp32",
             gguf_file: str | None = None) -> TargetModel:
        """Load a HF folder or a GGUF file (``gguf_file`` inside folder ``path``) in precision ``dtype`` (or
        ``auto``), through the converted-weight cache (cloud_verifier.loading)."""
        from cloud_verifier.loading import load_target

        source = Path(path) / gguf_file if gguf_file else Path(path)
        return load_target(source, device, dtype).target

    @classmethod
    def from_registry(cls, name_or_path: str | Path, device: str = "auto", dtype: str = "fp32",
                      fetch_missing: bool = False) -> tuple[TargetModel, bytes | None]:
        """Load a registry model name (e.g. ``smollm2``, ``qwen-target``), a ``.gguf`` file or a HF folder in
        precision ``dtype`` (or ``auto``); returns (target, vocab hash as 32 bytes) for the sessions' vocab check.
        ``cloud_verifier.loading.load_target`` gives the cost curve and the calibration as well."""
        from cloud_verifier.loading import load_target

        loaded = load_target(name_or_path, device, dtype, fetch_missing=fetch_missing)
        return loaded.target, loaded.vocab_hash

    def empty_state(self) -> KVState:
        return KVState([], 0)

    @torch.inference_mode()
    def prefill(self, token_ids: Sequence[int]) -> KVState:
        """Cache for ``token_ids`` (all of them; callers pass the history without its pending last token)."""
        if len(token_ids) == 0:
            return self.empty_state()
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        cache = DynamicCache()
        self.model(input_ids=ids, **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return KVState(layers, len(token_ids))

    @torch.inference_mode()
    def extend(self, state: KVState, token_ids: Sequence[int]) -> KVState:
        """``state`` extended by the cache of ``token_ids`` (one chunk of a chunked prefill; no logits kept)."""
        if not state.layers:
            return self.prefill(token_ids)
        if len(token_ids) == 0:
            return state
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        cache = DynamicCache(ddp_cache_data=state.layers)
        positions = torch.arange(state.length, state.length + len(token_ids), device=self.device).unsqueeze(0)
        self.model(input_ids=ids, **{self._cache_arg: cache}, position_ids=positions, use_cache=True, logits_to_keep=1)
        return KVState([(layer.keys, layer.values) for layer in cache.layers], state.length + len(token_ids))

    @torch.inference_mode()
    def forward_round(self, state: KVState, inputs: Sequence[int]) -> RoundOutput:
        """One session's round (no padding): logits for every input position."""
        ids = torch.tensor([list(inputs)], dtype=torch.long, device=self.device)
        cache = DynamicCache(ddp_cache_data=state.layers) if state.layers else DynamicCache()
        positions = torch.arange(state.length, state.length + len(inputs), device=self.device).unsqueeze(0)
        out = self.model(input_ids=ids, **{self._cache_arg: cache}, position_ids=positions, use_cache=True)
        new = [(layer.keys[:, :, state.length:], layer.values[:, :, state.length:]) for layer in cache.layers]
        return RoundOutput(out.logits[0].float(), new, state)

    @torch.inference_mode()
    def forward_rounds(self, states: Sequence[KVState], inputs: Sequence[Sequence[int]]) -> list[RoundOutput]:
        """Rounds of several sessions in one padded forward pass (see the module docstring)."""
        if len(states) != len(inputs) or not states:
            raise ValueError("need one input list per state, at least one")
        if len(states) == 1:
            return [self.forward_round(states[0], inputs[0])]
        batch = len(states)
        past = max(s.length for s in states)
        width = max(len(x) for x in inputs)
        ids = torch.zeros((batch, width), dtype=torch.long)
        mask = torch.zeros((batch, past + width), dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        for b, (state, row) in enumerate(zip(states, inputs, strict=True)):
            ids[b, : len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[b, past - state.length : past + len(row)] = 1
            positions[b] = torch.arange(state.length, state.length + width)
        cache = DynamicCache()
        if past > 0:
            n_layers = len(next(s for s in states if s.layers).layers)
            ref_k, ref_v = next(s for s in states if s.layers).layers[0]
            stacked = []
            for layer in range(n_layers):
                keys = ref_k.new_zeros((batch, ref_k.shape[1], past, ref_k.shape[3]))
                values = ref_v.new_zeros((batch, ref_v.shape[1], past, ref_v.shape[3]))
                for b, state in enumerate(states):
                    if state.length:
                        k, v = state.layers[layer]
                        keys[b, :, past - state.length :] = k[0]
                        values[b, :, past - state.length :] = v[0]
                stacked.append((keys, values))
            cache = DynamicCache(ddp_cache_data=stacked)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            **{self._cache_arg: cache},
            use_cache=True,
        )
        results = []
        for b, (state, row) in enumerate(zip(states, inputs, strict=True)):
            n = len(row)
            new = [(layer.keys[b : b + 1, :, past : past + n], layer.values[b : b + 1, :, past : past + n])
                   for layer in cache.layers]
            results.append(RoundOutput(out.logits[b, :n].float(), new, state))
        return results
