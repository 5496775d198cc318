"""Tiny random-weight causal LMs (Llama / Qwen2 layout) for tests and smoke checks of the export path."""

from __future__ import annotations

from typing import Any


def tiny_causal_lm(arch: str = "llama", vocab_size: int = 64, seed: int = 0, layers: int = 2, hidden: int = 32,
                   heads: int = 4, kv_heads: int = 2, logit_scale: float = 1.0, noise: float = 0.0) -> Any:
    """A float32 eval-mode model with seeded random weights. ``logit_scale`` multiplies the output head (a larger
    scale gives peakier, more LLM-like next-token distributions); ``noise`` > 0 adds that much relative Gaussian
    noise to every weight (a "draft" that mostly agrees with the noiseless "target" of the same seed)."""
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
    with torch.no_grad():
        if logit_scale != 1.0:
            model.lm_head.weight.mul_(logit_scale)
        if noise > 0.0:
            gen = torch.Generator().manual_seed(seed + 1_000_003)
            for param in model.parameters():
                param.add_(noise * param.std() * torch.randn(param.shape, generator=gen))
    return model.float().eval()


_EXPORTS: dict[tuple[Any, ...], Any] = {}


def tiny_export(arch: str = "llama", vocab_size: int = 64, seed: int = 0, logit_scale: float = 1.0,
                int8: bool = False, noise: float = 0.0) -> tuple[Any, Any]:
    """(model, ExportResult) of a tiny model exported to a temporary directory, memoized per process so that
    several test modules share one export. The directory is removed at interpreter exit."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from qsv_tools.export.onnx_export import export_loaded

    key = (arch, vocab_size, seed, logit_scale, int8, noise)
    if key not in _EXPORTS:
        model = tiny_causal_lm(arch, vocab_size=vocab_size, seed=seed, logit_scale=logit_scale, noise=noise)
        directory = Path(tempfile.mkdtemp(prefix="qsv-tiny-"))
        atexit.register(shutil.rmtree, directory, True)
        _EXPORTS[key] = (model, export_loaded(model, None, directory, int8=int8))
    return _EXPORTS[key]
