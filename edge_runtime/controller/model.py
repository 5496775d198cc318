"""Throughput model of one speculative round, with every parameter estimated online.

E[N] (tokens per round: accepted drafts + the corrected or bonus token) from per-position acceptance probabilities:

    E[N] = Σ_{k=1..L} k·(Π_{j<k} α_j)(1 − α_k) + (L+1)·Π_{j≤L} α_j  =  Σ_{k=0..L} Π_{j≤k} α_j

(the second form: N ≥ k+1 exactly when the first k drafts are accepted). Round time:

    T(L, ℓ) = L·t_draft + bits(L, ℓ)·s_up + RTT + t_verify(L) + bits_down·s_down

with s = seconds per bit from the channel estimator. Throughput = E[N] / T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from qsv_wire.throughput import expected_tokens_iid

from .bits import uplink_bits_per_token
from .estimators import AffineFit, CurveFit, Ewma
from .types import ChannelView, ControllerError, RoundObservation

DEFAULT_CONF_EDGES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def expected_tokens(alphas: Sequence[float] | np.ndarray) -> float:
    """E[N] for per-position acceptance probabilities α_1..α_L (L may be 0: one target token per round)."""
    a = np.asarray(alphas, dtype=np.float64)
    if a.size and (np.any(a < 0) or np.any(a > 1) or not np.all(np.isfinite(a))):
        raise ControllerError("acceptance probabilities must lie in [0, 1]")
    return float(1.0 + np.cumprod(a).sum()) if a.size else 1.0


class AcceptanceModel:
    """α as a function of the draft token's confidence q(x), per quantizer resolution ℓ.

    Two binned tables per ℓ (EWMA per bin):
    ``own``: α_i given the drafted token's own confidence c_i (used once a token is drafted);
    ``next``: α_{i+1} given the previous token's confidence c_i (used to predict a token not drafted yet).
    Updates use the verifier's α_i when reported, otherwise the accept/reject outcomes up to the first rejection
    (unbiased: whether position i is verified depends only on earlier positions).

    Resolutions share strength: every observation also updates a pooled table (all ℓ; prior α = confidence with
    ``prior_weight`` pseudo-samples), and a per-ℓ bin with n samples predicts (n·own + ``pool_weight``·pooled) /
    (n + ``pool_weight``), n capped at the EWMA's memory 1/``alpha``. Quantization changes α only by up to the total
    variation TV(q, q̂), so an ℓ tried in a few unlucky rounds is not judged on those rounds alone.
    """

    def __init__(
        self,
        edges: Sequence[float] = DEFAULT_CONF_EDGES,
        alpha: float = 0.02,
        prior: Callable[[float], float] | None = None,
        prior_weight: float = 2.0,
        pool_weight: float = 8.0,
    ) -> None:
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or e[0] != 0.0 or e[-1] != 1.0 or np.any(np.diff(e) <= 0):
            raise ControllerError("confidence bin edges must increase from 0.0 to 1.0")
        if pool_weight < 0:
            raise ControllerError(f"pool_weight must be >= 0, got {pool_weight}")
        self.edges = e
        self.centers = 0.5 * (e[:-1] + e[1:])
        self.alpha = alpha
        self.prior = prior or (lambda c: c)
        self.prior_weight = prior_weight
        self.pool_weight = pool_weight
        self._own: dict[int, list[Ewma]] = {}
        self._next: dict[int, list[Ewma]] = {}
        self.samples: dict[int, int] = {}

    def _table(self, store: dict[int, list[Ewma]], ell: int) -> list[Ewma]:
        tab = store.get(ell)
        if tab is None:
            if ell == _POOLED:
                tab = [Ewma(self.alpha, prior=self.prior(float(c)), prior_weight=self.prior_weight)
                       for c in self.centers]
            else:
                tab = [Ewma(self.alpha) for _ in self.centers]
            store[ell] = tab
        return tab

    def bin_of(self, conf: float) -> int:
        if not 0.0 <= conf <= 1.0 + 1e-9:
            raise ControllerError(f"confidence must lie in [0, 1], got {conf}")
        return int(min(np.searchsorted(self.edges, conf, side="right") - 1, self.centers.size - 1))

    def _predict(self, store: dict[int, list[Ewma]], ell: int, conf: float) -> float:
        b = self.bin_of(conf)
        pooled = self._table(store, _POOLED)[b].value
        own = self._table(store, ell)[b]
        return float(np.clip(_shrink(own, pooled, self.pool_weight), 0.0, 1.0))

    def predict(self, ell: int, conf: float) -> float:
        return self._predict(self._own, ell, conf)

    def predict_next(self, ell: int, prev_conf: float) -> float:
        return self._predict(self._next, ell, prev_conf)

    def predict_many(self, ell: int, confs: Iterable[float]) -> np.ndarray:
        return np.array([self.predict(ell, c) for c in confs], dtype=np.float64)

    def update(
        self, ell: int, confidences: Sequence[float], accepted: int, alphas: Sequence[float] | None = None
    ) -> None:
        if ell == _POOLED:
            raise ControllerError(f"ell must be >= 1, got {ell}")
        n = len(confidences)
        if alphas is not None:
            targets = [float(a) for a in alphas[:n]]
        else:
            targets = [1.0] * accepted + ([0.0] if accepted < n else [])
        for key in (ell, _POOLED):
            own = self._table(self._own, key)
            nxt = self._table(self._next, key)
            for i, t in enumerate(targets):
                own[self.bin_of(confidences[i])].update(t)
                if i > 0:
                    nxt[self.bin_of(confidences[i - 1])].update(t)
        self.samples[ell] = self.samples.get(ell, 0) + len(targets)

    def table(self, ell: int) -> list[tuple[float, float, float]]:
        """(bin center, α estimate, own sample count) for reporting."""
        return [(float(c), self.predict(ell, float(c)), e.count)
                for c, e in zip(self.centers, self._table(self._own, ell), strict=True)]


_POOLED = 0  # table key of the estimates pooled over all resolutions (ℓ >= 1 for real ones)


def _shrink(own: Ewma, pooled: float, pool_weight: float) -> float:
    """Per-ℓ EWMA shrunk toward the pooled value; the EWMA counts as at most 1/alpha samples (its memory)."""
    if not own.ready:
        return pooled
    n = min(own.count, 1.0 / own.alpha)
    return (n * own.value + pool_weight * pooled) / (n + pool_weight)


class SurvivalModel:
    """S_k = E[Π_{j≤k} α_j], the probability that the first k drafts of a round are accepted, per ℓ and per context
    (the confidence bin of the last accepted token before the round), k = 1..max_len.

    Predicts E[N](L) = 1 + Σ_{k≤L} S_k for a round *before* any of its tokens is drafted. Estimating the products
    directly (EWMA of the reported Π α_j, or of 1[accepted ≥ k]) keeps the within-round correlation of α's (easy
    and hard stretches) that a product of per-position means would lose. As in ``AcceptanceModel``, a pooled table
    over all ℓ (per context) is updated too, and the per-ℓ value is shrunk toward it with ``pool_weight``
    pseudo-samples. Positions with fewer than ``min_count`` pooled samples are extrapolated with the last ratio
    S_k / S_{k-1} (prior ``prior_alpha``).
    """

    CONTEXT_EDGES = (0.5, 0.9)

    def __init__(self, max_len: int = 16, alpha: float = 0.02, prior_alpha: float = 0.7, min_count: int = 8,
                 pool_weight: float = 8.0) -> None:
        self.max_len = max_len
        self.alpha = alpha
        self.prior_alpha = prior_alpha
        self.min_count = min_count
        self.pool_weight = pool_weight
        self._tables: dict[tuple[int, int], list[Ewma]] = {}

    def context(self, last_conf: float | None) -> int:
        if last_conf is None:
            return 0
        return 1 + int(np.searchsorted(self.CONTEXT_EDGES, last_conf, side="right"))

    def _table(self, ell: int, ctx: int) -> list[Ewma]:
        key = (ell, ctx)
        tab = self._tables.get(key)
        if tab is None:
            tab = [Ewma(self.alpha) for _ in range(self.max_len)]
            self._tables[key] = tab
        return tab

    def update(self, ell: int, last_conf: float | None, drafted: int, accepted: int,
               alphas: Sequence[float] | None) -> None:
        if ell == _POOLED:
            raise ControllerError(f"ell must be >= 1, got {ell}")
        n = min(drafted, self.max_len)
        if alphas is not None and len(alphas) >= n:
            prods = np.cumprod(np.asarray(alphas[:n], dtype=np.float64))
        else:
            prods = (np.arange(1, n + 1) <= accepted).astype(np.float64)
        ctx = self.context(last_conf)
        for key in (ell, _POOLED):
            tab = self._table(key, ctx)
            for k in range(n):
                tab[k].update(float(prods[k]))

    def survival(self, ell: int, last_conf: float | None, length: int) -> np.ndarray:
        """S_1..S_length."""
        ctx = self.context(last_conf)
        tab = self._table(ell, ctx)
        pooled = self._table(_POOLED, ctx)
        out = np.empty(length, dtype=np.float64)
        prev, ratio = 1.0, self.prior_alpha
        for k in range(length):
            if k < self.max_len and pooled[k].count >= self.min_count:
                cur = float(np.clip(_shrink(tab[k], pooled[k].value, self.pool_weight), 0.0, prev))
                ratio = cur / prev if prev > 0 else 0.0
            else:
                cur = prev * ratio
            out[k] = cur
            prev = cur
        return out

    def expected_tokens(self, ell: int, last_conf: float | None, length: int) -> float:
        return 1.0 + float(self.survival(ell, last_conf, length).sum())


@dataclass
class TimingPriors:
    """Starting values before measurements arrive (seconds)."""

    draft_per_token_s: float = 0.005
    verify_intercept_s: float = 0.030
    verify_per_token_s: float = 0.001
    downlink_bits: float = 256.0


class TimingModel:
    """Per-device compute and message-size estimates from measured rounds."""

    def __init__(self, vocab_size: int, priors: TimingPriors | None = None, alpha: float = 0.05) -> None:
        if vocab_size < 2:
            raise ControllerError("vocab_size must be >= 2")
        self.vocab_size = vocab_size
        p = priors or TimingPriors()
        self.draft_per_token = Ewma(alpha, prior=p.draft_per_token_s, prior_weight=1.0)
        self.verify = AffineFit(p.verify_intercept_s, p.verify_per_token_s)
        self.downlink_bits = Ewma(alpha, prior=p.downlink_bits, prior_weight=1.0)
        self._uplink: dict[int, AffineFit] = {}

    def _uplink_fit(self, ell: int) -> AffineFit:
        fit = self._uplink.get(ell)
        if fit is None:
            fit = AffineFit(0.0, float(uplink_bits_per_token(self.vocab_size, ell)))
            self._uplink[ell] = fit
        return fit

    def uplink_bits(self, length: int, ell: int) -> float:
        return max(0.0, self._uplink_fit(ell).predict(length))

    def bits_per_token(self, ell: int) -> float:
        return self._uplink_fit(ell).coefficients()[1]

    def update(self, obs: RoundObservation) -> None:
        self.draft_per_token.update(obs.draft_s / obs.drafted)
        self.verify.update(obs.drafted, obs.verify_s)
        self._uplink_fit(obs.ell).update(obs.drafted, obs.uplink_bits)
        if obs.downlink_bits:
            self.downlink_bits.update(obs.downlink_bits)

    def set_verify_curve(self, pass_s: Sequence[float]) -> None:
        """Predict verification time from the verifier's measured pass costs (``CurveFit``) instead of a line."""
        self.verify = CurveFit(pass_s)

    def compute_time(self, length: int) -> float:
        return length * self.draft_per_token.value + max(0.0, self.verify.predict(length))

    def round_time(self, length: int, ell: int, channel: ChannelView) -> float:
        return (
            self.compute_time(length)
            + self.uplink_bits(length, ell) * channel.sec_per_bit
            + channel.rtt_s
            + self.downlink_bits.value * channel.downlink_sec_per_bit
        )

    def marginal_time(self, ell: int, channel: ChannelView) -> float:
        """Extra round time of one more draft token."""
        upload = self.bits_per_token(ell) * channel.sec_per_bit
        return self.draft_per_token.value + upload + self.verify.coefficients()[1]


