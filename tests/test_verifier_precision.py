"""The verifier's precision paths, the choice rule, the calibration cache and the converted-weight cache.

The choice rule is tested on cost tables of the three CPU families these machines come as (figures measured on them:
Qwen2.5-Coder-1.5B, one thread, 200-token context); the caches on a tiny random Llama (no download); the int8 path's
row independence bit for bit; and the int8 path against fp32 on the same tiny model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cloud_verifier import precision as prec
from cloud_verifier.calibration import (
    Assumptions,
    Calibration,
    CalibrationCache,
    CalibrationKey,
    CostCurve,
    choose,
    speculative_rate,
)
from cloud_verifier.target import TargetModel
from cloud_verifier.weight_cache import ModelSource, WeightCache, convert_model, convert_tensors
from edge_runtime.controller.model import expected_tokens_iid


def curve(name: str, one: float, five: float, n: int = 13) -> CostCurve:
    """A cost curve through c(1) = one and c(5) = five, linear beyond (what the calibration interpolates)."""
    slope = (five - one) / 4
    return CostCurve(name, tuple(one + slope * (k - 1) for k in range(1, n + 1)))


# Measured pass costs (ms) for 1 and 5 tokens per CPU family (docs/VERIFIER.md, BENCHMARKS.md).
FAMILIES = {
    "avx512-bf16-vnni": {"fp32": curve("fp32", 372, 867), "bf16": curve("bf16", 354, 358),
                         "int8": curve("int8", 81, 106)},
    "avx512-vnni-no-bf16": {"fp32": curve("fp32", 432, 912), "int8": curve("int8", 170, 258)},
    "avx2": {"fp32": curve("fp32", 660, 2100), "int8": curve("int8", 210, 330)},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_int8_is_chosen_on_every_family_when_its_fidelity_is_within_bounds(family: str) -> None:
    curves = FAMILIES[family]
    choice = choose(curves, {name: 0.01 for name in curves}, Assumptions())
    assert choice.precision == "int8", choice.reason
    assert [r["chosen"] for r in choice.rows].count(True) == 1
    assert "highest predicted speculative rate" in choice.reason


@pytest.mark.parametrize(("family", "expected"), [("avx512-bf16-vnni", "bf16"), ("avx512-vnni-no-bf16", "fp32"),
                                                  ("avx2", "fp32")])
def test_a_path_beyond_the_fidelity_bound_is_not_chosen(family: str, expected: str) -> None:
    curves = FAMILIES[family]
    fidelity = {name: (0.5 if name == "int8" else 0.01) for name in curves}
    choice = choose(curves, fidelity, Assumptions(max_tv=0.2))
    assert choice.precision == expected
    assert "excluded for fidelity" in choice.reason and "int8" in choice.reason


def test_the_curve_not_the_one_token_cost_decides() -> None:
    # b is cheaper for one token but grows steeply with n; a is flat: speculative rounds favour a
    steep, flat = curve("b", 100, 500), curve("a", 130, 140)
    choice = choose({"b": steep, "a": flat}, {}, Assumptions())
    assert choice.precision == "a"
    rows = {r["precision"]: r for r in choice.rows}
    assert rows["b"]["cloud_only_tokens_per_s"] > rows["a"]["cloud_only_tokens_per_s"]
    assert rows["a"]["best_L"] > rows["b"]["best_L"]


def test_expected_tokens_and_rate() -> None:
    assert expected_tokens_iid(0.0, 5) == 1.0
    assert expected_tokens_iid(1.0, 3) == 4.0
    assert expected_tokens_iid(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    flat = CostCurve("x", (100.0,) * 13)
    length, rate = speculative_rate(flat, Assumptions(acceptance=0.9, draft_ms_per_token=0.0, round_overhead_ms=0.0,
                                                     max_draft_len=12))
    assert length == 12 and rate == pytest.approx(1000 * expected_tokens_iid(0.9, 12) / 100)


def test_cost_curve_interpolation_and_extrapolation() -> None:
    c = CostCurve.from_widths("x", {1: 10.0, 3: 30.0, 5: 34.0}, 5, 200)
    assert c.pass_ms == (10.0, 20.0, 30.0, 32.0, 34.0)
    assert c.cost_ms(7) == pytest.approx(38.0)
    with pytest.raises(ValueError):
        CostCurve.from_widths("x", {2: 1.0, 5: 2.0}, 5, 200)
    with pytest.raises(ValueError):
        CostCurve("x", (1.0, 0.0))


def test_available_precisions_follow_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(prec, "cpu_info", lambda: prec.CpuInfo("x", frozenset({"avx2", "avx512f", "avx512_vnni"})))
    assert "bf16" not in prec.available(cpu) and "fp32" in prec.available(cpu)
    monkeypatch.setattr(prec, "cpu_info", lambda: prec.CpuInfo("x", frozenset({"avx2", "avx512_bf16"})))
    assert "bf16" in prec.available(cpu)
    with pytest.raises(prec.PrecisionError):
        prec.check_supported("fp16", cpu)
    with pytest.raises(prec.PrecisionError):
        prec.canonical("int4")
    assert prec.canonical("bfloat16") == "bf16"


def test_calibration_cache_round_trip_and_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = CalibrationKey("ab" * 32, "cpu", ["avx2"], "2.13.0", 1, "cpu", 200, 13)
    cal = Calibration(key, {"fp32": curve("fp32", 300, 700)}, {"fp32": 0.0}, complete=True, measured_at=1.0)
    cache = CalibrationCache(tmp_path)
    cache.save(cal)
    loaded = cache.load(key)
    assert loaded is not None and loaded.curves["fp32"].pass_ms == cal.curves["fp32"].pass_ms and loaded.complete
    other = CalibrationKey("ab" * 32, "cpu", ["avx2"], "2.13.0", 2, "cpu", 200, 13)  # another thread count
    assert cache.load(other) is None
    cache.path(key).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert cache.load(key) is None
    assert "unreadable" in caplog.text


# ---------------------------------------------------------------------------------------------- int8 and caches


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def test_int8_rows_are_independent_bit_for_bit() -> None:
    q, scale = prec.quantize_weight(torch.randn(48, 64) * 0.05)
    layer = prec.int8_linear(q, scale, torch.randn(48))
    x = torch.randn(6, 64)
    x[2] *= 1000.0  # one token with huge activations
    batched = layer(x)
    for row in range(6):
        assert torch.equal(layer(x[row:row + 1].clone())[0], batched[row])
    dense = x @ (q.float() * scale[:, None]).t()
    rel = (batched - layer.bias - dense).abs().amax(dim=1) / dense.abs().amax(dim=1)
    assert float(rel.max()) < 0.02  # 8 bits per row, whatever the other rows hold


def test_int8_target_positions_depend_only_on_their_prefix() -> None:
    """What exact verification needs: p at a position must not depend on the later draft tokens of the same pass."""
    model = tiny_llama(1)
    target = TargetModel(convert_model(model, "int8"), precision="int8")
    state = target.prefill([5, 9, 14, 2])
    a = target.forward_round(state, [7, 3, 60, 61]).logits
    b = target.forward_round(state, [7, 3, 11, 90]).logits
    assert torch.equal(a[:2], b[:2])  # rows 0 and 1 see the same prefix (row 2 reads 60 vs 11)
    assert not torch.equal(a[2], b[2])


def _source(digest: str = "cd" * 32) -> ModelSource:
    return ModelSource(Path("/nonexistent"), "tiny.gguf", digest)


def _dense(model: LlamaForCausalLM):  # noqa: ANN202
    return lambda: (model.config, {k: v.detach().clone() for k, v in model.state_dict().items()})


VOCAB_INFO = ("ee" * 32, [2], None)


@pytest.mark.parametrize("name", ["fp32", "bf16", "int8"])
def test_weight_cache_round_trip_gives_the_same_model(tmp_path: Path, name: str) -> None:
    model = tiny_llama(2)
    cache = WeightCache(tmp_path)
    built, hit = cache.get_or_build(_source(), name, dense=_dense(model), vocab=lambda: VOCAB_INFO)
    assert not hit
    loaded, hit = cache.get_or_build(_source(), name, dense=pytest.fail, vocab=pytest.fail)
    assert hit and loaded.vocab_hash == "ee" * 32 and loaded.eos_token_ids == [2]
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        a = built.build()(input_ids=ids).logits
        b = loaded.build()(input_ids=ids).logits
        ref = model(input_ids=ids).logits
    assert torch.equal(a, b)
    tv = float((a.float().softmax(-1) - ref.softmax(-1)).abs().sum(-1).max() / 2)
    assert tv < {"fp32": 1e-6, "bf16": 0.05, "int8": 0.05}[name]


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "versions"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         damage: str) -> None:
    model = tiny_llama(3)
    cache = WeightCache(tmp_path)
    cache.get_or_build(_source(), "int8", dense=_dense(model), vocab=lambda: VOCAB_INFO)
    entry = cache.entry(_source(), "int8")
    tensors, meta = entry / "model.safetensors", entry / "meta.json"
    if damage == "flip":
        data = bytearray(tensors.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage == "meta":
        meta.write_text("{")
    else:
        doc = json.loads(meta.read_text())
        doc["versions"]["torch"] = "0.0"
        meta.write_text(json.dumps(doc))
    rebuilt = []

    def dense():  # noqa: ANN202
        rebuilt.append(1)
        return _dense(model)()

    with caplog.at_level(logging.WARNING):  # what a verifier start does: load, build, verify the sha256 meanwhile
        model, _, hit = cache.build_model(_source(), "int8", dense=dense, vocab=lambda: VOCAB_INFO)
    assert not hit and rebuilt == [1]
    assert "rebuilding" in caplog.text
    again, _, hit = cache.build_model(_source(), "int8", dense=pytest.fail, vocab=pytest.fail)
    assert hit
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_tied_embeddings_survive_conversion() -> None:
    torch.manual_seed(4)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    state = dict(model.state_dict())
    ids = torch.tensor([[1, 2, 3, 4]])
    for name in ("fp32", "int8"):
        built = convert_tensors(model.config, state, name).build()
        with torch.inference_mode():
            tv = float((built(input_ids=ids).logits.softmax(-1) - model(input_ids=ids).logits.softmax(-1))
                       .abs().sum(-1).max() / 2)
        assert tv < (1e-6 if name == "fp32" else 0.05), name


def test_load_target_auto_calibrates_once_and_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: every offered precision measured, the table's choice loaded, the calibration cached (a second start
    measures nothing); a pinned precision loads that precision with a cost curve for the OPEN reply."""
    from cloud_verifier import calibration, loading

    folder = tmp_path / "tiny"
    tiny_llama(5).save_pretrained(folder)
    caches = {"weight_cache": WeightCache(tmp_path / "w"), "calibration_cache": CalibrationCache(tmp_path / "c")}
    lines: list[str] = []
    first = loading.load_target(folder, "cpu", "auto", context=16, reps=1, say=lines.append, **caches)
    assert first.choice is not None and first.precision == first.choice.precision
    assert {r["precision"] for r in first.choice.rows} == set(prec.available(torch.device("cpu")))
    assert any("precision calibration" in line for line in lines) and any("chosen:" in line for line in lines)
    assert len(first.curve.pass_ms) == Assumptions().max_draft_len + 1
    assert first.target.precision == first.precision

    def no_measuring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a cached calibration must not be measured again")

    monkeypatch.setattr(loading, "measure_curve", no_measuring)
    monkeypatch.setattr(calibration, "measure_curve", no_measuring)
    again = loading.load_target(folder, "cpu", "auto", context=16, reps=1, **caches)
    assert again.precision == first.precision and again.curve == first.curve
    pinned = loading.load_target(folder, "cpu", "int8", context=16, reps=1, **caches)  # measured above: cached
    assert pinned.choice is None and pinned.target.precision == "int8"
    assert isinstance(pinned.target.model.model.layers[0].mlp.down_proj, prec.Int8Linear)
    with pytest.raises(prec.PrecisionError):
        loading.load_target(folder, "cpu", "fp16", **caches)
