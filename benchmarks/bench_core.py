"""Benchmark of the C core: µs per token for quantize and quantize + sample (+ pack) vs numpy and torch.

Compared side by side in one run, on the same synthetic LLM-like logits (and, with --qwen-rows N, on N real next-token
logit rows of the Qwen2.5-Coder-0.5B draft model, ONNX int8, sampled continuations of BBC prompts; kind "qwen"):
  C        qsv_wire.core.Quantizer.quantize_logits_into (the per-token API, Python call included)
  C+s+pack the same + Q-S sample (sample_last) + qsv_wire.codec.encode_arrays of the output buffers (sparse and
           auto mode)
  draft    Quantizer.draft_token: quantize + sample + encode (auto) in one C call (the per-token hot path)
  numpy    qsv_wire.reference (float64 softmax, lexsort of residuals)
  torch    the authors' style: torch softmax, ell*q, floor(+1/2), argsort of all residuals (when d != 0), fix,
           torch.multinomial draw; one thread

Usage: python benchmarks/bench_core.py [--vocab-size 32000 50272 151936] [--ell 16 240 720] [--temperatures 0.4 1.0]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qsv_wire import core
from qsv_wire import reference as ref

log = logging.getLogger("bench_core")

try:
    from qsv_wire import codec
except ImportError:  # pragma: no cover - the codec lands separately
    codec = None  # type: ignore[assignment]


def llm_like_logits(rng: np.random.Generator, vocab: int, kind: str) -> np.ndarray:
    """Gaussian bulk with a few strong tokens ("gauss"), or Zipf-ranked logits with noise ("zipf")."""
    if kind == "gauss":
        z = 2.5 * rng.normal(size=vocab)
        strong = rng.integers(0, vocab, 30)
        z[strong] += 6.0 + 8.0 * rng.random(30)
    else:
        ranks = rng.permutation(vocab) + 1.0
        z = -2.0 * np.log(ranks) + 0.5 * rng.normal(size=vocab) + 10.0
    return z.astype(np.float32)


def qwen_logit_rows(count: int, seed: int) -> np.ndarray:
    """``count`` real next-token logit rows (float32, V = 151,936) of the Qwen draft model: continuations sampled at
    T = 1 from BBC prompts, a new prompt every 16 tokens. Cached under the model cache (bench/)."""
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from qsv_models import cache_dir
    from qsv_models.bbc import bbc_prompts
    from qsv_tools.export.onnx_export import export_model

    path = cache_dir() / "bench" / f"qwen_logits_{count}_{seed}.npy"
    if path.exists():
        return np.load(path)
    export = export_model("qwen-draft", int8=True)
    slm = OnnxSLM(export.directory, "int8", SessionConfig(threads=1))
    rng = np.random.default_rng(seed)
    per_prompt = 16
    prompts = bbc_prompts((count + per_prompt - 1) // per_prompt, max_chars=800)
    rows = []
    for prompt in tqdm(prompts, desc="qwen logits", unit="prompt"):
        logits = np.array(slm.prefill(slm.encode(prompt)), dtype=np.float32)
        for _ in range(min(per_prompt, count - len(rows))):
            rows.append(logits)
            p = np.exp(logits.astype(np.float64) - logits.max())
            token = int(rng.choice(p.size, p=p / p.sum()))
            logits = np.array(slm.forward([token])[-1], dtype=np.float32)
    out = np.stack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def torch_argsort_quantize(torch, z, ell: int, temperature: float):  # type: ignore[no-untyped-def]
    """Softmax, ell*q, floor(x + 1/2), full argsort of the residuals when the sum is off, fix (authors' approach:
    like their lattice_based_quantization_torch, the sort is skipped when d = 0)."""
    q = torch.softmax(z / temperature, dim=-1)
    x = q * ell
    b = torch.floor(x + 0.5)
    d = int(ell - int(b.sum().item()))
    if d > 0:
        order = torch.argsort(x - b, descending=True, stable=True)
        b[order[:d]] += 1
    elif d < 0:
        excess = torch.where(b >= 1, b - x, torch.full_like(x, -float("inf")))
        order = torch.argsort(excess, descending=True, stable=True)
        b[order[:-d]] -= 1
    return b


def torch_sample(torch, b, generator) -> int:  # type: ignore[no-untyped-def]
    """Sampling from q_hat = b / ell as the authors do: torch.multinomial over the full vocabulary."""
    return int(torch.multinomial(b, 1, generator=generator).item())


CLOCKS = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}
_clock = CLOCKS["cpu"]


def encode_buffers(quantizer: core.Quantizer, nnz: int, mode: str) -> bytes:
    """Pack the Quantizer's output buffers (no LatticePoint): codec.encode_arrays when available."""
    if hasattr(codec, "encode_arrays"):
        return codec.encode_arrays(quantizer.indices[:nnz], quantizer.counts[:nnz], quantizer.vocab_size,
                                   quantizer.ell, mode=mode)  # fmt: skip
    return codec.encode(quantizer.point(), quantizer.vocab_size, quantizer.ell, mode=mode)


