"""Benchmark of the lattice-point codec: time per encode / decode in each mode and bits per point against the bound.

Synthetic LLM-like draft distributions: softmax(logits / T) with Gaussian logits (std 2.5) or Zipf logits
(-1.1 * log rank, random token order), at temperatures 0.4 and 1.0 ("flat": uniform over ell random tokens, every
count 1, the enumerative coder's worst case; not in the default set), quantized at resolution ell with the QSV rule
(qsv_wire.core.quantize_probs; a numpy copy of the rule when the C core lacks it).

    python benchmarks/bench_codec.py                       # V in {32000, 50272, 151936}, ell in {16, 240, 720}
    python benchmarks/bench_codec.py --vocab-size 151936 --ell 720 --samples 5 --json out.json

Times are process CPU time per call (``time.process_time``: on a shared, busy machine wall-clock time measures the
neighbours), best of ``--trials`` batches, averaged over the sampled distributions. "C" columns call the C functions
directly through cffi with prepared arguments (about 0.3 µs of call overhead included); "API" columns go through
``qsv_wire.codec.encode_arrays`` / ``decode`` (argument checks, output allocation, LatticePoint validation).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from qsv_wire._qsv_core import ffi, lib
from tqdm import tqdm

from qsv_wire import codec

log = logging.getLogger("bench_codec")

MODES = ("auto", "enum", "sparse")
MODE_CODES = {"auto": lib.QSV_CODEC_MODE_AUTO, "enum": lib.QSV_CODEC_MODE_ENUM, "sparse": lib.QSV_CODEC_MODE_SPARSE}


def quantizer() -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    from qsv_wire.core import quantize_probs

    def quantize_core(probs: np.ndarray, ell: int) -> tuple[np.ndarray, np.ndarray]:
        point = quantize_probs(probs, ell)
        return point.indices, point.counts

    return quantize_core


def distribution(rng: np.random.Generator, vocab_size: int, kind: str, temperature: float, ell: int) -> np.ndarray:
    if kind == "flat":  # uniform over ell random tokens: every count 1, the enumerative coder's worst case
        p = np.zeros(vocab_size)
        p[rng.choice(vocab_size, min(ell, vocab_size), replace=False)] = 1.0
        return p / p.sum()
    if kind == "gaussian":
        logits = rng.normal(0.0, 2.5, vocab_size)
    else:  # zipf
        logits = -1.1 * np.log(rng.permutation(vocab_size) + 1.0)
    z = logits / temperature
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def best_time(fn: Callable[[], object], trials: int, budget_s: float) -> float:
    """Seconds per call: best over `trials` batches, each batch sized to take about budget_s / trials."""
    start = time.process_time()
    fn()
    once = max(time.process_time() - start, 1e-6)
    n = max(1, int(budget_s / trials / once))
    best = float("inf")
    for _ in range(trials):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n)
    return best


class CCalls:
    """Direct cffi calls of the C encoder / decoder with prepared arguments for one (V, ell)."""

    def __init__(self, vocab_size: int, ell: int) -> None:
        ws_bytes = int(lib.qsv_codec_workspace_bytes(vocab_size, ell))
        self.ws_buf = ffi.new("uint8_t[]", max(1, ws_bytes))
        self.ws_owner = ffi.new("qsv_workspace *", (self.ws_buf, ws_bytes))
        self.ws = self.ws_owner[0]
        self.params = ffi.new("qsv_codec_params *")
        if lib.qsv_codec_params_init(self.params, vocab_size, ell, self.ws) != 0:
            raise RuntimeError("params_init failed")
        self.cap = int(self.params.max_nnz)
        self.out = ffi.new("uint8_t[]", 16 * self.cap + int(self.params.bound_bits) // 8 + 16)
        self.didx = ffi.new("uint32_t[]", self.cap)
        self.dcnt = ffi.new("uint32_t[]", self.cap)
        self.dpoint = ffi.new("qsv_point *", (self.didx, self.dcnt, self.cap, 0))

    def encoder(self, idx: np.ndarray, cnt: np.ndarray, mode: str) -> Callable[[], object]:
        i, c = ffi.from_buffer("uint32_t[]", idx), ffi.from_buffer("uint32_t[]", cnt)
        point = ffi.new("qsv_point *", (i, c, idx.size, idx.size))
        msg = ffi.new("qsv_message *", (self.out, len(self.out), MODE_CODES[mode], 0, 0))
        p, ws = self.params, self.ws
        return lambda _arrays=(i, c): lib.qsv_codec_encode(p, point, msg, ws)  # _arrays: what point refers to

    def decoder(self, data: bytes) -> Callable[[], object]:
        buf, size = ffi.from_buffer("uint8_t[]", data), len(data)
        p, point, ws = self.params, self.dpoint, self.ws
        return lambda: lib.qsv_codec_decode(p, buf, size, point, ffi.NULL, ws)


@dataclass
class Row:
    vocab_size: int
    ell: int
    kind: str
    temperature: float
    nnz_mean: float
    bound_bits: int
    bits: dict[str, float]
    encode_us: dict[str, float]  # C call
    decode_us: dict[str, float]  # C call
    api_encode_us: float  # encode_arrays, auto
    api_decode_us: float  # decode of the auto message
    auto_enum_share: float


def run_config(
    vocab_size: int,
    ell: int,
    kind: str,
    temperature: float,
    samples: int,
    trials: int,
    budget_s: float,
    rng: np.random.Generator,
    quantize: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
) -> Row:
    bound = codec.bound_bits(vocab_size, ell)
    bits: dict[str, list[int]] = {m: [] for m in MODES}
    enc: dict[str, list[float]] = {m: [] for m in MODES}
    dec: dict[str, list[float]] = {m: [] for m in MODES}
    api_enc: list[float] = []
    api_dec: list[float] = []
    nnz, enum_chosen = [], 0
    calls = CCalls(vocab_size, ell)
    for _ in range(samples):
        idx, cnt = quantize(distribution(rng, vocab_size, kind, temperature, ell), ell)
        nnz.append(idx.size)
        for mode in MODES:
            data = codec.encode_arrays(idx, cnt, vocab_size, ell, mode)
            point = codec.decode(data, vocab_size, ell)
            if not (np.array_equal(point.indices, idx) and np.array_equal(point.counts, cnt)):
                raise RuntimeError(f"round trip failed: V={vocab_size} ell={ell} mode={mode}")
            bits[mode].append(codec.encoded_bits(point, vocab_size, ell, mode))
            if mode == "auto":
                enum_chosen += codec.message_mode(data) == "enum"
                api_enc.append(
                    best_time(lambda i=idx, c=cnt: codec.encode_arrays(i, c, vocab_size, ell), trials, budget_s)
                )
                api_dec.append(best_time(lambda d=data: codec.decode(d, vocab_size, ell), trials, budget_s))
            enc[mode].append(best_time(calls.encoder(idx, cnt, mode), trials, budget_s))
            dec[mode].append(best_time(calls.decoder(data), trials, budget_s))
    return Row(
        vocab_size,
        ell,
        kind,
        temperature,
        float(np.mean(nnz)),
        bound,
        {m: float(np.mean(v)) for m, v in bits.items()},
        {m: float(np.mean(v)) * 1e6 for m, v in enc.items()},
        {m: float(np.mean(v)) * 1e6 for m, v in dec.items()},
        float(np.mean(api_enc)) * 1e6,
        float(np.mean(api_dec)) * 1e6,
        enum_chosen / samples,
    )


def markdown(rows: list[Row]) -> str:
    head = (
        "| V | ell | logits | T | nnz | bound | auto bits | sparse bits | auto/(bound+1) | enum chosen "
        "| C enc µs auto / enum / sparse | C dec µs enum / sparse | API enc / dec µs |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r.vocab_size} | {r.ell} | {r.kind} | {r.temperature} | {r.nnz_mean:.1f} | {r.bound_bits} "
            f"| {r.bits['auto']:.0f} | {r.bits['sparse']:.0f} | {r.bits['auto'] / (r.bound_bits + 1):.3f} "
            f"| {r.auto_enum_share:.0%} "
            f"| {r.encode_us['auto']:.1f} / {r.encode_us['enum']:.1f} / {r.encode_us['sparse']:.1f} "
            f"| {r.decode_us['enum']:.1f} / {r.decode_us['sparse']:.1f} "
            f"| {r.api_encode_us:.1f} / {r.api_decode_us:.1f} |"
        )
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from qsv_wire.logs import add_logging_args, setup_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, nargs="+", default=[32000, 50272, 151936])
    parser.add_argument("--ell", type=int, nargs="+", default=[16, 240, 720])
    parser.add_argument("--kinds", nargs="+", choices=["gaussian", "zipf", "flat"], default=["gaussian", "zipf"])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 1.0])
    parser.add_argument("--samples", type=int, default=8, help="distributions per configuration")
    parser.add_argument("--trials", type=int, default=3, help="timed batches per measurement (best is kept)")
    parser.add_argument("--budget", type=float, default=0.03, help="seconds spent timing one measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    add_logging_args(parser, default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args)

    rng = np.random.default_rng(args.seed)
    quantize = quantizer()
    configs = [(v, e, k, t) for v in args.vocab_size for e in args.ell for k in args.kinds for t in args.temperatures]
    rows = [
        run_config(v, e, k, t, args.samples, args.trials, args.budget, rng, quantize)
        for v, e, k, t in tqdm(configs, desc="configs")
    ]
    log.info("%s", markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()
