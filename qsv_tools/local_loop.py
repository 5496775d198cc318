"""Edge drafter and cloud verifier in one process: the end-to-end check of Q-S speculative decoding.

The drafter (ONNX or torch SLM + C core) drafts L tokens per round; :func:`cloud_verifier.verify_round` checks them
against a PyTorch target (:class:`cloud_verifier.target.TargetModel`); the drafter rolls back and continues. No
transport: this is the reference the networked runtime must reproduce.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.controller import StaticController
from edge_runtime.drafter import QS, SQ, DraftConfig, Drafter, DraftRound
from edge_runtime.engine import Generation, RoundEngine, Verdict, VerifierInfo
from qsv_models.registry import model_ref
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

if TYPE_CHECKING:  # torch and the target are imported only once ``qsv local``'s arguments are checked
    import torch

    from cloud_verifier.target import TargetModel
    from qsv_wire.protocol import SamplingParams

log = logging.getLogger(__name__)


class LocalLink:
    """The engine's verifier link to a target model in this process: ``verify_round`` over the target's rows.

    ``threaded``: the target runs on a worker thread, so the board's pre-drafting overlaps it (PyTorch and
    onnxruntime release the GIL); otherwise the verdict is computed inside ``submit``."""

    def __init__(self, target: TargetModel, generator: torch.Generator, params: SamplingParams | None = None,
                 threaded: bool = False) -> None:
        self.target = target
        self.generator = generator
        self.params = params
        self.threaded = threaded
        self.verify_seconds = 0.0
        self._state = None
        self._pending_token = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qsv-local-verifier") if threaded else None
        self._inflight: Future[Verdict] | None = None
        self._done: Verdict | None = None

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo:
        if self.params is None:
            self.params = sampling
        self._state = self.target.prefill(list(prompt[:-1]))
        self._pending_token = int(prompt[-1])
        return VerifierInfo()

    def _verify(self, draft: DraftRound) -> Verdict:
        import time

        from cloud_verifier import target_probs, verify_round

        t0 = time.perf_counter()
        out = self.target.forward_round(self._state, [self._pending_token, *draft.tokens])
        p = target_probs(out.logits, self.params)
        result = verify_round(p, draft.tokens, draft.points, draft.ell, self.generator,
                              sampling_order=QS if draft.mode == QS else SQ)
        self._state = out.committed_state(1 + result.accepted)
        self._pending_token = result.next_token
        seconds = time.perf_counter() - t0
        self.verify_seconds += seconds
        return Verdict(result.accepted, result.next_token, seconds, tuple(result.acceptance_probs))

    def submit(self, draft: DraftRound) -> None:
        if self._pool is not None:
            self._inflight = self._pool.submit(self._verify, draft)
        else:
            self._done = self._verify(draft)

    def poll(self) -> Verdict | None:
        if self._inflight is not None:
            return self.wait() if self._inflight.done() else None
        return self._done

    def wait(self) -> Verdict:
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            return future.result()
        if self._done is None:
            raise RuntimeError("no round in flight")
        verdict, self._done = self._done, None
        return verdict

    def channel_view(self) -> None:
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def run_local_loop(drafter: Drafter, target: TargetModel, prompt_ids: Sequence[int], max_new_tokens: int,
                   draft_length: int, generator: torch.Generator, target_params: SamplingParams | None = None,
                   pipeline: str = "off", threaded: bool = False) -> Generation:
    """Generate up to ``max_new_tokens`` after ``prompt_ids`` with a fixed draft length (the drafter's ℓ); stops
    after an EOS token. ``target_params`` default to the drafter's temperature / top-k / top-p. Rounds never draft
    past the budget, so the output is a prefix-exact sample of the target's own generation of the same length."""
    if len(prompt_ids) < 1 or max_new_tokens < 1 or draft_length < 1:
        raise ValueError("need a non-empty prompt, max_new_tokens >= 1 and draft_length >= 1")
    link = LocalLink(target, generator, target_params, threaded=threaded)
    try:
        engine = RoundEngine(drafter, link, StaticController(draft_length, drafter.config.ell), pipeline=pipeline)
        return engine.generate(prompt_ids, max_new_tokens)
    finally:
        link.close()


def target_greedy(target: TargetModel, prompt_ids: Sequence[int], max_new_tokens: int,
                  eos_token_ids: Sequence[int] = ()) -> list[int]:
    """The target's own greedy decoding (one token per forward), the reference for the temperature-0 check."""
    import torch

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
    parser = argparse.ArgumentParser(prog="qsv local", description=__doc__)
    parser.add_argument("--draft", default="qwen-draft", type=model_ref,
                        help="registry name, .gguf or HF folder of the SLM")
    parser.add_argument("--target", default="qwen-target", type=model_ref,
                        help="registry name, .gguf or HF folder of the LLM")
    parser.add_argument("--draft-variant", choices=("fp32", "int8"), default="int8", help="ONNX variant of the SLM")
    parser.add_argument("--target-dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--prompts", type=cliargs.positive_int, default=1, help="number of BBC News prompts")
    parser.add_argument("--start", type=cliargs.non_negative_int, default=0, help="index of the first BBC article")
    parser.add_argument("--max-new-tokens", type=cliargs.positive_int, default=32)
    parser.add_argument("-L", "--draft-len", type=cliargs.positive_int, default=4, help="draft tokens per round")
    parser.add_argument("--ell", type=cliargs.positive_int, default=240)
    parser.add_argument("--temperature", type=cliargs.non_negative_float, default=0.4)
    parser.add_argument("--mode", choices=(QS, SQ), default=QS)
    parser.add_argument("--threads", type=cliargs.positive_int, default=1)
    parser.add_argument("--seed", type=cliargs.seed, default=0)
    add_logging_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in (("prompts", args.prompts), ("max-new-tokens", args.max_new_tokens),
                        ("draft-len", args.draft_len), ("ell", args.ell), ("threads", args.threads)):
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    if args.temperature < 0:
        parser.error("--temperature must be >= 0")
    setup_logging(args)
    import torch

    from cloud_verifier.target import TargetModel
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from qsv_models.bbc import bbc_prompts
    from qsv_models.fetch import FetchError
    from qsv_models.hf import resolve_model
    from qsv_models.vocab import TokenizerMismatchError, check_same_vocab
    from qsv_tools.export.onnx_export import ExportError, export_model

    torch.set_num_threads(args.threads)
    try:
        export = export_model(args.draft, int8=args.draft_variant == "int8")
        slm = OnnxSLM(export.directory, args.draft_variant, SessionConfig(threads=args.threads))
        folder, gguf_file = resolve_model(args.target)
        target = TargetModel.load(Path(folder), device="cpu", dtype=args.target_dtype, gguf_file=gguf_file)
    except (ExportError, FetchError, OSError) as exc:  # a model that cannot be fetched / exported / read: exit 1
        print(f"qsv local: {exc}", file=sys.stderr)
        return 1
    from transformers import AutoTokenizer

    target_tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file) if gguf_file else \
        AutoTokenizer.from_pretrained(folder)
    try:
        check_same_vocab(slm.tokenizer, target_tok, args.draft, args.target)
    except TokenizerMismatchError as exc:
        print(f"qsv local: {exc}", file=sys.stderr)
        return 1
    config = DraftConfig(ell=args.ell, temperature=args.temperature, mode=args.mode)
    total_drafted = total_accepted = 0
    for index, prompt in enumerate(bbc_prompts(args.prompts, start=args.start)):
        drafter = Drafter(slm, config, seed=args.seed + index)
        generator = torch.Generator().manual_seed(args.seed + index)
        result = run_local_loop(drafter, target, slm.encode(prompt), args.max_new_tokens, args.draft_len,
                                generator)
        total_drafted += result.drafted
        total_accepted += result.accepted
        draft_s = sum(r.draft_s + r.feedback_s for r in result.rounds)
        verify_s = sum(r.verify_s for r in result.rounds)
        print(f"[{index}] acceptance {result.acceptance_rate:.3f}, {result.tokens_per_round:.2f} tokens/round, "
              f"draft {draft_s:.2f}s verify {verify_s:.2f}s: {slm.decode(result.tokens)!r}")
    print(f"overall acceptance {total_accepted / max(total_drafted, 1):.3f} ({total_accepted}/{total_drafted})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