@dataclass(frozen=True)
class Prediction:
    length: int
    ell: int
    expected_tokens: float
    round_time_s: float

    @property
    def throughput(self) -> float:
        return self.expected_tokens / self.round_time_s


class ThroughputModel:
    """Acceptance + timing model; predicts E[N], T and E[N]/T for a candidate (L, ℓ)."""

    def __init__(
        self,
        vocab_size: int,
        timing_priors: TimingPriors | None = None,
        acceptance: AcceptanceModel | None = None,
    ) -> None:
        self.acceptance = acceptance or AcceptanceModel()
        self.timing = TimingModel(vocab_size, timing_priors)
        self.survival = SurvivalModel()

    def observe(self, obs: RoundObservation, last_conf: float | None = None) -> None:
        """``last_conf``: confidence of the last accepted token before this round (the survival model's context)."""
        self.acceptance.update(obs.ell, obs.confidences, obs.accepted, obs.alphas)
        self.timing.update(obs)
        self.survival.update(obs.ell, last_conf, obs.drafted, obs.accepted, obs.alphas)

    def predict(self, alphas: Sequence[float], ell: int, channel: ChannelView) -> Prediction:
        length = len(alphas)
        t = self.timing.round_time(length, ell, channel)
        if not t > 0 or not math.isfinite(t):
            raise ControllerError(f"non-positive predicted round time {t}")
        return Prediction(length, ell, expected_tokens(alphas), t)

    def predict_from_confidences(self, confidences: Sequence[float], ell: int, channel: ChannelView) -> Prediction:
        return self.predict(self.acceptance.predict_many(ell, confidences), ell, channel)

    def best(
        self,
        lengths: Sequence[int],
        ells: Sequence[int],
        channel: ChannelView,
        last_conf: float | None = None,
        alpha_for: Callable[[int], float] | None = None,
        rate: float | None = None,
    ) -> Prediction:
        """Best (L, ℓ). E[N] from the survival model in context ``last_conf``, or, with ``alpha_for``, from the same
        α̂ = alpha_for(ℓ) at every position. Objective: the round's E[N]/T; with ``rate`` (the long-run throughput λ)
        E[N] − λ·T instead, which maximises tokens per second over many rounds (renewal-reward / Dinkelbach)."""
        best: Prediction | None = None
        top = max(lengths)
        for ell in ells:
            if alpha_for is None:
                cum = 1.0 + np.concatenate([[0.0], np.cumsum(self.survival.survival(ell, last_conf, top))])
            else:
                a = alpha_for(ell)
                cum = np.array([expected_tokens_iid(a, n) for n in range(top + 1)])
            for length in lengths:
                t = self.timing.round_time(length, ell, channel)
                p = Prediction(length, ell, float(cum[length]), t)
                if best is None or _score(p, rate) > _score(best, rate):
                    best = p
        if best is None:
            raise ControllerError("empty (L, ell) search space")
        return best


def _score(p: Prediction, rate: float | None) -> float:
    return p.throughput if rate is None else p.expected_tokens - rate * p.round_time_s
