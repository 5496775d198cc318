"""The networked generation loop of a board: the real drafter (SLM + C core, Q-S) and the uplink codec on the edge,
the verifier group behind MQTT. Same round structure as ``edge_runtime.local_loop.run_local_loop`` (rounds never
draft past the budget; stop after EOS), with the verifier's answer coming over the wire."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_runtime import codec
from edge_runtime.drafter import QS, Drafter
from edge_runtime.protocol import Feedback, SamplingParams
from edge_runtime.transport.remote import RemoteVerifier

log = logging.getLogger(__name__)

CODEC_MODE_QSV1 = 0  # lattice points as edge_runtime.codec messages (self-describing enum/sparse), docs/CODEC.md


@dataclass
class BoardResult:
    tokens: list[int]
    feedback: list[Feedback] = field(default_factory=list)
    draft_seconds: float = 0.0
    encode_seconds: float = 0.0
    wait_seconds: float = 0.0  # publish → feedback, as the board sees it (network + verifier)
    uplink_bytes: int = 0

    @property
    def rounds(self) -> int:
        return len(self.feedback)

    @property
    def tokens_per_round(self) -> float:
        return sum(f.accepted + 1 for f in self.feedback) / self.rounds if self.rounds else 0.0


def run_remote_generation(drafter: Drafter, remote: RemoteVerifier, prompt_ids: Sequence[int], max_new_tokens: int,
                          draft_length: int, seed: int, vocab_hash: bytes,
                          eos_token_ids: Sequence[int] = ()) -> BoardResult:
    """Generate up to ``max_new_tokens`` after ``prompt_ids`` with the verifier group behind ``remote``."""
    if draft_length < 1 or max_new_tokens < 1 or not prompt_ids:
        raise ValueError("need a non-empty prompt, max_new_tokens >= 1 and draft_length >= 1")
    if drafter.config.mode != QS:
        raise ValueError("the networked runtime drafts with Q-S only (S-Q is biased)")
    cfg = drafter.config
    vocab = drafter.slm.vocab_size
    eos = set(eos_token_ids) | set(drafter.slm.eos_token_ids)
    drafter.start(prompt_ids)
    remote.open(prompt_ids, SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p, seed), vocab, vocab_hash)
    result = BoardResult([])
    while len(result.tokens) < max_new_tokens:
        budget = max_new_tokens - len(result.tokens)
        t0 = time.perf_counter()
        draft = drafter.draft(min(draft_length, max(budget - 1, 1)))
        t1 = time.perf_counter()
        blobs = [codec.encode(p, vocab, draft.ell) for p in draft.points]
        t2 = time.perf_counter()
        fb = remote.verify(draft.tokens, blobs, draft.ell, CODEC_MODE_QSV1)
        t3 = time.perf_counter()
        new_tokens = drafter.feedback(fb.accepted, fb.next_token)
        result.draft_seconds += (t1 - t0) + (time.perf_counter() - t3)
        result.encode_seconds += t2 - t1
        result.wait_seconds += t3 - t2
        result.uplink_bytes += sum(len(b) for b in blobs)
        result.feedback.append(fb)
        for token in new_tokens[:budget]:
            result.tokens.append(token)
            if token in eos:
                return result
    return result
