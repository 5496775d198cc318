"""A/B benchmark of the C quantizer: another git revision against the working tree, interleaved call by call.

Both builds of csrc/qsv_quant.c (the revision's from ``git archive``, renamed with -D to old_*, and the working
tree's) are linked into one program, csrc/bench/ab_quant.c, compiled as the cffi extension is (-O3, no -march).
Each call pair runs back to back in alternating order on the same logits row, so both builds see the same machine
state; on this shared VM the per-call time jumps between a fast and a slow state, which decides a separate run's
median. Rows: the synthetic "gauss" and "zipf" kinds of bench_core.py, and with --qwen-rows N the real Qwen draft
rows (cached by bench_core.py; needs the model).

Usage: python benchmarks/ab_quant.py --rev HEAD~1 [--qwen-rows 64] [--temperatures 1.0 0.7 0.4] [--calls 1000]
Prints per (kind, T): old and new median µs (thread CPU time), new/old of the medians, and the median per-call ratio.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import llm_like_logits, qwen_logit_rows  # noqa: E402

log = logging.getLogger("ab_quant")

# the public symbols of qsv_quant.c (qsv_quant.h), renamed in the other revision's object
PUBLIC = ("qsv_quant_workspace_size", "qsv_kernel_available", "qsv_quantize_logits",
          "qsv_logits_scaled", "qsv_quantize_probs_f64", "qsv_quantize_probs_f32",
          "qsv_sample", "qsv_fast_exp")
CFLAGS = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Werror"]  # as csrc/build_core.py


def build(rev: str, work: Path, cc: str) -> Path:
    """The A/B program: ``rev``'s qsv_quant.c as old_*, the working tree's as is."""
    old_src = work / "old"
    old_src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "csrc"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
    renames = [f"-D{s}=old_{s}" for s in PUBLIC]
    old_o, new_o, exe = work / "old.o", work / "new.o", work / "ab_quant"
    subprocess.run([cc, *CFLAGS, f"-I{old_src / 'csrc'}", *renames, "-c", str(old_src / "csrc" / "qsv_quant.c"), "-o",
                    str(old_o)], check=True)  # fmt: skip
    subprocess.run([cc, *CFLAGS, f"-I{CSRC}", "-c", str(CSRC / "qsv_quant.c"), "-o", str(new_o)], check=True)
    subprocess.run([cc, *CFLAGS, f"-I{CSRC}", str(CSRC / "bench" / "ab_quant.c"), str(old_o), str(new_o), "-lm", "-o",
                    str(exe)], check=True)  # fmt: skip
    return exe


def row_files(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    rng = np.random.default_rng(args.seed)
    files = {}
    kinds = {k: np.stack([llm_like_logits(rng, args.vocab_size, k) for _ in range(args.synthetic_rows)])
             for k in ("gauss", "zipf")}  # fmt: skip
    if args.qwen_rows:
        kinds["qwen"] = qwen_logit_rows(args.qwen_rows, args.seed)
    for kind, rows in kinds.items():
        if rows.shape[1] != args.vocab_size:
            raise SystemExit(f"{kind} rows have V = {rows.shape[1]}, not --vocab-size {args.vocab_size}")
        files[kind] = work / f"{kind}.f32"
        rows.astype(np.float32).tofile(files[kind])
    return files


def main(argv: list[str] | None = None) -> None:
    from qsv_wire.logs import add_logging_args, setup_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", required=True, help="the git revision to compare against (e.g. HEAD~1)")
    p.add_argument("--vocab-size", type=int, default=151936)
    p.add_argument("--ell", type=int, default=720)
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7, 0.4])
    p.add_argument("--calls", type=int, default=1000, help="timed call pairs per (kind, T)")
    p.add_argument("--synthetic-rows", type=int, default=16)
    p.add_argument("--qwen-rows", type=int, default=0, help="also N real Qwen draft rows (needs the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cc", default="gcc")
    add_logging_args(p, default="INFO")
    args = p.parse_args(argv)
    setup_logging(args)
    with tempfile.TemporaryDirectory(prefix="qsv-ab-") as tmp:
        work = Path(tmp)
        exe = build(args.rev, work, args.cc)
        files = row_files(args, work)
        print(f"A/B qsv_quantize_logits: {args.rev} (old) vs working tree (new), V = {args.vocab_size}, "
              f"ell = {args.ell}, {args.calls} interleaved call pairs each (thread CPU time)")
        print(f"{'kind':>6} {'T':>4} | {'old µs':>7} {'new µs':>7} | {'new/old':>7} {'per-call':>8}")
        for kind, path in files.items():
            for temp in args.temperatures:
                cmd = [str(exe), str(path), str(args.vocab_size), str(args.ell), str(temp), str(args.calls)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
                old_us, new_us, ratio, per_call = (float(x) for x in out)
                print(f"{kind:>6} {temp:>4} | {old_us:>7.1f} {new_us:>7.1f} | {ratio:>7.3f} {per_call:>8.3f}")


if __name__ == "__main__":
    main()