def time_us(fn: Callable[[], object], repeats: int, warmup: int = 3,
            setup: Callable[[], object] | None = None) -> float:  # fmt: skip
    """Median time of one call in µs (thread CPU time by default: robust on a shared machine); ``setup`` runs
    untimed before each call."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = _clock()
        fn()
        samples.append(_clock() - t0)
    return statistics.median(samples) / 1e3


class Rows:
    """The logits buffer of the timed calls: ``load()`` (untimed) copies the next row into it, as the SLM's output
    layer writes a fresh row before each quantization (so every kind starts equally warm in cache)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = [np.ascontiguousarray(r, dtype=np.float32) for r in np.atleast_2d(rows)]
        self.buffer = np.empty_like(self.rows[0])
        self.i = -1

    def load(self) -> None:
        self.i = (self.i + 1) % len(self.rows)
        np.copyto(self.buffer, self.rows[self.i])


def bench_config(z: np.ndarray, ell: int, temperature: float, u: int, args: argparse.Namespace, torch) -> dict:  # type: ignore[no-untyped-def]
    """All measurements for one (logits, ell, T); z is one row or several (timed calls cycle through them; nnz and
    bits are medians over the rows); u is the uniform integer of the Q-S draw."""
    rows = Rows(z)
    z, buf = rows.rows[0], rows.buffer
    vocab = z.size
    quantizer = core.Quantizer(vocab)
    row: dict = {"V": vocab, "ell": ell, "T": temperature}
    row["nnz"] = int(np.median([quantizer.quantize_logits_into(r, ell, temperature) for r in rows.rows]))
    row["c_q"] = time_us(lambda: quantizer.quantize_logits_into(buf, ell, temperature), args.repeats, setup=rows.load)

    def c_qs() -> int:
        quantizer.quantize_logits_into(buf, ell, temperature)
        return quantizer.sample_last(u)

    row["c_qs"] = time_us(c_qs, args.repeats, setup=rows.load)
    if codec is not None:
        for mode in ("sparse", "auto"):

            def c_qsp(mode: str = mode) -> bytes:
                nnz = quantizer.quantize_logits_into(buf, ell, temperature)
                quantizer.sample_last(u)
                return encode_buffers(quantizer, nnz, mode)

            row[f"c_qsp_{mode}"] = time_us(c_qsp, args.repeats, setup=rows.load)
        row["c_draft"] = time_us(lambda: quantizer.draft_token(buf, ell, u, temperature), args.repeats, setup=rows.load)
        bits = [8 * len(quantizer.draft_token(r, ell, u, temperature)[1]) for r in rows.rows]
        row["bits_auto"] = int(np.median(bits))
        row["bound_bits"] = codec.bound_bits(vocab, ell)
    if not args.no_numpy:
        row["np_qs"] = time_us(
            lambda: ref.sample(ref.quantize_logits(z, ell, temperature), u), args.slow_repeats, warmup=1
        )
    if torch is not None:
        zt = torch.from_numpy(z)
        gen = torch.Generator().manual_seed(args.seed)
        with torch.inference_mode():
            row["torch_q"] = time_us(
                lambda: torch_argsort_quantize(torch, zt, ell, temperature), args.slow_repeats, warmup=1
            )
            row["torch_qs"] = time_us(
                lambda: torch_sample(torch, torch_argsort_quantize(torch, zt, ell, temperature), gen),
                args.slow_repeats,
                warmup=1,
            )
    return row


