"""Per-round drafting on the edge: L tokens from the SLM with quantize-then-sample (Q-S), and pre-drafting.

For each draft position the SLM logits go to the C core in one call (``Quantizer.draft_token``): temperature /
top-k / top-p, the lattice quantizer at resolution ℓ (q → q̂ = b/ℓ), the draw of the token from q̂ with an integer
u ∈ [0, ℓ), and the encoding of the lattice point as the message the verifier decodes. The cloud verifies against
exactly the distribution the token came from. S-Q mode (sample from q itself, still send q̂) exists for
comparisons only: its output law is biased.

Randomness is keyed, not streamed: the u of draft i in round r comes from a generator seeded with (seed, r, i). A
round's draws therefore do not depend on what was drafted and thrown away before it, which is what lets the drafter
pre-draft during the verifier's wait and keep or discard that work without changing a single output token.

Cache protocol: the SLM cache always holds the committed sequence plus the drafts fed so far (drafts 1..L-1 of the
pending round; the last draft is fed only when pre-drafting). After the verifier answers (n accepted, next token
y), :meth:`Drafter.feedback` rolls the cache back to committed + n and feeds what is missing of (x_{n+1..}, y).

Pre-drafting (:meth:`Drafter.speculate`, one SLM forward per call, while round r is being verified): feed x_L, guess
the verifier's bonus token as the drafter's most likely next token g, feed g, then draft round r+1 from
committed + x_1..x_L + g with round r+1's keys. When the verdict is "all L accepted, next token g", the cache is
already where the serial drafter would be after the feedback, and the pre-drafted tokens are exactly the tokens the
serial drafter would draw for round r+1 (same prefix, same logits, same keys): :meth:`draft` replays them, asking
the controller's early-stop rule again for each, and continues from there. Any other verdict rolls the cache back
to the accepted prefix and discards the pre-draft; nothing of it reaches the verifier or the controller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.slm import DraftModel
from qsv_wire import codec, core, reference
from qsv_wire.lattice import MAX_ELL, LatticePoint

log = logging.getLogger(__name__)

QS = "qs"  # quantize, then sample (exact)
SQ = "sq"  # sample from q, then quantize (biased; for comparisons)


class DrafterError(RuntimeError):
    """Bad feedback or use of the drafter out of order."""


@dataclass(frozen=True)
class DraftConfig:
    ell: int = 240
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    mode: str = QS
    stop_at_eos: bool = True
    record_stats: bool = True  # entropy of q and q(x) per token (one extra softmax over V per token)

    def __post_init__(self) -> None:
        if self.mode not in (QS, SQ):
            raise ValueError(f"mode must be {QS!r} or {SQ!r}, got {self.mode!r}")
        if not 1 <= self.ell <= MAX_ELL:
            raise ValueError(f"ell must be in 1..{MAX_ELL}, got {self.ell}")
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_k must be >= 0 and top_p in (0, 1]")


@dataclass
class DraftRound:
    """One round of drafts and what the board measured while producing them."""

    tokens: list[int]
    points: list[LatticePoint]
    ell: int
    mode: str
    messages: list[bytes] = field(default_factory=list)  # each point encoded (qsv_wire.codec, "auto" mode)
    entropies: list[float] = field(default_factory=list)  # H(q) in bits at each draft position
    confidences: list[float] = field(default_factory=list)  # q(x_i), the SLM probability of the drafted token
    index: int = 0  # round number since start() (keys the draws)
    slm_seconds: float = 0.0  # SLM forwards inside the round (drafts 1..L-1), pre-drafted ones included
    core_seconds: float = 0.0  # quantize + sample + encode in the C core
    stats_seconds: float = 0.0  # entropy / confidence bookkeeping
    reused: int = 0  # leading tokens taken from the pre-draft made during the previous round's wait
    reused_seconds: float = 0.0  # compute spent on those tokens during that wait (off the critical path)
    hit_eos: bool = False
    stopped_early: bool = False  # should_continue ended the round before the requested length

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def compute_seconds(self) -> float:
        return self.slm_seconds + self.core_seconds + self.stats_seconds

    def confidence(self, i: int) -> float:
        """q(x_i) when stats were recorded, else q̂(x_i) = b_x / ℓ (what the controller's early stop and
        observations use)."""
        if self.confidences:
            return self.confidences[i]
        return self.points[i].count_of(self.tokens[i]) / self.ell


@dataclass
class _PreDraft:
    """Work done during the wait for the pending round's verdict (see the module docstring)."""

    config: DraftConfig
    last_fed: bool = False  # x_L is in the cache
    guess: int | None = None  # the bonus token assumed (fed when ``first_logits`` is set)
    first_logits: np.ndarray | None = None  # logits after the guess: where round r+1 starts
    round: DraftRound | None = None  # round r+1's drafts so far
    done: bool = False
    seconds: float = 0.0


