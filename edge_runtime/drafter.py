"""Per-round drafting on the edge: L tokens from the SLM with quantize-then-sample (Q-S).

For each draft position the SLM logits go to the C core, which applies temperature / top-k / top-p and the lattice
quantizer at resolution ℓ (q → q̂ = b/ℓ); the token is then drawn from q̂ with an integer u ∈ [0, ℓ) from a seeded
numpy Generator, so the cloud can verify against exactly the distribution the token came from. S-Q mode (sample from
q itself, still send q̂) exists for comparisons only: its output law is biased.

Cache protocol: the SLM cache always holds the committed sequence plus the drafts fed so far. After the verifier
answers (n accepted, next token y), :meth:`Drafter.feedback` rolls the cache back to committed + n and feeds y (and
x_L first when all L were accepted), which gives the logits the next round starts from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_runtime import core
from edge_runtime.lattice import LatticePoint
from edge_runtime.slm import DraftModel

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
        if not 1 <= self.ell <= 65535:
            raise ValueError(f"ell must be in 1..65535, got {self.ell}")
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
    entropies: list[float] = field(default_factory=list)  # H(q) in bits at each draft position
    confidences: list[float] = field(default_factory=list)  # q(x_i), the SLM probability of the drafted token
    slm_seconds: float = 0.0  # SLM forwards inside the round (drafts 1..L-1)
    core_seconds: float = 0.0  # quantize + sample in the C core
    stats_seconds: float = 0.0  # entropy / confidence bookkeeping
    hit_eos: bool = False
    stopped_early: bool = False  # should_continue ended the round before the requested length

    @property
    def length(self) -> int:
        return len(self.tokens)


def q_distribution(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """q over the vocabulary (float64) after temperature, top-k and top-p, the same order as the C core.

    temperature 0 is greedy: a one-hot on the argmax (lowest id on ties).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0.0:
        out = np.zeros_like(logits)
        out[int(np.argmax(logits))] = 1.0
        return out
    scaled = logits / temperature
    if 0 < top_k < scaled.size:
        kth = np.partition(scaled, scaled.size - top_k)[scaled.size - top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        mass_before = np.cumsum(probs[order]) - probs[order]
        probs[order[mass_before >= top_p]] = 0.0
        probs /= probs.sum()
    return probs


def entropy_bits(probs: np.ndarray) -> float:
    nz = probs[probs > 0]
    return float(-(nz * np.log2(nz)).sum())


class Drafter:
    """Drafts rounds from a :class:`~edge_runtime.slm.DraftModel` (ONNX or torch) and follows verifier feedback."""

    def __init__(self, slm: DraftModel, config: DraftConfig, seed: int = 0) -> None:
        self.slm = slm
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.committed: list[int] = []
        self._logits: np.ndarray | None = None  # next-token logits after the committed sequence (own copy)
        self._pending: DraftRound | None = None
        self._quantizer = core.Quantizer(slm.vocab_size)  # preallocated workspace and output buffers

    def start(self, prompt_ids: Sequence[int]) -> None:
        """Prefill the prompt; the first round drafts its continuation."""
        if len(prompt_ids) == 0:
            raise DrafterError("empty prompt")
        self.slm.reset()
        self.committed = [int(t) for t in prompt_ids]
        self._logits = np.array(self.slm.forward(self.committed)[-1], dtype=np.float32)
        self._pending = None

    def _draw(self, logits: np.ndarray, config: DraftConfig) -> tuple[int, LatticePoint]:
        quantizer = self._quantizer
        quantizer.quantize_logits_into(logits, config.ell, config.temperature, config.top_k, config.top_p)
        point = quantizer.point()
        if config.mode == QS:
            return quantizer.sample_last(int(self.rng.integers(0, config.ell))), point
        q = q_distribution(logits, config.temperature, config.top_k, config.top_p)
        cdf = np.cumsum(q)
        token = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return min(token, q.size - 1), point

    def draft(self, length: int, config: DraftConfig | None = None,
              should_continue: Callable[[float, int], bool] | None = None) -> DraftRound:
        """Draft up to ``length`` tokens (fewer if EOS is drafted and ``stop_at_eos``, or when ``should_continue``
        returns False). ``should_continue(confidence, position)`` is asked after each drafted token but the last
        (position = tokens drafted so far; confidence = q(x) of that token, or q̂(x) = b_x / ℓ when stats are off):
        the controller's per-token early stop, decided before the SLM computes the next token."""
        if self._logits is None:
            raise DrafterError("call start() first")
        if self._pending is not None:
            raise DrafterError("the previous round has no feedback yet")
        if length < 1:
            raise DrafterError(f"draft length must be >= 1, got {length}")
        config = config or self.config
        record = DraftRound([], [], config.ell, config.mode)
        logits = self._logits
        eos = set(self.slm.eos_token_ids)
        for position in range(length):
            if position > 0:
                t0 = time.perf_counter()
                logits = self.slm.forward([record.tokens[-1]])[-1]
                record.slm_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            token, point = self._draw(logits, config)
            record.core_seconds += time.perf_counter() - t0
            record.tokens.append(token)
            record.points.append(point)
            if config.record_stats:
                t0 = time.perf_counter()
                q = q_distribution(logits, config.temperature, config.top_k, config.top_p)
                record.entropies.append(entropy_bits(q))
                record.confidences.append(float(q[token]))
                record.stats_seconds += time.perf_counter() - t0
            if config.stop_at_eos and token in eos:
                record.hit_eos = True
                break
            if should_continue is not None and position + 1 < length:
                confidence = record.confidences[-1] if config.record_stats else point.count_of(token) / point.ell
                if not should_continue(confidence, position + 1):
                    record.stopped_early = True
                    break
        self._pending = record
        return record

    def feedback(self, accepted: int, next_token: int) -> list[int]:
        """Apply the verifier's answer for the pending round; returns the tokens committed by it."""
        record = self._pending
        if record is None:
            raise DrafterError("no round is waiting for feedback")
        if not 0 <= accepted <= record.length:
            raise DrafterError(f"accepted={accepted} outside 0..{record.length}")
        base = len(self.committed)
        # The cache holds committed + drafts[:L-1] (the last draft was never fed).
        keep = base + min(accepted, record.length - 1)
        self.slm.rollback(keep)
        feed = list(record.tokens[keep - base:accepted]) + [int(next_token)]
        self._logits = np.array(self.slm.forward(feed)[-1], dtype=np.float32)
        new_tokens = list(record.tokens[:accepted]) + [int(next_token)]
        self.committed.extend(new_tokens)
        self._pending = None
        if self.slm.length != len(self.committed):
            raise DrafterError(f"cache length {self.slm.length} != committed {len(self.committed)} (internal error)")
        return new_tokens
