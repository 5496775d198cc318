"""Model pairs the demo can run: the paper-like Qwen2.5-Coder pair and a quick SmolLM2 self-drafting pair."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """A draft/target pair from the model registry and the demo's default workload for it."""

    name: str
    draft: str  # registry name of the edge SLM (exported to ONNX)
    target: str  # registry name of the cloud LLM (PyTorch)
    draft_label: str
    target_label: str
    variant: str  # ONNX variant of the SLM: "int4", "int8" or "fp32"
    target_dtype: str  # "auto" or a precision of cloud_verifier.precision
    prompts: int
    new_tokens: int
    prompt_chars: int  # article body cut to this many characters


PROFILES: dict[str, Profile] = {
    "qwen": Profile(
        name="qwen",
        draft="qwen-draft",
        target="qwen-target",
        draft_label="Qwen2.5-Coder-0.5B-Instruct",
        target_label="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M weights dequantized)",
        # 4-bit weights (onnxruntime MatMulNBits): 30 ms per token against 41 ms for int8 on one AVX-512 VNNI core, so
        # the round gets shorter: QSV 15.3 against 12.8 tokens/s with the int8 drafter, same hour (BENCHMARKS.md)
        variant="int4",
        # auto: the verifier measures each precision's pass costs on this CPU and picks the fastest for speculative
        # rounds (cloud_verifier.calibration); --target-dtype pins one
        target_dtype="auto",
        prompts=3,
        new_tokens=52,  # as in the paper
        prompt_chars=600,
    ),
    "smollm2": Profile(
        name="smollm2",
        draft="smollm2",
        target="smollm2",
        # the only registry pair with a shared tokenizer besides Qwen: the same SmolLM2-135M as draft (ONNX int8)
        # and target (PyTorch fp32), so acceptance is high but not 1 (int8 vs fp32 logits)
        draft_label="SmolLM2-135M-Instruct",
        target_label="SmolLM2-135M-Instruct (GGUF Q4_1 weights dequantized)",
        variant="int8",
        target_dtype="auto",
        prompts=2,
        new_tokens=24,
        prompt_chars=400,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}") from None
