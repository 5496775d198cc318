"""``qsv experiment record``: record simulator traces and compute timings with the real Qwen pair on BBC News prompts
(edge: Qwen2.5-Coder-0.5B on onnxruntime int8; cloud: Qwen2.5-Coder-1.5B on torch, CPU), cached by its settings.

    qsv experiment record --prompts 10 --out experiment_out/qwen      # → experiment_out/qwen/traces_<key>.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from qsv_models.registry import model_ref
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.experiment.record")

ELLS = (2, 16, 240, 720)


def prompt_token_ids(encode, count: int, max_tokens: int, start: int = 0) -> list[list[int]]:
    """BBC prompts "Article: … Summary:" with the article part cut so the whole prompt has ≤ ``max_tokens`` tokens."""
    from qsv_models.bbc import bbc_prompts

    suffix = "\nSummary:"
    suffix_ids = encode(suffix)
    if max_tokens <= len(suffix_ids) + 1:
        raise ValueError(f"--prompt-tokens must exceed {len(suffix_ids) + 1}")
    out = []
    for text in bbc_prompts(count, max_chars=8 * max_tokens, start=start):
        head = text[: text.rindex(suffix)]
        out.append(encode(head)[: max_tokens - len(suffix_ids)] + suffix_ids)
    return out


def cache_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def record(args: argparse.Namespace) -> Path:
    """Record (or reuse) the trace file for ``args``; returns its path."""
    settings = {"draft": args.draft, "target": args.target, "variant": args.draft_variant, "dtype": args.target_dtype,
                "prompts": args.prompts, "start": args.start, "prompt_tokens": args.prompt_tokens,
                "n_tokens": args.n_tokens, "temperature": args.temperature, "seed": args.seed, "ells": list(ELLS),
                "draft_threads": args.draft_threads, "target_threads": args.target_threads,
                "verify_timing": "forward+target_probs"}  # recordings before this timed the forward only
    path = args.out / f"traces_{cache_key(settings)}.jsonl"
    if path.exists() and not args.force:
        log.warning("using cached %s", path)
        return path
    import torch

    from cloud_verifier.target import TargetModel
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from qsv_models.fetch import fetch
    from qsv_tools.export.onnx_export import export_model
    from qsv_tools.sim.record_timed import record_traces_timed

    for name in dict.fromkeys((args.draft, args.target)):
        fetch(name)
    export = export_model(args.draft, int8=args.draft_variant == "int8")
    slm = OnnxSLM(export.directory, args.draft_variant, SessionConfig(threads=args.draft_threads))
    torch.set_num_threads(args.target_threads)
    t0 = time.perf_counter()
    target, _ = TargetModel.from_registry(args.target, device="cpu", dtype=args.target_dtype)
    log.warning("target %s loaded in %.0f s", args.target, time.perf_counter() - t0)
    prompts = prompt_token_ids(slm.encode, args.prompts, args.prompt_tokens, args.start)
    ts = record_traces_timed(prompts, slm, target, ELLS, slm.vocab_size, n_tokens=args.n_tokens, seed=args.seed,
                             temperature=args.temperature, meta={"settings": settings,
                                                                 "prompt_lengths": [len(p) for p in prompts]},
                             progress=True, time_budget_s=60 * args.budget_min if args.budget_min else None)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    ts.save(tmp)
    tmp.replace(path)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=cliargs.output_dir, default=Path("experiment_out/qwen"),
                   help="output directory (trace cache)")
    p.add_argument("--prompts", type=cliargs.positive_int, default=10, help="BBC News prompts (the first N articles)")
    p.add_argument("--start", type=cliargs.non_negative_int, default=0, help="first article index")
    p.add_argument("--prompt-tokens", type=cliargs.positive_int, default=128, help="prompt length cap (paper: 400)")
    p.add_argument("--n-tokens", type=cliargs.positive_int, default=64,
                   help="contexts per prompt: 52 generated tokens + room for the last round's drafts")
    p.add_argument("--temperature", type=cliargs.non_negative_float, default=0.4)
    p.add_argument("--seed", type=cliargs.seed, default=0)
    p.add_argument("--draft", default="qwen-draft", type=model_ref)
    p.add_argument("--target", default="qwen-target", type=model_ref)
    p.add_argument("--draft-variant", default="int8", choices=("int8", "fp32"), help="ONNX variant of the draft")
    p.add_argument("--target-dtype", default="fp32", choices=("fp32", "bf16"),
                   help="fp32: bf16 matmuls are emulated on AVX2 CPUs without bf16 units (much slower)")
    p.add_argument("--draft-threads", type=cliargs.positive_int, default=1)
    p.add_argument("--target-threads", type=cliargs.positive_int, default=2)
    p.add_argument("--budget-min", type=cliargs.non_negative_float, default=0.0,
                   help="stop starting new prompts after this many minutes of recording (0: no limit; at least 2 "
                        "prompts); the file keeps what was recorded")
    p.add_argument("--force", action="store_true", help="record again even if the cached trace exists")
    add_logging_args(p)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv experiment record", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging(args)
    print(record(args))  # the command's result: the trace path
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
