"""onnxruntime SLM: logits match torch, rollback of the KV cache is exact, logits are onnxruntime's own buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_runtime.slm import OnnxSLM, SessionConfig, SLMError, slm_from_config
from qsv_tools.export.tiny import tiny_export
from qsv_tools.torch_slm import TorchSLM

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
        SessionConfig(threads=-1)
    assert SessionConfig(threads=0).session_options().intra_op_num_threads == 0  # 0: onnxruntime chooses


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


def test_from_file_finds_variant_by_file_name(exported, tmp_path):
    from edge_runtime.slm_meta import ExportMetaError

    _, export = exported
    fp32 = OnnxSLM(export.directory)
    for variant, name in export.meta["files"].items():
        slm = OnnxSLM.from_file(export.directory / name, config=SessionConfig(threads=1))
        assert slm.variant == variant and slm.vocab_size == VOCAB
    np.testing.assert_array_equal(OnnxSLM.from_file(export.fp32_path).forward([1, 2, 3]), fp32.forward([1, 2, 3]))
    with pytest.raises(ExportMetaError, match="does not exist"):
        OnnxSLM.from_file(export.directory / "model.int4.onnx")
    with pytest.raises(ExportMetaError, match="is a directory"):
        OnnxSLM.from_file(export.directory)
    lone = tmp_path / "model.onnx"
    lone.write_bytes(export.fp32_path.read_bytes())
    with pytest.raises(ExportMetaError, match="no meta.json beside"):
        OnnxSLM.from_file(lone)
    (tmp_path / "meta.json").write_text((export.directory / "meta.json").read_text())
    renamed = tmp_path / "other.onnx"
    renamed.write_bytes(export.fp32_path.read_bytes())
    with pytest.raises(ExportMetaError, match="other.onnx is not a model of the export"):
        OnnxSLM.from_file(renamed)
    with pytest.raises(ExportMetaError, match="tokenizer"):
        OnnxSLM.from_file(export.fp32_path, tokenizer_path=tmp_path / "missing.json")


def test_slm_from_board_config(exported, tmp_path):
    import dataclasses

    from edge_runtime.config import ModelConfig, OrtOptions, default_config
    from edge_runtime.slm_meta import ExportMetaError

    _, export = exported
    cfg = ModelConfig(onnx_path=str(export.int8_path), onnxruntime=OrtOptions(intra_op_threads=2, int8=True))
    slm = slm_from_config(cfg)
    assert slm.variant == "int8" and slm.config.threads == 2 and not slm.config.spinning
    auto = slm_from_config(dataclasses.replace(cfg, onnxruntime=OrtOptions(intra_op_threads=0)))
    assert auto.config.threads == 0  # onnxruntime chooses
    with pytest.raises(SLMError, match="int8 is true"):
        slm_from_config(dataclasses.replace(cfg, onnx_path=str(export.fp32_path)))
    directory = slm_from_config(dataclasses.replace(cfg, onnx_path=str(export.directory)))  # old style: int8 picks
    assert directory.variant == "int8"
    with pytest.raises(ExportMetaError, match="onnx_path is not set"):
        slm_from_config(ModelConfig())
    with pytest.raises(SLMError, match="vocab_hash"):
        meta = dict(export.meta, vocab_hash="0" * 64)
        (tmp_path / "meta.json").write_text(__import__("json").dumps(meta))
        (tmp_path / "model.onnx").write_bytes(export.fp32_path.read_bytes())
        slm_from_config(ModelConfig(onnx_path=str(tmp_path / "model.onnx"), vocab_hash="1" * 64))
    # a whole BoardConfig resolves relative paths against the config file's directory
    board = dataclasses.replace(default_config(), model=ModelConfig(onnx_path="model.onnx"),
                                source=str(tmp_path / "board.yaml"))
    assert slm_from_config(board).variant == "fp32"
