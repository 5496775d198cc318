"""The edge SLM's interface (:class:`edge_runtime.slm.DraftModel`) on a transformers causal LM in eager PyTorch: the
baseline of the benchmarks and the drafter of tests that need a model built in process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.slm import SLMError, check_step


class TorchSLM:
    """The same interface on a transformers causal LM (eager PyTorch), for baselines and tests."""

    def __init__(self, model: Any, eos_token_ids: Sequence[int] = ()) -> None:
        import inspect

        self.model = model.eval()
        self.vocab_size = int(model.config.vocab_size)
        self.eos_token_ids = list(eos_token_ids)
        params = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cache: Any = None
        self._length = 0
        self._logits = np.empty(0, np.float32)

    @property
    def length(self) -> int:
        return self._length

    def reset(self) -> None:
        self._cache = None
        self._length = 0

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self._length:
            raise SLMError(f"cannot roll back to {length} tokens: the cache holds {self._length}")
        if length == 0:
            self.reset()
        elif length < self._length:
            self._cache.crop(length - self._length)  # transformers 5: a negative value drops that many tokens
            self._length = length

    def forward(self, token_ids: Sequence[int]) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        ids = torch.from_numpy(check_step(token_ids, self.vocab_size))
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        positions = torch.arange(self._length, self._length + ids.shape[1]).unsqueeze(0)
        with torch.inference_mode():
            out = self.model(input_ids=ids, position_ids=positions, use_cache=True, **{self._cache_arg: self._cache})
        self._length += ids.shape[1]
        self._logits = out.logits[0].float().numpy()
        return self._logits

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        self.reset()
        return self.forward(token_ids)[-1]
