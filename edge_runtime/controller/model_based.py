"""Model-based adaptive controller: pick (L, ℓ) maximising predicted throughput, stop drafting per token when the
next draft token is predicted not to pay (in the spirit of SpecDec++ / AdaEDL).

Per round: E[N](L, ℓ) from the survival model (probability that the first k drafts are accepted, in the context of
the last accepted token's confidence); (L*, ℓ*) = argmax E[N]/T over the allowed grid. With early stopping the round
may draft up to ``max_length``;
after drafting token i (confidence c_i), with P_i = Π_{j≤i} α̂(c_j), E_i = Σ_{k=0..i} P_k and T_i the predicted
round time for i tokens, one more token adds P_i·α̂_next(c_i) expected tokens and Δt time; it pays iff
P_i·α̂_next(c_i)/Δt > E_i/T_i (the ratio (E+g)/(T+Δt) beats E/T exactly then; with a constant α̂ later tokens
add less, so the one-step test is also the look-ahead test). With ``recovery=True`` every α̂ of the test is
multiplied by the factor f(s) of ``RecoveryModel``, s = tokens committed since the last rejection (recovery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .base import Controller
from .estimators import Ewma
from .model import Prediction, ThroughputModel, TimingPriors
from .recovery import RecoveryModel, since_after_round
from .types import ChannelView, ControllerError, Decision, RoundObservation

if TYPE_CHECKING:
    from edge_runtime.channel.estimator import ChannelEstimator

log = logging.getLogger(__name__)


class ModelBasedController(Controller):
    def __init__(
        self,
        vocab_size: int,
        lengths: Sequence[int] = tuple(range(1, 13)),
        ells: Sequence[int] = (240, 720),
        early_stop: bool = True,
        explore_rounds: int = 4,
        epsilon: float = 0.02,
        seed: int = 0,
        timing_priors: TimingPriors | None = None,
        channel_estimator: ChannelEstimator | None = None,
        model: ThroughputModel | None = None,
        objective: str = "longrun",
        recovery: bool = False,
    ) -> None:
        if not lengths or min(lengths) < 1 or not ells or min(ells) < 1:
            raise ControllerError("need non-empty L and ell sets with positive values")
        if objective not in ("longrun", "round"):
            raise ControllerError(f"objective must be 'longrun' or 'round', got {objective!r}")
        self.objective = objective
        self._tokens = Ewma(0.05)
        self._seconds = Ewma(0.05)
        self.lengths = tuple(sorted(set(lengths)))
        self.ells = tuple(sorted(set(ells)))
        self.early_stop = early_stop
        self.explore_rounds = explore_rounds
        self.epsilon = epsilon
        self.model = model or ThroughputModel(vocab_size, timing_priors)
        if channel_estimator is None:
            from edge_runtime.channel.estimator import ChannelEstimator

            channel_estimator = ChannelEstimator()
        self.channel = channel_estimator
        self._rng = np.random.default_rng(seed)
        self.name = "model" + ("+stop" if early_stop else "") + ("+rec" if recovery else "")
        # α̂ calibrated by the tokens committed since the last rejection (recovery.py); None: off
        self.recovery = RecoveryModel() if recovery else None
        self._since = 0
        self._last_conf: float | None = None
        self._round: _RoundState | None = None
        self.last_prediction: Prediction | None = None
        self._verifier_costs: tuple[float, ...] = ()

    def set_verifier_costs(self, pass_s: Sequence[float], precision: str = "") -> None:
        costs = tuple(float(c) for c in pass_s)
        if len(costs) < 2 or costs == self._verifier_costs:
            return
        self._verifier_costs = costs
        self.model.timing.set_verify_curve(costs)
        best = self.model.best(self.lengths, self.ells, self._channel(None), self._last_conf)
        log.info("verifier runs %s: pass costs %s ms for n = 1..%d; predicted best L=%d, ℓ=%d (E[N] %.2f tokens in "
                 "%.0f ms: %.1f tokens/s)", precision or "?", ", ".join(f"{1000 * c:.0f}" for c in costs[:6]),
                 len(costs), best.length, best.ell, best.expected_tokens, 1000 * best.round_time_s, best.throughput)

    def _channel(self, hint: ChannelView | None) -> ChannelView:
        return hint if hint is not None else self.channel.view()

    def choose(self, channel: ChannelView | None = None) -> Decision:
        view = self._channel(channel)
        under_explored = [e for e in self.ells if self.model.acceptance.samples.get(e, 0) < self.explore_rounds * 2]
        if under_explored:
            ells: Sequence[int] = (under_explored[0],)
        elif self.epsilon > 0 and self._rng.random() < self.epsilon:
            ells = (self.ells[int(self._rng.integers(len(self.ells)))],)
        else:
            ells = self.ells
        rate = self.long_run_rate()
        best = self.model.best(self.lengths, ells, view, last_conf=self._last_conf, rate=rate)
        self.last_prediction = best
        length = self.lengths[-1] if self.early_stop else best.length
        self._round = _RoundState(best.ell, view, self.model, rate, self.recovery, self._since)
        return Decision(length, best.ell)

    def long_run_rate(self) -> float | None:
        """λ = measured tokens per second over recent rounds (None before any, or with objective 'round')."""
        if self.objective != "longrun" or not self._seconds.ready or self._seconds.value <= 0:
            return None
        return self._tokens.value / self._seconds.value

    def should_continue(self, confidence: float, position: int) -> bool:
        if not self.early_stop or self._round is None:
            return True
        return self._round.add(confidence, position)

    def observe(self, obs: RoundObservation) -> None:
        if self.recovery is not None:  # before the tables learn from this round: the factor corrects their predictions
            reached = min(obs.drafted, obs.accepted + 1)  # positions verified in sequence
            predicted = self.model.acceptance.predict_many(obs.ell, obs.confidences[:reached])
            if obs.alphas is not None:
                observed = [float(a) for a in obs.alphas[:reached]]
            else:
                observed = [1.0] * obs.accepted + [0.0] * (reached - obs.accepted)
            self.recovery.update(self._since, predicted.tolist(), observed)
        self._since = since_after_round(self._since, obs.drafted, obs.accepted)
        self.model.observe(obs, last_conf=self._last_conf)
        if obs.elapsed_s is not None:
            self._tokens.update(obs.accepted + 1)
            self._seconds.update(obs.draft_s + obs.elapsed_s)
        if obs.elapsed_s is not None and obs.uplink_bits > 0:
            self.channel.observe_round(obs.uplink_bits, obs.elapsed_s, obs.verify_s)
        # context of the next round: the last accepted draft's confidence; a first-position rejection marks a hard spot
        self._last_conf = float(obs.confidences[obs.accepted - 1]) if obs.accepted > 0 else 0.0
        self._round = None

    def reset(self) -> None:
        self._last_conf = None
        self._round = None
        self._since = 0  # a prompt's first round counts as right after a rejection


class _RoundState:
    """Running P_i, E_i for the early-stopping test within one round."""

    def __init__(self, ell: int, view: ChannelView, model: ThroughputModel, rate: float | None,
                 recovery: RecoveryModel | None = None, since: int = 0) -> None:
        self.rate = rate
        self.recovery = recovery
        self.since = since
        self.ell = ell
        self.view = view
        self.model = model
        self.prob_all = 1.0
        self.expected = 1.0
        self.dt = model.timing.marginal_time(ell, view)

    def add(self, confidence: float, position: int) -> bool:
        acc = self.model.acceptance
        self.prob_all *= self._calibrated(acc.predict(self.ell, confidence), position - 1)
        self.expected += self.prob_all
        gain = self.prob_all * self._calibrated(acc.predict_next(self.ell, confidence), position)
        if self.rate is not None:
            return gain / self.dt > self.rate
        t_now = self.model.timing.round_time(position, self.ell, self.view)
        return gain / self.dt > self.expected / t_now

    def _calibrated(self, alpha: float, index: int) -> float:
        """α̂ of the round's position ``index`` (0-based) with the recovery factor, if on."""
        if self.recovery is None:
            return alpha
        return min(1.0, alpha * self.recovery.factor(self.since + index))
