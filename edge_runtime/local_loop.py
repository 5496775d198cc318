"""Edge drafter and cloud verifier in one process: the end-to-end check of Q-S speculative decoding.

The drafter (ONNX or torch SLM + C core) drafts L tokens per round; :func:`cloud_verifier.verify_round` checks them
against a PyTorch target (:class:`cloud_verifier.target.TargetModel`); the drafter rolls back and continues. No
transport: this is the reference the networked runtime must reproduce.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cloud_verifier import SamplingParams, VerifyResult, target_probs, verify_round
from cloud_verifier.target import TargetModel
from edge_runtime.drafter import QS, SQ, DraftConfig, Drafter, DraftRound

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    prompt_ids: list[int]
    tokens: list[int]  # generated tokens (after the prompt)
    rounds: list[tuple[DraftRound, VerifyResult]] = field(default_factory=list)
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def drafted(self) -> int:
        return sum(r.length for r, _ in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(v.accepted for _, v in self.rounds)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts / drafted tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        return sum(v.emitted for _, v in self.rounds) / len(self.rounds) if self.rounds else 0.0


def run_local_loop(drafter: Drafter, target: TargetModel, prompt_ids: Sequence[int], max_new_tokens: int,
                   draft_length: int, generator: torch.Generator, target_params: SamplingParams | None = None,
                   eos_token_ids: Sequence[int] = ()) -> LoopResult:
    """Generate up to ``max_new_tokens`` after ``prompt_ids``; stops after an EOS token.

    ``target_params`` default to the drafter's temperature / top-k / top-p. Rounds never draft past the budget, so
    the output is a prefix-exact sample of the target's own generation of the same length.
    """
    if len(prompt_ids) < 1 or max_new_tokens < 1 or draft_length < 1:
        raise ValueError("need a non-empty prompt, max_new_tokens >= 1 and draft_length >= 1")
    config = drafter.config
    params = target_params or SamplingParams(config.temperature, config.top_k, config.top_p)
    eos = set(eos_token_ids) | set(drafter.slm.eos_token_ids)
    result = LoopResult(list(prompt_ids), [])
    drafter.start(prompt_ids)
    state = target.prefill(prompt_ids[:-1])
    pending = int(prompt_ids[-1])
    while len(result.tokens) < max_new_tokens:
        budget = max_new_tokens - len(result.tokens)
        t0 = time.perf_counter()
        draft = drafter.draft(min(draft_length, max(budget - 1, 1)))
        t1 = time.perf_counter()
        out = target.forward_round(state, [pending, *draft.tokens])
        p = target_probs(out.logits, params)
        verdict = verify_round(p, draft.tokens, draft.points, draft.ell, generator,
                               sampling_order=QS if draft.mode == QS else SQ)
        state = out.committed_state(1 + verdict.accepted)
        pending = verdict.next_token
        t2 = time.perf_counter()
        new_tokens = drafter.feedback(verdict.accepted, verdict.next_token)
        result.draft_seconds += (t1 - t0) + (time.perf_counter() - t2)
        result.verify_seconds += t2 - t1
        result.rounds.append((draft, verdict))
        for token in new_tokens[:budget]:
            result.tokens.append(token)
            if token in eos:
                return result
    return result


def target_greedy(target: TargetModel, prompt_ids: Sequence[int], max_new_tokens: int,
                  eos_token_ids: Sequence[int] = ()) -> list[int]:
    """The target's own greedy decoding (one token per forward), the reference for the temperature-0 check."""
    state = target.prefill(prompt_ids[:-1])
    pending = int(prompt_ids[-1])
    out: list[int] = []
    for _ in range(max_new_tokens):
        step = target.forward_round(state, [pending])
        pending = int(torch.argmax(step.logits[-1]))
        state = step.committed_state(1)
        out.append(pending)
        if pending in set(eos_token_ids):
            break
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsv-local", description=__doc__)
    parser.add_argument("--draft", default="qwen-draft", help="registry name, .gguf or HF folder of the SLM")
    parser.add_argument("--target", default="qwen-target", help="registry name, .gguf or HF folder of the LLM")
    parser.add_argument("--variant", choices=("fp32", "int8"), default="int8", help="ONNX variant of the SLM")
    parser.add_argument("--target-dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--prompts", type=int, default=1, help="number of BBC News prompts")
    parser.add_argument("--start", type=int, default=0, help="index of the first BBC article")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("-L", "--draft-length", type=int, default=4)
    parser.add_argument("--ell", type=int, default=240)
    parser.add_argument("--temperature", type=float, default=0.4)
    parser.add_argument("--mode", choices=(QS, SQ), default=QS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.export.onnx_export import export_model
    from edge_runtime.models.bbc import bbc_prompts
    from edge_runtime.models.hf import resolve_model
    from edge_runtime.models.vocab import TokenizerMismatchError, check_same_vocab
    from edge_runtime.slm import OnnxSLM, SessionConfig

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    export = export_model(args.draft, int8=args.variant == "int8")
    slm = OnnxSLM(export.directory, args.variant, SessionConfig(threads=args.threads))
    folder, gguf_file = resolve_model(args.target)
    target = TargetModel.load(Path(folder), device="cpu", dtype=args.target_dtype, gguf_file=gguf_file)
    from transformers import AutoTokenizer

    target_tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file) if gguf_file else \
        AutoTokenizer.from_pretrained(folder)
    try:
        check_same_vocab(slm.tokenizer, target_tok, args.draft, args.target)
    except TokenizerMismatchError as exc:
        print(f"qsv-local: {exc}", file=sys.stderr)
        return 1
    config = DraftConfig(ell=args.ell, temperature=args.temperature, mode=args.mode)
    total_drafted = total_accepted = 0
    for index, prompt in enumerate(bbc_prompts(args.prompts, start=args.start)):
        drafter = Drafter(slm, config, seed=args.seed + index)
        generator = torch.Generator().manual_seed(args.seed + index)
        result = run_local_loop(drafter, target, slm.encode(prompt), args.max_new_tokens, args.draft_length,
                                generator, eos_token_ids=slm.eos_token_ids)
        total_drafted += result.drafted
        total_accepted += result.accepted
        print(f"[{index}] acceptance {result.acceptance_rate:.3f}, {result.tokens_per_round:.2f} tokens/round, "
              f"draft {result.draft_seconds:.2f}s verify {result.verify_seconds:.2f}s: {slm.decode(result.tokens)!r}")
    print(f"overall acceptance {total_accepted / max(total_drafted, 1):.3f} ({total_accepted}/{total_drafted})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
