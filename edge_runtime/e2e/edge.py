"""The edge side of the demo: one generation over MQTT with a controller choosing (L, ℓ) per round.

Same round structure as ``edge_runtime.transport.board.run_remote_generation`` (rounds never draft past the budget;
stop after EOS), plus a controller and a per-round record that the demo streams as the rounds complete.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_runtime import codec
from edge_runtime.controller import Controller, RoundObservation
from edge_runtime.drafter import Drafter
from edge_runtime.protocol import SamplingParams
from edge_runtime.transport.board import CODEC_MODE_QSV1
from edge_runtime.transport.remote import RemoteVerifier


@dataclass(frozen=True)
class RoundStat:
    """One round as the board saw it."""

    index: int
    drafted: int  # L actually drafted (≤ the controller's max, ≤ budget − 1; fewer after a drafted EOS)
    ell: int
    accepted: int
    new_tokens: list[int]  # committed by this round (accepted drafts + correction/bonus), cut to the budget
    lattice_bytes: int  # encoded lattice points of the round (docs/CODEC.md)
    token_id_bits: int  # packed draft token ids: drafted · ⌈log2 V⌉
    bound_bits: int  # the paper's fixed-length size of the round: drafted · (16 + ⌈log2 C(ℓ+V−1, V−1)⌉)
    draft_s: float  # SLM + C core (quantize, sample) on the edge
    encode_s: float  # lattice point encoding
    wait_s: float  # publish → feedback on the edge: MQTT round trip + verifier queue + target forward
    verify_s: float  # the verifier's own compute time (from the feedback)
    feedback_s: float  # drafter rollback + forward of the correction/bonus token

    @property
    def uplink_bytes(self) -> float:
        return self.lattice_bytes + self.token_id_bits / 8

    @property
    def seconds(self) -> float:
        return self.draft_s + self.encode_s + self.wait_s + self.feedback_s


@dataclass
class EdgeRun:
    """One prompt's generation through the networked runtime."""

    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    rounds: list[RoundStat] = field(default_factory=list)
    prefill_s: float = 0.0  # drafter prefill + session open (target prefill in the worker)
    decode_s: float = 0.0  # wall clock of all rounds

    @property
    def drafted(self) -> int:
        return sum(r.drafted for r in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rounds)


def run_edge_generation(drafter: Drafter, remote: RemoteVerifier, controller: Controller, prompt_ids: Sequence[int],
                        max_new_tokens: int, seed: int, vocab_hash: bytes,
                        on_round: Callable[[EdgeRun, RoundStat], None] | None = None) -> EdgeRun:
    """Generate up to ``max_new_tokens`` after ``prompt_ids``; ``on_round`` is called after every round."""
    if max_new_tokens < 1 or not prompt_ids:
        raise ValueError("need a non-empty prompt and max_new_tokens >= 1")
    cfg = drafter.config
    vocab = drafter.slm.vocab_size
    id_bits = codec.token_bits(vocab)
    eos = set(drafter.slm.eos_token_ids)
    run = EdgeRun([int(t) for t in prompt_ids])
    controller.reset()
    t0 = time.perf_counter()
    drafter.start(run.prompt_ids)
    ack = remote.open(run.prompt_ids, SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p, seed), vocab, vocab_hash)
    if ack.pass_us:
        controller.set_verifier_costs([c / 1e6 for c in ack.pass_us], ack.precision)
    start = time.perf_counter()
    run.prefill_s = start - t0
    done = False
    while not done and len(run.tokens) < max_new_tokens:
        budget = max_new_tokens - len(run.tokens)
        decision = controller.choose()
        round_cfg = dataclasses.replace(cfg, ell=decision.ell) if decision.ell != cfg.ell else cfg
        t0 = time.perf_counter()
        draft = drafter.draft(min(decision.max_draft, max(budget - 1, 1)), round_cfg, controller.should_continue)
        t1 = time.perf_counter()
        blobs = [codec.encode(point, vocab, draft.ell) for point in draft.points]
        t2 = time.perf_counter()
        fb = remote.verify(draft.tokens, blobs, draft.ell, CODEC_MODE_QSV1)
        t3 = time.perf_counter()
        committed = drafter.feedback(fb.accepted, fb.next_token)
        t4 = time.perf_counter()
        new_tokens: list[int] = []
        for token in committed[:budget]:
            new_tokens.append(token)
            if token in eos:
                done = True
                break
        run.tokens.extend(new_tokens)
        lattice_bytes = sum(len(b) for b in blobs)
        stat = RoundStat(len(run.rounds), draft.length, draft.ell, fb.accepted, new_tokens,
                         lattice_bytes, draft.length * id_bits,
                         draft.length * (16 + codec.bound_bits(vocab, draft.ell)),
                         t1 - t0, t2 - t1, t3 - t2, fb.verify_us / 1e6, t4 - t3)
        run.rounds.append(stat)
        controller.observe(RoundObservation.from_draft_round(
            draft, fb.accepted, verify_s=fb.verify_us / 1e6, uplink_bits=8 * lattice_bytes + stat.token_id_bits,
            elapsed_s=t3 - t2, alphas=list(fb.accept_probs) or None))
        if on_round is not None:
            on_round(run, stat)
    run.decode_s = time.perf_counter() - start
    return run
