"""onnxruntime SLM: logits match torch, rollback of the KV cache is exact, logits are onnxruntime's own buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_runtime.export.tiny import tiny_export
from edge_runtime.slm import OnnxSLM, SessionConfig, SLMError, TorchSLM

pytestmark = pytest.mark.filterwarnings("ignore")

VOCAB = 64


@pytest.fixture(scope="module")
def exported():
    return tiny_export("qwen2", vocab_size=VOCAB, seed=11, int8=True)


def torch_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def test_prefill_decode_multistep_match_torch(exported):
    model, export = exported
    slm = OnnxSLM(export.directory)
    prompt = [3, 14, 15, 9, 26, 5]
    np.testing.assert_allclose(slm.prefill(prompt), torch_logits(model, prompt)[-1], atol=1e-4)
    seq = list(prompt)
    for token in (7, 8, 9):
        seq.append(token)
        np.testing.assert_allclose(slm.forward([token])[0], torch_logits(model, seq)[-1], atol=1e-4)
    step = [10, 11, 12, 13]
    seq += step
    np.testing.assert_allclose(slm.forward(step), torch_logits(model, seq)[-4:], atol=1e-4)
    assert slm.length == len(seq)


@pytest.mark.parametrize("cut", [0, 1, 6, 9])
def test_rollback_then_redecode_matches_fresh(exported, cut):
    model, export = exported
    slm = OnnxSLM(export.directory)
    prompt = [2, 7, 1, 8, 2, 8]
    slm.prefill(prompt)
    slm.forward([40, 41, 42])
    slm.forward([43])
    slm.rollback(cut)
    assert slm.length == cut
    history = (prompt + [40, 41, 42, 43])[:cut]
    continuation = [30, 31, 32] if cut else [30]
    after = slm.forward(continuation).copy()
    fresh = torch_logits(model, history + continuation)[-len(continuation):]
    assert np.abs(after - fresh).max() < 1e-4
    fresh_onnx = OnnxSLM(export.directory).forward(history + continuation)[-len(continuation):]
    assert np.abs(after - fresh_onnx).max() < 1e-4


def test_int8_rollback_is_bit_exact_for_the_same_steps(exported):
    """Dynamic int8 quantizes activations per step, so compare against the same sequence of steps."""
    _, export = exported
    rolled, fresh = OnnxSLM(export.directory, "int8"), OnnxSLM(export.directory, "int8")
    rolled.prefill([4, 5, 6])
    rolled.forward([7])
    rolled.forward([8, 9])
    rolled.rollback(4)
    fresh.prefill([4, 5, 6])
    fresh.forward([7])
    np.testing.assert_array_equal(rolled.forward([20, 21]), fresh.forward([20, 21]))


def test_logits_are_a_view_of_the_bound_output_buffer(exported):
    _, export = exported
    slm = OnnxSLM(export.directory)
    first = slm.prefill([1, 2, 3])
    assert first.dtype == np.float32 and first.flags.c_contiguous
    assert not first.flags.owndata  # a view into the io_binding output buffer, not a fresh copy
    saved = first.copy()
    second = slm.forward([4])[0]
    assert np.shares_memory(second, slm._logits_buffers[1])
    assert not np.array_equal(saved, second)


def test_bad_use_is_rejected(exported):
    _, export = exported
    slm = OnnxSLM(export.directory)
    slm.prefill([1, 2])
    with pytest.raises(SLMError, match="cache holds 2"):
        slm.rollback(3)
    with pytest.raises(SLMError, match="at least one token"):
        slm.forward([])
    with pytest.raises(SLMError, match="out of range"):
        slm.forward([VOCAB])
    with pytest.raises(SLMError, match="no tokenizer"):
        slm.encode("hello")
    with pytest.raises(ValueError, match="threads"):
        SessionConfig(threads=0)


def test_session_options_turn_spinning_off():
    opts = SessionConfig(threads=2).session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_torch_slm_rollback_matches_fresh(exported):
    model, _ = exported
    slm = TorchSLM(model)
    slm.prefill([5, 6, 7, 8])
    slm.forward([9, 10])
    slm.rollback(3)
    after = slm.forward([11, 12]).copy()
    np.testing.assert_allclose(after, torch_logits(model, [5, 6, 7, 11, 12])[-2:], atol=1e-5)
