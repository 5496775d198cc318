"""Tiny random-weight causal LMs (Llama / Qwen2 layout) for tests and smoke checks of the export path."""

from __future__ import annotations

from typing import Any


def tiny_causal_lm(arch: str = "llama", vocab_size: int = 64, seed: int = 0, layers: int = 2, hidden: int = 32,
                   heads: int = 4, kv_heads: int = 2, logit_scale: float = 1.0) -> Any:
    """A float32 eval-mode model with seeded random weights. ``logit_scale`` multiplies the output head (a larger
    scale gives peakier, more LLM-like next-token distributions)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 512,
        "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    if logit_scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(logit_scale)
    return model.float().eval()