def main(argv: list[str] | None = None) -> None:
    from qsv_wire.logs import add_logging_args, setup_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, nargs="+", default=[32_000, 50_272, 151_936])
    parser.add_argument("--ell", type=int, nargs="+", default=[16, 240, 720])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 1.0])
    parser.add_argument("--kinds", nargs="*", default=["gauss", "zipf"], choices=["gauss", "zipf"])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per C measurement")
    parser.add_argument("--slow-repeats", type=int, default=7, help="timed calls per numpy / torch measurement")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qwen-rows", type=int, default=0,
                        help="also bench N real Qwen draft logit rows at V = 151,936 (kind qwen; needs the model)")
    parser.add_argument("--save-qwen", type=Path, default=None,
                        help="write the Qwen rows as raw float32 (rows x V) for csrc/bench (make -C csrc bench)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="thread CPU time or wall time")
    add_logging_args(parser, default="INFO")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    setup_logging(args)

    torch = None
    if not args.no_torch:
        import torch

        torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    configs = [(v, ell, t, k) for v in args.vocab_size for ell in args.ell for t in args.temperatures
               for k in args.kinds]
    rows = []
    if args.qwen_rows:
        qwen = qwen_logit_rows(args.qwen_rows, args.seed)
        if args.save_qwen:
            qwen.astype(np.float32).tofile(args.save_qwen)
        configs += [(qwen.shape[1], ell, t, "qwen") for ell in args.ell for t in args.temperatures]
    for vocab, ell, temperature, kind in tqdm(configs, desc="bench_core", unit="cfg"):
        z = qwen if kind == "qwen" else llm_like_logits(rng, vocab, kind)
        u = int(rng.integers(0, ell))
        rows.append(bench_config(z, ell, temperature, u, args, torch) | {"kind": kind})

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_core  {platform.processor() or platform.machine()}  torch threads=1  median µs per token "
        f"({args.clock} clock, load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    header = f"{'V':>7} {'ell':>5} {'T':>4} {'kind':>5} {'nnz':>4} | {'C q':>7} {'C q+s':>7}"
    if codec is not None:
        header += f" {'+pack sp':>8} {'+pack au':>8} {'draft':>7} {'bits':>6} {'bound':>6}"
    header += f" | {'numpy':>8} {'torch q':>8} {'torch qs':>8} | {'torch/C q':>9} {'torch/C qs':>10} {'np/C qs':>8}"
    print(header)
    for r in rows:
        line = f"{r['V']:>7} {r['ell']:>5} {r['T']:>4} {r['kind']:>5} {r['nnz']:>4}"
        line += f" | {r['c_q']:>7.1f} {r['c_qs']:>7.1f}"
        if codec is not None:
            line += f" {r['c_qsp_sparse']:>8.1f} {r['c_qsp_auto']:>8.1f} {r['c_draft']:>7.1f}"
            line += f" {r['bits_auto']:>6} {r['bound_bits']:>6}"
        np_qs, t_q, t_qs = r.get("np_qs", float("nan")), r.get("torch_q", float("nan")), r.get("torch_qs", float("nan"))
        line += f" | {np_qs:>8.0f} {t_q:>8.0f} {t_qs:>8.0f}"
        line += f" | {t_q / r['c_q']:>9.0f} {t_qs / r['c_qs']:>10.0f} {np_qs / r['c_qs']:>8.0f}"
        print(line)


if __name__ == "__main__":
    main()
