"""Python API of the C core: input validation, preallocated buffers, thread safety, codec re-export."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_runtime import core
from qsv_wire import codec
from qsv_wire import core as wire_core
from qsv_wire import reference as ref

RNG_SEED = 2024


def _logits(v: int = 1000, seed: int = RNG_SEED) -> np.ndarray:
    return (2.5 * np.random.default_rng(seed).normal(size=v)).astype(np.float32)


@pytest.mark.parametrize(
    "bad,exc",
    [
        (np.array([0.0, np.nan, 1.0], dtype=np.float32), ValueError),
        (np.array([0.0, np.inf, 1.0], dtype=np.float32), ValueError),
        (np.array([0.0, -np.inf, 1.0], dtype=np.float32), ValueError),
        (np.zeros(0, dtype=np.float32), ValueError),
        (np.zeros(5, dtype=np.float64), TypeError),
        (np.zeros(5, dtype=np.float16), TypeError),
        (np.zeros((2, 3), dtype=np.float32), TypeError),
        (np.zeros(10, dtype=np.float32)[::2], TypeError),
        ([0.0, 1.0], TypeError),
    ],
)
def test_quantize_logits_rejects_bad_arrays(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        core.quantize_logits(bad, 16)  # type: ignore[arg-type]


def test_vocab_too_large() -> None:
    with pytest.raises(core.CoreError, match="vocabulary"):
        core.quantize_logits(np.zeros(core.MAX_VOCAB + 1, dtype=np.float32), 16)


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"ell": 0}, ValueError),
        ({"ell": 65536}, ValueError),
        ({"ell": -3}, ValueError),
        ({"ell": 16.0}, TypeError),
        ({"ell": True}, TypeError),
        ({"ell": 16, "temperature": -0.5}, ValueError),
        ({"ell": 16, "temperature": 1e-9}, ValueError),
        ({"ell": 16, "temperature": float("nan")}, ValueError),
        ({"ell": 16, "temperature": float("inf")}, ValueError),
        ({"ell": 16, "temperature": "1"}, TypeError),
        ({"ell": 16, "top_k": -1}, ValueError),
        ({"ell": 16, "top_k": 2.5}, TypeError),
        ({"ell": 16, "top_p": 0.0}, ValueError),
        ({"ell": 16, "top_p": 1.01}, ValueError),
        ({"ell": 16, "top_p": float("nan")}, ValueError),
    ],
)
def test_quantize_logits_rejects_bad_parameters(kwargs: dict, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        core.quantize_logits(_logits(), **kwargs)


def test_errors_are_core_subclasses() -> None:
    with pytest.raises(core.CoreError):
        core.quantize_logits(_logits(), 0)
    with pytest.raises(core.CoreTypeError):
        core.quantize_logits(np.zeros(5), 16)


@pytest.mark.parametrize(
    "probs,exc",
    [
        (np.array([0.5, 0.6]), ValueError),
        (np.array([1.5, -0.5]), ValueError),
        (np.array([0.5, np.nan]), ValueError),
        (np.array([1, 0], dtype=np.int64), TypeError),
    ],
)
def test_quantize_probs_rejects_bad_input(probs: np.ndarray, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        core.quantize_probs(probs, 16)


def test_quantizer_into_buffers_and_sample_last() -> None:
    z = _logits(5000)
    quantizer = core.Quantizer(5000)
    dense = np.empty(5000, dtype=np.uint32)
    nnz = quantizer.quantize_logits_into(z, 720, 0.4, dense_out=dense)
    expected = core.quantize_logits(z, 720, 0.4)
    assert nnz == expected.nnz
    quantizer.point().validate()
    expected.validate()
    np.testing.assert_array_equal(quantizer.indices[:nnz], expected.indices)
    np.testing.assert_array_equal(quantizer.counts[:nnz], expected.counts)
    np.testing.assert_array_equal(dense, expected.dense(np.uint32))
    assert [quantizer.sample_last(u) for u in range(720)] == [ref.sample(expected, u) for u in range(720)]
    with pytest.raises(ValueError):
        quantizer.sample_last(720)
    with pytest.raises(ValueError, match="vocab_size"):
        quantizer.quantize_logits_into(_logits(4999), 720)
    with pytest.raises(ValueError):
        quantizer.quantize_logits_into(z, 720, dense_out=np.empty(4999, dtype=np.uint32))
    with pytest.raises(TypeError):
        quantizer.quantize_logits_into(z, 720, dense_out=np.empty(5000, dtype=np.int64))
    with pytest.raises(ValueError, match="kernel"):
        quantizer.quantize_logits_into(z, 720, kernel="sse9")


def test_quantizer_reads_a_foreign_buffer_without_copy() -> None:
    """The drafter hands over onnxruntime's output buffer: a float32 view into a bigger array works as is."""
    batch = np.stack([_logits(3000, seed=s) for s in range(3)])
    quantizer = core.Quantizer(3000)
    for row in range(3):
        view = batch[row]
        assert view.base is batch and view.flags.c_contiguous
        quantizer.quantize_logits_into(view, 240)
        assert quantizer.point() == core.quantize_logits(batch[row].copy(), 240)


