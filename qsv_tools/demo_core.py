"""A short demo of the C core on synthetic logits: distribution -> lattice point -> Q-S samples -> uplink bits.

    python -m qsv_tools.demo_core [--vocab-size 50272] [--ell 240] [--temperature 0.4] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from qsv_wire import codec, core


def synthetic_logits(rng: np.random.Generator, vocab: int) -> np.ndarray:
    """LLM-like logits: a Gaussian bulk and a handful of strong candidates."""
    z = 2.5 * rng.normal(size=vocab)
    strong = rng.choice(vocab, 12, replace=False)
    z[strong] = z.max() + np.linspace(2.0, -1.0, 12)
    return z.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=50_272)
    parser.add_argument("--ell", type=int, default=240)
    parser.add_argument("--temperature", type=float, default=0.4)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    logits = synthetic_logits(rng, args.vocab_size)
    z = logits.astype(np.float64) / args.temperature
    q = np.exp(z - z.max())
    q /= q.sum()
    top = np.argsort(-q)[:6]
    print(f"SLM distribution q over V={args.vocab_size} (T={args.temperature}), top tokens:")
    print("  " + "  ".join(f"{int(t)}:{q[t]:.4f}" for t in top) + f"  (rest {1 - q[top].sum():.4f})")

    point = core.quantize_logits(logits, args.ell, temperature=args.temperature)
    print(f"lattice point q_hat = b/{args.ell}: {point.nnz} nonzero counts (sum {int(point.counts.sum())})")
    order = np.argsort(-point.counts)[:6]
    print("  " + "  ".join(f"{int(point.indices[j])}:{int(point.counts[j])}/{args.ell}" for j in order))
    tv = 0.5 * np.abs(point.probs() - q).sum()
    print(f"  total variation |q_hat - q| = {tv:.4f} (the tail below 1/(2 ell) is truncated)")

    us = rng.integers(0, args.ell, args.samples)
    tokens = [core.sample(point, int(u)) for u in us]
    draws = " ".join(f"u={int(u)}->{t}" for u, t in zip(us, tokens, strict=True))
    print(f"Q-S draws (u uniform in [0, {args.ell})): {draws}")

    fp16_bits = 16 * args.vocab_size
    bits = 8 * len(codec.encode(point, args.vocab_size, args.ell, mode="auto"))
    bound = codec.bound_bits(args.vocab_size, args.ell)
    print(f"uplink: {bits} bits encoded (auto) vs bound ceil(log2 C(ell+V-1, V-1)) = {bound} bits "
          f"vs fp16 vector {fp16_bits} bits")


if __name__ == "__main__":
    main()
