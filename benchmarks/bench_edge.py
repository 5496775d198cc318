"""Edge runtime benchmark on the real Qwen2.5-Coder pair (see BENCHMARKS.md, section "Edge runtime").

1. Drafting tokens/s of Qwen2.5-Coder-0.5B: onnxruntime fp32 and int8 vs torch eager fp32 and bf16, the same
   BBC News prompt and the same Q-S step (SLM forward + C core), all four loaded at once and interleaved token by
   token in one run; ratios to torch bf16.
2. Share of the C core (quantize + sample) in the per-token drafting time.
3. Uplink bits per draft token on real Qwen distributions for each codec mode vs the paper's fixed-length bound.
4. Acceptance rate of the pair (0.5B drafts, 1.5B verifies) on BBC News prompts at temperature 0.4 and 1.0.

    python benchmarks/bench_edge.py --threads 1 [--json out.json] [--skip-acceptance]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_edge")


def interleaved_speed(slms: dict[str, object], prompt_ids: list[int], tokens: int, ell: int, temperature: float,
                      seed: int) -> dict[str, dict]:
    """Q-S drafting, one token per model in turn (round robin), so that load changes on the shared machine hit
    every runtime alike. Per token: one SLM forward, then quantize + sample in the C core (what Drafter.draft
    does per position). Prefill is timed once per model, before the loop."""
    from qsv_wire import core

    state = {}
    for name, slm in slms.items():
        t0 = time.perf_counter()
        logits = slm.prefill(prompt_ids)
        prefill = time.perf_counter() - t0
        quantizer = core.Quantizer(slm.vocab_size)
        quantizer.quantize_logits_into(logits, ell, temperature)
        token = quantizer.sample_last(0)
        state[name] = {"quantizer": quantizer, "token": token, "rng": np.random.default_rng(seed), "slm_s": 0.0,
                       "core_s": 0.0, "prefill_s": prefill, "tokens": [token]}
    names = list(slms)
    for step in range(tokens):
        for name in names[step % len(names):] + names[:step % len(names)]:
            st = state[name]
            t0 = time.perf_counter()
            logits = slms[name].forward([st["token"]])[-1]
            t1 = time.perf_counter()
            st["quantizer"].quantize_logits_into(logits, ell, temperature)
            st["quantizer"].point()
            st["token"] = st["quantizer"].sample_last(int(st["rng"].integers(0, ell)))
            st["core_s"] += time.perf_counter() - t1
            st["slm_s"] += t1 - t0
            st["tokens"].append(st["token"])
    out = {}
    for name, st in state.items():
        per_token = (st["slm_s"] + st["core_s"]) / tokens
        out[name] = {"tokens_per_s": 1.0 / per_token, "prefill_s": st["prefill_s"],
                     "slm_ms_per_token": 1e3 * st["slm_s"] / tokens, "core_ms_per_token": 1e3 * st["core_s"] / tokens,
                     "core_share": st["core_s"] / (st["slm_s"] + st["core_s"]), "tokens": st["tokens"]}
    return out


def codec_bits(logit_rows: np.ndarray, vocab: int, ells: list[int], temperatures: list[float]) -> list[dict]:
    from qsv_wire import core
    from qsv_wire.codec import bound_bits, encoded_bits, token_bits

    rows = []
    for temperature in temperatures:
        for ell in ells:
            bits = {"enum": [], "sparse": [], "auto": []}
            nnz = []
            for row in logit_rows:
                point = core.quantize_logits(np.ascontiguousarray(row, dtype=np.float32), ell, temperature)
                nnz.append(point.nnz)
                for mode in bits:
                    bits[mode].append(encoded_bits(point, vocab, ell, mode))
            tok = token_bits(vocab)
            rows.append({"temperature": temperature, "ell": ell, "mean_nnz": float(np.mean(nnz)),
                         "paper_bits": 16 + bound_bits(vocab, ell), "token_id_bits": tok,
                         **{f"{mode}_bits": tok + float(np.mean(v)) for mode, v in bits.items()},
                         "fp16_vector_bits": 16 * vocab})
    return rows


def acceptance(export_dir: Path, threads: int, prompts: list[list[int]], temperatures: list[float], draft_length: int,
               ell: int, max_new_tokens: int, target_dtype: str, variant: str = "int8") -> list[dict]:
    import torch

    from cloud_verifier.target import TargetModel
    from edge_runtime.drafter import DraftConfig, Drafter
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from qsv_models.hf import resolve_model
    from qsv_tools.local_loop import run_local_loop

    folder, gguf_file = resolve_model("qwen-target")
    t0 = time.perf_counter()
    target = TargetModel.load(folder, device="cpu", dtype=target_dtype, gguf_file=gguf_file)
    log.info("target loaded in %.0fs", time.perf_counter() - t0)
    slm = OnnxSLM(export_dir, variant, SessionConfig(threads=threads))
    rows = []
    for temperature in temperatures:
        drafted = accepted = rounds = emitted = 0
        draft_s = verify_s = 0.0
        for index, ids in enumerate(prompts):
            drafter = Drafter(slm, DraftConfig(ell=ell, temperature=temperature), seed=index)
            result = run_local_loop(drafter, target, ids, max_new_tokens, draft_length,
                                    torch.Generator().manual_seed(index))
            drafted, accepted = drafted + result.drafted, accepted + result.accepted
            rounds += len(result.rounds)
            emitted += sum(r.accepted + 1 for r in result.rounds)
            draft_s += sum(r.draft_s for r in result.rounds)
            verify_s += sum(r.verify_s for r in result.rounds)
            log.info("T=%.1f prompt %d: %r", temperature, index, slm.decode(result.tokens))
        rows.append({"temperature": temperature, "prompts": len(prompts), "draft_variant": variant,
                     "draft_length": draft_length, "ell": ell,
                     "drafted": drafted, "accepted": accepted, "acceptance_rate": accepted / max(drafted, 1),
                     "tokens_per_round": emitted / max(rounds, 1), "draft_s": draft_s, "verify_s": verify_s})
    return rows


def main() -> int:
    from qsv_wire.logs import add_logging_args, setup_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16, help="draft tokens per speed run")
    parser.add_argument("--ell", type=int, default=240)
    parser.add_argument("--temperature", type=float, default=0.4)
    parser.add_argument("--prompts", type=int, default=2, help="BBC prompts for the acceptance rate")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("-L", "--draft-len", type=int, default=4)
    parser.add_argument("--target-dtype", choices=("fp32", "bf16"), default="fp32",
                        help="target compute dtype (GGUF blocks stay packed; fp32 is their fastest path)")
    parser.add_argument("--skip-acceptance", action="store_true")
    parser.add_argument("--acceptance-only", action="store_true", help="only the acceptance-rate part")
    parser.add_argument("--draft-variant", choices=("fp32", "int8"), default="int8",
                        help="ONNX variant of the drafter in the acceptance-rate part")
    parser.add_argument("--json", type=Path, default=None)
    add_logging_args(parser, default="INFO")
    args = parser.parse_args()
    setup_logging(args)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from qsv_models.bbc import bbc_prompts
    from qsv_models.hf import load_causal_lm
    from qsv_tools.export.onnx_export import export_model
    from qsv_tools.torch_slm import TorchSLM

    report: dict = {"threads": args.threads, "load_avg_start": os.getloadavg(), "cpus": os.cpu_count()}
    export = export_model("qwen-draft", int8=True)
    if args.acceptance_only:
        tok = OnnxSLM(export.directory, "int8")
        prompts = [tok.encode(p) for p in bbc_prompts(args.prompts, max_chars=800, start=1)]
        rows = acceptance(export.directory, args.threads, prompts, [0.4, 1.0], args.draft_len, args.ell,
                          args.max_new_tokens, args.target_dtype, args.draft_variant)
        print_report({**report, "acceptance": rows, "load_avg_end": os.getloadavg()})
        return 0
    slms: dict[str, object] = {}
    for variant in ("fp32", "int8"):
        slms[f"onnxruntime {variant}"] = OnnxSLM(export.directory, variant, SessionConfig(threads=args.threads))
    prompt_ids = slms["onnxruntime fp32"].encode(bbc_prompts(1)[0])
    eos = export.meta["eos_token_ids"]
    for dtype in ("float32", "bfloat16"):
        model, _ = load_causal_lm("qwen-draft", dtype=dtype, with_tokenizer=False)
        slms[f"torch eager {dtype}"] = TorchSLM(model, eos)
    speed = interleaved_speed(slms, prompt_ids, args.tokens, args.ell, args.temperature, 0)
    del slms
    gc.collect()
    base = speed["torch eager bfloat16"]["tokens_per_s"]
    for name, row in speed.items():
        row["ratio_vs_torch_bf16"] = row["tokens_per_s"] / base
        log.info("%s: %.2f tok/s (%.2f× torch bf16)", name, row["tokens_per_s"], row["ratio_vs_torch_bf16"])
    report["prompt_tokens"] = len(prompt_ids)
    report["speed"] = speed

    # real Qwen distributions: fp32 ONNX logits at the positions the int8 run drafted
    slm = OnnxSLM(export.directory, "fp32", SessionConfig(threads=args.threads))
    slm.prefill(prompt_ids)
    rows = np.array(slm.forward(speed["onnxruntime int8"]["tokens"]), dtype=np.float32)
    report["bits"] = codec_bits(rows, slm.vocab_size, [16, 240, 720], [0.4, 1.0])
    del slm
    gc.collect()

    if not args.skip_acceptance:
        tok = OnnxSLM(export.directory, "int8")
        prompts = [tok.encode(p) for p in bbc_prompts(args.prompts, max_chars=800, start=1)]
        del tok
        report["acceptance"] = acceptance(export.directory, args.threads, prompts, [0.4, 1.0], args.draft_len,
                                          args.ell, args.max_new_tokens, args.target_dtype, args.draft_variant)
    report["load_avg_end"] = os.getloadavg()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def print_report(report: dict) -> None:
    print(f"\nthreads={report['threads']} cpus={report['cpus']} load avg start {report['load_avg_start']} "
          f"end {report['load_avg_end']}; prompt {report.get('prompt_tokens', '-')} tokens")
    if "speed" in report:
        print_speed_and_bits(report)
    if "acceptance" in report:
        print("\n| T | drafter | prompts | L | ℓ | drafted | accepted | acceptance | tokens/round | draft s "
              "| verify s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in report["acceptance"]:
            print(f"| {row['temperature']} | {row['draft_variant']} | {row['prompts']} | {row['draft_length']} "
                  f"| {row['ell']} | {row['drafted']} | {row['accepted']} | {row['acceptance_rate']:.3f} "
                  f"| {row['tokens_per_round']:.2f} | {row['draft_s']:.1f} | {row['verify_s']:.1f} |")


def print_speed_and_bits(report: dict) -> None:
    print("\n| runtime | tokens/s | × torch bf16 | SLM ms/token | C core ms/token | core share | prefill s |")
    print("|---|---|---|---|---|---|---|")
    for name, row in report["speed"].items():
        print(f"| {name} | {row['tokens_per_s']:.2f} | {row['ratio_vs_torch_bf16']:.2f} "
              f"| {row['slm_ms_per_token']:.1f} | {row['core_ms_per_token']:.2f} | {100 * row['core_share']:.1f}% "
              f"| {row['prefill_s']:.1f} |")
    print("\n| T | ℓ | mean nnz | auto bits | enum bits | sparse bits | paper (16 + bound) | fp16 vector |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["bits"]:
        print(f"| {row['temperature']} | {row['ell']} | {row['mean_nnz']:.1f} | {row['auto_bits']:.0f} | "
              f"{row['enum_bits']:.0f} | {row['sparse_bits']:.0f} | {row['paper_bits']} | {row['fp16_vector_bits']} |")


if __name__ == "__main__":
    raise SystemExit(main())