@dataclass
class SpeculationStats:
    """Pre-drafting since the drafter was created."""

    rounds: int = 0  # verdicts that found a pre-draft under way
    hits: int = 0  # ... whose prefix was the one assumed
    forwards: int = 0
    reused_tokens: int = 0
    discarded_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.rounds if self.rounds else 0.0


def q_distribution(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """q over the vocabulary (float64) after temperature, top-k and top-p: the C core's rules, in their one Python
    definition (``qsv_wire.reference.scaled_logits``; top-k keeps exactly k, ties to the lower id; temperature 0
    is a one-hot on the first argmax)."""
    return reference.scaled_logits(logits, 1, temperature, top_k, top_p)


def entropy_bits(probs: np.ndarray) -> float:
    nz = probs[probs > 0]
    return float(-(nz * np.log2(nz)).sum())


def _same_sampling(a: DraftConfig, b: DraftConfig) -> bool:
    return (a.ell, a.temperature, a.top_k, a.top_p, a.mode, a.record_stats, a.stop_at_eos) == \
        (b.ell, b.temperature, b.top_k, b.top_p, b.mode, b.record_stats, b.stop_at_eos)


class Drafter:
    """Drafts rounds from a :class:`~edge_runtime.slm.DraftModel` and follows verifier feedback."""

    def __init__(self, slm: DraftModel, config: DraftConfig, seed: int = 0) -> None:
        self.slm = slm
        self.config = config
        self.seed = int(seed)
        self.committed: list[int] = []
        self.speculation = SpeculationStats()
        self.forward_seconds = 0.0  # EWMA of one single-token SLM forward (pre-drafting budgets with it)
        self._logits: np.ndarray | None = None  # next-token logits after the committed sequence (own copy)
        self._pending: DraftRound | None = None
        self._pre: _PreDraft | None = None  # pre-draft for the round after the pending one
        self._carry: _PreDraft | None = None  # a pre-draft that hit, waiting for draft() to use it
        self._rounds = 0
        self._quantizer = core.Quantizer(slm.vocab_size)  # preallocated workspace and output buffers
        self._eos = frozenset(int(t) for t in slm.eos_token_ids)

    # ------------------------------------------------------------------------------------------------ helpers
    def _rng(self, round_index: int, position: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, round_index, position])

    def _forward(self, token_ids: Sequence[int]) -> np.ndarray:
        t0 = time.perf_counter()
        logits = self.slm.forward(token_ids)[-1]
        dt = time.perf_counter() - t0
        if len(token_ids) == 1:
            self.forward_seconds = dt if self.forward_seconds == 0 else 0.8 * self.forward_seconds + 0.2 * dt
        return logits

    def _draw(self, record: DraftRound, logits: np.ndarray, config: DraftConfig) -> int:
        """Draft position ``record.length`` of round ``record.index`` from ``logits``; appends to ``record``."""
        rng = self._rng(record.index, record.length)
        t0 = time.perf_counter()
        quantizer = self._quantizer
        q = None  # q over the vocabulary, when this draw computes it anyway (S-Q)
        if config.mode == QS:
            token, message = quantizer.draft_token(logits, config.ell, int(rng.integers(0, config.ell)),
                                                   config.temperature, config.top_k, config.top_p)
            token = int(token)
            point = quantizer.point()
        else:
            quantizer.quantize_logits_into(logits, config.ell, config.temperature, config.top_k, config.top_p)
            point = quantizer.point()
            message = codec.encode(point, self.slm.vocab_size, config.ell)
            q = q_distribution(logits, config.temperature, config.top_k, config.top_p)
            cdf = np.cumsum(q)
            token = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), cdf.size - 1)
        t1 = time.perf_counter()
        record.core_seconds += t1 - t0
        record.tokens.append(token)
        record.points.append(point)
        record.messages.append(message)
        if config.record_stats:
            if q is None:
                q = q_distribution(logits, config.temperature, config.top_k, config.top_p)
            record.entropies.append(entropy_bits(q))
            record.confidences.append(float(q[token]))
            record.stats_seconds += time.perf_counter() - t1
        return token

    # ------------------------------------------------------------------------------------------------ rounds
    def start(self, prompt_ids: Sequence[int]) -> None:
        """Prefill the prompt; the first round drafts its continuation."""
        if len(prompt_ids) == 0:
            raise DrafterError("empty prompt")
        self.slm.reset()
        self.committed = [int(t) for t in prompt_ids]
        self._logits = np.array(self.slm.forward(self.committed)[-1], dtype=np.float32)
        self._pending = self._pre = self._carry = None
        self._rounds = 0

    def draft(self, length: int, config: DraftConfig | None = None,
              should_continue: Callable[[float, int], bool] | None = None) -> DraftRound:
        """Draft up to ``length`` tokens (fewer if EOS is drafted and ``stop_at_eos``, or when ``should_continue``
        returns False). ``should_continue(confidence, position)`` is asked after each drafted token but the last
        (position = tokens drafted so far; confidence = q(x) of that token, or q̂(x) = b_x / ℓ when stats are off):
        the controller's per-token early stop, decided before the SLM computes the next token."""
        if self._logits is None and self._carry is None:
            raise DrafterError("call start() first")
        if self._pending is not None:
            raise DrafterError("the previous round has no feedback yet")
        if length < 1:
            raise DrafterError(f"draft length must be >= 1, got {length}")
        config = config or self.config
        record = DraftRound([], [], config.ell, config.mode, index=self._rounds)
        self._rounds += 1
        logits = self._take_carry(record, length, config, should_continue)  # None: the round is complete
        while logits is not None:
            token = self._draw(record, logits, config)
            if self._round_ends(record, token, length, config, should_continue) or record.length >= length:
                break  # the last draft is not fed: feedback() or speculate() does that
            t0 = time.perf_counter()
            logits = self._forward([token])
            record.slm_seconds += time.perf_counter() - t0
        self._pending = record
        return record

    def _round_ends(self, record: DraftRound, token: int, length: int, config: DraftConfig,
                    should_continue: Callable[[float, int], bool] | None) -> bool:
        if config.stop_at_eos and token in self._eos:
            record.hit_eos = True
            return True
        if should_continue is not None and record.length < length:
            if not should_continue(record.confidence(-1), record.length):
                record.stopped_early = True
                return True
        return False

    def _take_carry(self, record: DraftRound, length: int, config: DraftConfig,
                    should_continue: Callable[[float, int], bool] | None) -> np.ndarray | None:
        """Replay a pre-draft that hit into ``record``; returns the logits to go on from, or None when the round
        is already complete. Without a carry: the committed sequence's logits."""
        carry, self._carry = self._carry, None
        if carry is None:
            return self._logits
        base = len(self.committed)
        pre = carry.round
        if not _same_sampling(carry.config, config) or pre is None or pre.length == 0:
            # Drafted under other settings (the controller changed ℓ): only the cache up to the guess is kept.
            self.speculation.discarded_tokens += pre.length if pre is not None else 0
            self.slm.rollback(base)
            return carry.first_logits
        used = 0
        for i, token in enumerate(pre.tokens):
            record.tokens.append(token)
            record.points.append(pre.points[i])
            record.messages.append(pre.messages[i])
            if config.record_stats:
                record.entropies.append(pre.entropies[i])
                record.confidences.append(pre.confidences[i])
            used += 1
            if self._round_ends(record, token, length, config, should_continue) or record.length >= length:
                break
        share = used / pre.length
        record.reused = used
        record.reused_seconds = carry.seconds * share
        record.slm_seconds += pre.slm_seconds * share
        record.core_seconds += pre.core_seconds * share
        record.stats_seconds += pre.stats_seconds * share
        self.speculation.reused_tokens += used
        self.speculation.discarded_tokens += pre.length - used
        # The cache holds committed + pre[:k-1]; the round keeps committed + record[:used-1] fed.
        if used < pre.length:
            self.slm.rollback(base + used - 1)
            return None
        if record.hit_eos or record.stopped_early or record.length >= length:
            return None
        t0 = time.perf_counter()
        logits = self._forward([record.tokens[-1]])
        record.slm_seconds += time.perf_counter() - t0
        return logits

    # ------------------------------------------------------------------------------------------------ pre-drafting
    def speculate(self, max_tokens: int, config: DraftConfig | None = None) -> bool:
        """One step of pre-drafting for the round after the pending one (at most one SLM forward), assuming the
        verifier accepts all of it and answers with the drafter's most likely next token; round r+1 drafts at most
        ``max_tokens``. Returns False when there is nothing more to do."""
        record = self._pending
        if record is None:
            raise DrafterError("no round is waiting for feedback")
        if self._pre is None:
            if record.hit_eos or max_tokens < 1:
                return False
            self._pre = _PreDraft(config or self.config)
        pre = self._pre
        if pre.done:
            return False
        t0 = time.perf_counter()
        if not pre.last_fed:
            logits = self._forward([record.tokens[-1]])
            pre.last_fed = True
            pre.guess = int(np.argmax(logits))
            pre.done = pre.guess in self._eos  # the generation would end there
        elif pre.first_logits is None:
            assert pre.guess is not None
            pre.first_logits = np.array(self._forward([pre.guess]), dtype=np.float32)
            pre.round = DraftRound([], [], pre.config.ell, pre.config.mode, index=record.index + 1)
            self._draw(pre.round, pre.first_logits, pre.config)
        else:
            assert pre.round is not None
            t1 = time.perf_counter()
            logits = self._forward([pre.round.tokens[-1]])
            pre.round.slm_seconds += time.perf_counter() - t1
            self._draw(pre.round, logits, pre.config)
        if pre.round is not None:
            last = pre.round.tokens[-1]
            pre.done = pre.round.length >= max_tokens or (pre.config.stop_at_eos and last in self._eos)
        self.speculation.forwards += 1
        pre.seconds += time.perf_counter() - t0
        return not pre.done

    # ------------------------------------------------------------------------------------------------ feedback
    def feedback(self, accepted: int, next_token: int) -> list[int]:
        """Apply the verifier's answer for the pending round; returns the tokens committed by it."""
        record = self._pending
        if record is None:
            raise DrafterError("no round is waiting for feedback")
        if not 0 <= accepted <= record.length:
            raise DrafterError(f"accepted={accepted} outside 0..{record.length}")
        next_token = int(next_token)
        base = len(self.committed)
        new_tokens = list(record.tokens[:accepted]) + [next_token]
        pre, self._pre = self._pre, None
        if pre is not None:
            self.speculation.rounds += 1
        if pre is not None and pre.first_logits is not None and accepted == record.length \
                and next_token == pre.guess:
            self.speculation.hits += 1
            self.committed.extend(new_tokens)
            self._pending = None
            self._carry = pre
            self._logits = None
            return new_tokens
        if pre is not None and pre.round is not None:
            self.speculation.discarded_tokens += pre.round.length
        # The cache holds committed + drafts[:L-1], or all L drafts (+ pre-draft) once pre-drafting fed x_L.
        fed = record.length if pre is not None and pre.last_fed else record.length - 1
        keep = base + min(accepted, fed)
        self.slm.rollback(keep)
        feed = list(record.tokens[keep - base:accepted]) + [next_token]
        self._logits = np.array(self._forward(feed), dtype=np.float32)
        self.committed.extend(new_tokens)
        self._pending = None
        if self.slm.length != len(self.committed):
            raise DrafterError(f"cache length {self.slm.length} != committed {len(self.committed)} (internal error)")
        return new_tokens
