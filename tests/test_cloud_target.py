"""TargetModel: prefill, per-session rounds, cache crop, and padded batched forwards against full recomputation."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from cloud_verifier.target import TargetModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (tests/conftest.py)

VOCAB = 80



def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


def full_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_batched_rounds_match_full_recompute(kind: str) -> None:
    target = TargetModel(build(kind))
    histories = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [5] * 12, [3]]
    drafts = [[7, 1, 2], [8, 3, 3, 3, 3], [], [4]]
    states = [target.prefill(h[:-1]) for h in histories]
    inputs = [h[-1:] + d for h, d in zip(histories, drafts, strict=True)]
    batched = target.forward_rounds(states, inputs)
    for h, d, out in zip(histories, drafts, batched, strict=True):
        expected = full_logits(target.model, h + d)[len(h) - 1 :]
        torch.testing.assert_close(out.logits, expected, atol=2e-5, rtol=1e-4)


def test_crop_to_accepted_prefix_continues_like_a_fresh_prefill() -> None:
    target = TargetModel(build("llama"))
    history = [10, 20, 30, 40]
    state = target.prefill(history[:-1])
    out = target.forward_rounds([state, target.prefill([1, 2])], [[40, 11, 12, 13], [2, 5]])[0]
    kept = out.committed_state(2)  # pending 40 + accepted draft 11; next token (say 77) becomes pending
    assert kept.length == 5 and kept.layers[0][0].shape[2] == 5
    fresh = target.prefill([10, 20, 30, 40, 11])
    for (k1, v1), (k2, v2) in zip(kept.layers, fresh.layers, strict=True):
        torch.testing.assert_close(k1, k2, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-4)
    nxt = target.forward_round(kept, [77, 3])
    torch.testing.assert_close(nxt.logits, full_logits(target.model, [10, 20, 30, 40, 11, 77, 3])[-2:],
                               atol=2e-5, rtol=1e-4)
    assert kept.nbytes == sum(k.numel() * 4 * 2 for k, _ in kept.layers)


def test_single_token_history_and_bad_inputs() -> None:
    target = TargetModel(build("llama"))
    empty = target.prefill([])
    assert empty.length == 0 and empty.nbytes == 0
    out = target.forward_round(empty, [3, 4])
    torch.testing.assert_close(out.logits, full_logits(target.model, [3, 4]), atol=2e-5, rtol=1e-4)
    assert out.committed_state(1).length == 1
    with pytest.raises(ValueError):
        out.committed_state(3)
    with pytest.raises(ValueError):
        target.forward_rounds([], [])


def test_bf16_target_runs() -> None:
    target = TargetModel(build("llama").to(torch.bfloat16))
    out = target.forward_rounds([target.prefill([1, 2, 3]), target.prefill([4])], [[3, 5], [4, 6, 7]])
    assert out[0].logits.dtype == torch.float32 and torch.isfinite(out[1].logits).all()
    assert target.dtype == torch.bfloat16
