"""Verifier throughput: aggregate verified tokens/s at 1, 4, 16 concurrent sessions, batched vs one at a time.

Both modes run in the same process on the same model, sessions, prompts and drafts (seeded), so the ratio is measured
side by side:

* one at a time: every round is its own forward pass (``VerifierService.verify`` without the scheduler), sessions
  taking turns;
* batched: one thread per board submits its rounds to the running scheduler (``max_batch`` = sessions,
  ``max_wait`` 20 ms), which verifies the rounds of many sessions in one padded forward pass.

Each board has a prompt of random length in [prompt_len/2, prompt_len] and sends ``rounds`` rounds of ``draft_len``
drafts; a draft is a random token with a lattice point of resolution ℓ = 16 concentrated on it (q̂(x) = 1), so the
verifier does the full work (forward, p rows, acceptance tests, residual draw, cache crop) whatever it accepts.
"Verified tokens/s" counts draft tokens verified per second (L per round); committed tokens/s is also printed.

Model: SmolLM2-135M (GGUF from the model cache, dequantized to fp32) when cached, else random weights of the same
shape (``--model random``). Usage: python benchmarks/bench_verifier.py [--model smollm2|random] [--sessions 1,4,16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
import time

import numpy as np
import torch
from tqdm import tqdm

from cloud_verifier.cli import random_target
from cloud_verifier.service import ServiceConfig, VerifierErrorReply, VerifierService
from cloud_verifier.target import TargetModel
from qsv_wire.lattice import LatticePoint
from qsv_wire.protocol import DraftRound, OpenSession
from qsv_wire.protocol import SamplingParams as WireSampling

log = logging.getLogger("bench_verifier")
ELL = 16


def load_target(name: str, dtype: str) -> tuple[TargetModel, bytes | None, str]:
    if name == "random":
        return random_target("smollm2-135m", "auto", dtype), None, "random weights, SmolLM2-135M shape"
    try:
        target, vocab_hash = TargetModel.from_registry(name, "auto", dtype, fetch_missing=False)
        return target, vocab_hash, f"{name} (real weights)"
    except FileNotFoundError as exc:
        log.warning("%s not cached (%s): using random weights of the SmolLM2-135M shape", name, exc)
        return random_target("smollm2-135m", "auto", dtype), None, "random weights, SmolLM2-135M shape"


class BenchBoard:
    def __init__(self, sid: int, vocab: int, prompt_len: int, draft_len: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.sid, self.vocab, self.draft_len = sid, vocab, draft_len
        self.history = [int(t) for t in rng.integers(0, vocab, size=int(rng.integers(prompt_len // 2, prompt_len + 1)))]
        self.rng = rng
        self.seq = 0

    def open_msg(self, vocab_hash: bytes | None) -> OpenSession:
        return OpenSession("bench", self.sid, tuple(self.history), WireSampling(temperature=1.0, seed=self.sid),
                           self.vocab, vocab_hash or b"\x00" * 32)

    def draft(self) -> DraftRound:
        tokens = tuple(int(t) for t in self.rng.integers(0, self.vocab, size=self.draft_len))
        points = tuple(LatticePoint(np.array([t], np.uint32), np.array([ELL], np.uint32), ELL, self.vocab)
                       for t in tokens)
        return DraftRound(self.sid, self.seq, len(self.history), self.vocab, ELL, 0, tokens, points)

    def apply(self, msg: DraftRound, fb) -> None:
        if isinstance(fb, VerifierErrorReply):
            raise RuntimeError(f"board {self.sid}: {fb.message}")
        self.history += list(msg.tokens[: fb.accepted]) + [fb.next_token]
        self.seq += 1


def run_mode(target: TargetModel, vocab_hash: bytes | None, sessions: int, batched: bool, args) -> dict:
    cfg = ServiceConfig(max_sessions=sessions, max_batch=sessions, max_wait_s=0.02, vocab_hash=vocab_hash,
                        memory_budget_bytes=16 << 30)
    service = VerifierService(target, cfg)
    boards = [BenchBoard(i, target.vocab_size, args.prompt_tokens, args.draft_len,
                         seed=int(hashlib.sha256(f"{i}".encode()).hexdigest()[:8], 16)) for i in range(sessions)]
    for b in boards:
        service.open(b.open_msg(vocab_hash))
    bar = tqdm(total=sessions * args.rounds, desc=f"{sessions:>2} sessions {'batched' if batched else 'serial '}",
               leave=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    if batched:
        errors: list[BaseException] = []

        def drive(board: BenchBoard) -> None:
            try:
                for _ in range(args.rounds):
                    msg = board.draft()
                    board.apply(msg, service.submit(msg).result())
                    bar.update(1)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)

        with service:
            threads = [threading.Thread(target=drive, args=(b,)) for b in boards]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    else:
        failures: list[BaseException] = []

        def serial() -> None:
            try:
                for _ in range(args.rounds):
                    for b in boards:
                        msg = b.draft()
                        b.apply(msg, service.verify(msg))
                        bar.update(1)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failures.append(exc)

        # forwards run off the main thread in both modes (torch's intra-op threading differs per thread)
        worker = threading.Thread(target=serial)
        worker.start()
        worker.join()
        if failures:
            raise failures[0]
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    bar.close()
    rounds = sessions * args.rounds
    committed = service.metrics.value("emitted_tokens_total")
    forwards = service.metrics._hists["batch_forward_seconds"].n
    return {"sessions": sessions, "mode": "batched" if batched else "one-at-a-time", "seconds": elapsed,
            "rounds": rounds, "verified_tok_s": rounds * args.draft_len / elapsed, "cpu_seconds": cpu,
            "verified_tok_per_cpu_s": rounds * args.draft_len / cpu,
            "committed_tok_s": committed / elapsed,
            "rounds_s": rounds / elapsed, "mean_batch": rounds / max(1, forwards)}


def main(argv: list[str] | None = None) -> int:
    from qsv_wire.logs import add_logging_args, setup_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="registry name, .gguf, HF folder, or 'random'")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--sessions", default="1,4,16")
    p.add_argument("--rounds", type=int, default=6, help="rounds per session")
    p.add_argument("-L", "--draft-len", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="alternating serial/batched repeats per session count")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch default; 1 avoids oversubscription on shared small CPUs)")
    p.add_argument("--json", help="write the results here")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    target, vocab_hash, described = load_target(args.model, args.dtype)
    print(f"model: {described}; device {target.device}; dtype {target.dtype}; torch threads {torch.get_num_threads()}")
    print(f"L = {args.draft_len}, rounds/session = {args.rounds}, prompt ≤ {args.prompt_tokens} tokens")
    warm = BenchBoard(999, target.vocab_size, 16, args.draft_len, 0)  # warm-up forward (allocations, kernels)
    target.forward_round(target.prefill(warm.history[:-1]), warm.history[-1:] + list(warm.draft().tokens))
    results = []
    print(f"{'sessions':>8} {'one-at-a-time tok/s':>20} {'batched tok/s':>14} {'ratio':>6} {'mean batch':>10}"
          f"  (median over {args.repeats} alternating repeats; per-repeat ratios in brackets)")
    for n in [int(s) for s in args.sessions.split(",")]:
        serials, batcheds = [], []
        for _ in range(args.repeats):  # alternate the modes so background load hits both alike
            serials.append(run_mode(target, vocab_hash, n, False, args))
            batcheds.append(run_mode(target, vocab_hash, n, True, args))
        ratios = [b["verified_tok_s"] / s["verified_tok_s"] for s, b in zip(serials, batcheds, strict=True)]
        cpu_ratios = [b["verified_tok_per_cpu_s"] / s["verified_tok_per_cpu_s"]
                      for s, b in zip(serials, batcheds, strict=True)]
        serial_tok = float(np.median([s["verified_tok_s"] for s in serials]))
        batched_tok = float(np.median([b["verified_tok_s"] for b in batcheds]))
        results.append({"sessions": n, "one_at_a_time": serials, "batched": batcheds, "ratios": ratios,
                        "median_ratio": float(np.median(ratios)), "cpu_ratios": cpu_ratios,
                        "median_cpu_ratio": float(np.median(cpu_ratios))})
        print(f"{n:>8} {serial_tok:>20.1f} {batched_tok:>14.1f} {float(np.median(ratios)):>5.2f}x "
              f"{batcheds[0]['mean_batch']:>10.1f}  [{', '.join(f'{r:.2f}' for r in ratios)}]"
              f"  per CPU-second: {float(np.median(cpu_ratios)):.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": described, "args": vars(args), "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