def test_thread_safety_concurrent_calls_match_sequential() -> None:
    inputs = [(_logits(20_000, seed=s), int(ell), float(t)) for s, (ell, t) in enumerate([(16, 1.0), (240, 0.4),
              (720, 1.0), (720, 0.4), (65535, 1.0), (1, 0.4)] * 2)]  # fmt: skip
    expected = [core.quantize_logits(z, ell, t) for z, ell, t in inputs]
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def worker(offset: int) -> None:
        barrier.wait()
        for rep in range(6):
            for i in range(len(inputs)):
                j = (i + offset + rep) % len(inputs)
                z, ell, t = inputs[j]
                point = core.quantize_logits(z, ell, t)
                if point != expected[j] or core.sample(point, ell - 1) != ref.sample(expected[j], ell - 1):
                    errors.append(f"thread {offset} input {j}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_the_c_extension_is_built_and_loaded() -> None:
    """The one explicit check: a missing or stale C extension fails the run here (no test skips for it)."""
    import importlib

    ext = importlib.import_module("qsv_wire._qsv_core")
    assert ext.lib.qsv_quant_workspace_size(1000) > 0
    assert wire_core.lib is ext.lib  # edge_runtime.core re-exports qsv_wire.core, which loads it


def test_codec_reexport() -> None:
    from qsv_wire import codec

    assert core.encode is codec.encode and core.decode is codec.decode and core.bound_bits is codec.bound_bits
    point = core.quantize_logits(_logits(50_272), 240, 0.4)
    assert core.decode(core.encode(point, 50_272, 240), 50_272, 240) == point


def test_demo_core_prints_point_samples_and_bits(capsys: pytest.CaptureFixture[str]) -> None:
    from qsv_tools import demo_core

    demo_core.main(["--vocab-size", "5000", "--ell", "240", "--samples", "4"])
    out = capsys.readouterr().out
    assert "lattice point q_hat = b/240" in out and "sum 240" in out
    assert out.count("->") == 4 and "bits" in out


@pytest.mark.parametrize("mode", ["auto", "enum"])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.4, 0, 0.9), (0.7, 50, 1.0), (0.0, 0, 1.0)])
def test_draft_token_equals_the_three_calls(mode: str, temperature: float, top_k: int, top_p: float) -> None:
    """draft_token = quantize_logits_into + sample_last + encode_arrays, over several tokens and settings."""
    from qsv_wire import codec

    v, ell = 5000, 240
    fused, separate = core.Quantizer(v), core.Quantizer(v)
    rng = np.random.default_rng(RNG_SEED)
    buffer = np.empty(v, np.float32)  # reused like an SLM's output buffer: the cached pointer must see new contents
    for _ in range(6):
        buffer[:] = (2.5 * rng.normal(size=v)).astype(np.float32)
        u = int(rng.integers(0, ell))
        token, message = fused.draft_token(buffer, ell, u, temperature, top_k, top_p, mode=mode)
        nnz = separate.quantize_logits_into(buffer, ell, temperature, top_k, top_p)
        assert token == separate.sample_last(u)
        assert message == codec.encode_arrays(separate.indices[:nnz], separate.counts[:nnz], v, ell, mode=mode)
        assert fused.point() == separate.point()
        assert codec.decode(message, v, ell) == separate.point()


def test_draft_token_rejects_bad_input_and_keeps_working() -> None:
    v, ell = 1000, 16
    q = core.Quantizer(v)
    z = _logits(v)
    ok = q.draft_token(z, ell, 3)
    with pytest.raises(core.CoreError, match="u must be"):
        q.draft_token(z, ell, ell)
    with pytest.raises(core.CoreTypeError):
        q.draft_token(z, ell, 1.5)  # type: ignore[arg-type]
    with pytest.raises(core.CoreTypeError):
        q.draft_token(z, True, 3)  # type: ignore[arg-type]  # a bool is not an ell
    with pytest.raises(core.CoreError, match="temperature"):
        q.draft_token(z, ell, 3, temperature=-1.0)
    with pytest.raises(core.CoreTypeError):
        q.draft_token(z.astype(np.float64), ell, 3)  # type: ignore[arg-type]
    with pytest.raises(core.CoreError):
        q.draft_token(_logits(999), ell, 3)
    with pytest.raises(ValueError, match="sparse"):
        q.draft_token(z, ell, 3, mode="sparse")
    bad = z.copy()
    bad[7] = np.nan
    with pytest.raises(core.CoreError, match="finite"):
        q.draft_token(bad, ell, 3)
    assert q.draft_token(z, ell, 3) == ok  # nothing above left state behind


def test_the_loaded_c_core_is_the_version_the_binding_expects() -> None:
    import re
    from pathlib import Path

    from qsv_wire._qsv_core import lib

    from qsv_wire import _native

    header = (Path(__file__).resolve().parents[1] / "csrc" / "qsv_base.h").read_text()
    major, minor, patch = (int(re.search(rf"#define QSV_VERSION_{p}\s+(\d+)", header).group(1))
                           for p in ("MAJOR", "MINOR", "PATCH"))  # fmt: skip
    assert lib.qsv_version_number() == _native.EXPECTED_VERSION == major * 10000 + minor * 100 + patch
    _native.check_version(_native.EXPECTED_VERSION)
    with pytest.raises(ImportError, match=r"stale.*pip install -e \."):
        _native.check_version(_native.EXPECTED_VERSION + 1)


def test_one_error_space() -> None:
    from qsv_wire._qsv_core import lib

    from qsv_wire import _native

    codes = [getattr(lib, k) for k in dir(lib) if k.startswith("QSV_ERR_")]
    assert len(codes) == 18 and len(codes) == len(set(codes)) and all(c < 0 for c in codes) and lib.QSV_OK == 0
    assert all(lib.qsv_is_error(c) for c in codes) and not lib.qsv_is_error(lib.QSV_OK)
    names = {_native.error_name(c) for c in codes}
    assert len(names) == len(codes) and _native.error_name(-999) == "unknown error code"
    with pytest.raises(core.CoreError, match="error -4"):
        _native.check(lib.QSV_ERR_ELL, "x")
    with pytest.raises(codec.CodecError):
        _native.check(lib.QSV_ERR_TRUNCATED, "x")
    assert _native.check(7, "x") == 7  # values >= 0 (a token) pass through
