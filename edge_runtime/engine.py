"""The round engine: one generation (prompt → tokens) as a sequence of speculative rounds.

Three roles are plugged in; the engine owns the order of events and nothing else:

- the **drafter** (:class:`DraftSource`; :class:`edge_runtime.drafter.Drafter` on the board): drafts a round with
  Q-S, applies the verdict, and pre-drafts the next round while it waits (``speculate``). The simulator's trace
  replay (:class:`qsv_tools.sim.simulator.TraceDrafter`) is the other one;
- the **verifier link** (:class:`VerifierLink`): takes a drafted round and, some time later, gives its verdict.
  Implementations: :class:`edge_runtime.transport.remote.MqttLink` (the cloud verifier over MQTT: the board runtime,
  the demo, the link experiments) and :class:`qsv_tools.local_loop.LocalLink` (the target model in the same
  process: the reference loop and the statistical exactness tests);
- the **controller** (:mod:`edge_runtime.controller`): chooses (L, ℓ) before each round, may stop drafting early
  per token, and learns from each finished round.

One round::

    decision = controller.choose(link.channel_view())
    draft    = drafter.draft(min(L, budget − 1), ℓ, controller.should_continue)
    link.submit(draft)
    while no verdict and pipelining:            # the wait: pre-draft round k+1 on the board (one forward a step)
        drafter.speculate(...)
    verdict  = link.wait()
    tokens  += drafter.feedback(verdict.accepted, verdict.next_token)
    controller.observe(...)

Pipelining (``pipeline``): ``"off"`` is the serial round; ``"on"`` pre-drafts while the verdict has not arrived
and the expected remaining wait covers one more SLM forward; ``"auto"`` measures committed tokens per second of
round time with pre-drafting on and off (:class:`PipelineChooser`) and uses the better one, trying the other now and
then: where the board and the verifier share CPU cores (the one-machine demo) pre-drafting slows the verifier down
more than it saves, on a real board it hides the drafting; ``"always"`` pre-drafts to full depth before looking at
the verdict (deterministic; for tests and measurements). The drafter keeps a pre-draft only when its assumed prefix
is the committed one, and its draws are keyed by (seed, round, position): the tokens are the same in every mode.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_runtime.controller.base import Controller
from edge_runtime.controller.types import ChannelView, Decision, RoundObservation
from edge_runtime.drafter import DraftConfig, DraftRound, SpeculationStats
from qsv_wire import codec
from qsv_wire.protocol import SamplingParams

log = logging.getLogger(__name__)

PIPELINE_MODES = ("auto", "on", "off", "always")


class EngineError(RuntimeError):
    """A generation could not run (bad arguments, or a role failed)."""


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer for one round."""

    accepted: int  # leading draft tokens accepted
    next_token: int  # the correction (after a rejection) or the bonus token (all accepted)
    verify_s: float = 0.0  # the verifier's own compute time, as it reports it
    alphas: tuple[float, ...] = ()  # per-position acceptance probabilities min(1, p/q̂), when reported
    downlink_bits: int = 0
    uplink_bits: int | None = None  # the round's uplink as the link sent it, framing included (None: the engine
    #                                 counts the draft's lattice bytes + packed token ids)


@dataclass(frozen=True)
class VerifierInfo:
    """What the verifier says about itself when a generation opens."""

    pass_s: tuple[float, ...] = ()  # c(n) for n = 1..k tokens per target pass, seconds (empty: unknown)
    precision: str = ""


class DraftSource(Protocol):
    """The drafter as the engine sees it (what :class:`edge_runtime.drafter.Drafter` provides)."""

    config: DraftConfig  # sampling (temperature, top-k, top-p), the default ℓ, stop_at_eos
    slm: Any  # .vocab_size, .eos_token_ids
    speculation: SpeculationStats  # .hits: pre-drafts whose assumed prefix came true
    forward_seconds: float  # one single-token forward ("auto" pre-drafts only when the wait covers one)

    def start(self, prompt_ids: Sequence[int]) -> None: ...

    def draft(self, length: int, config: DraftConfig | None = None,
              should_continue: Callable[[float, int], bool] | None = None) -> DraftRound: ...

    def speculate(self, max_tokens: int, config: DraftConfig | None = None) -> bool: ...

    def feedback(self, accepted: int, next_token: int) -> list[int]: ...


class VerifierLink(Protocol):
    """The verifier as the engine sees it: one round in flight at a time."""

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo: ...

    def submit(self, draft: DraftRound) -> None: ...

    def poll(self) -> Verdict | None: ...

    def wait(self) -> Verdict: ...

    def channel_view(self) -> ChannelView | None: ...


@dataclass(frozen=True)
class RoundStat:
    """One round as the board saw it. Times in seconds, on the board's clock."""

    index: int
    drafted: int  # L actually drafted (≤ the controller's max, ≤ budget − 1; fewer after a drafted EOS)
    ell: int
    accepted: int
    new_tokens: list[int]  # committed by this round (accepted drafts + correction/bonus), cut to the budget
    lattice_bytes: int  # encoded lattice points of the round (docs/CODEC.md)
    token_id_bits: int  # packed draft token ids: drafted · ⌈log2 V⌉
    bound_bits: int  # the paper's fixed-length size of the round: drafted · (16 + ⌈log2 C(ℓ+V−1, V−1)⌉)
    draft_s: float  # drafting on the critical path (SLM + C core + stats), pre-drafted tokens excluded
    wait_s: float  # submit → verdict on the board: link + verifier queue + target forward (+ pre-drafting overrun)
    verify_s: float  # the verifier's own compute time (from the verdict)
    feedback_s: float  # drafter rollback + forward of the correction/bonus token (0 after a pre-draft hit)
    model_s: float = 0.0  # SLM forwards for this round's tokens (pre-drafted ones included)
    overhead_s: float = 0.0  # the rest of the per-token edge work: quantize + sample + encode + stats
    reused: int = 0  # leading tokens of this round pre-drafted during the previous round's wait
    predraft_s: float = 0.0  # drafting done during this round's wait (overlapped with the verifier)
    predraft_hit: bool | None = None  # did that pre-draft's assumed prefix come true (None: no pre-draft)

    @property
    def uplink_bytes(self) -> float:
        return self.lattice_bytes + self.token_id_bits / 8

    @property
    def seconds(self) -> float:
        """The round's critical path: drafting, then waiting for the verdict, then applying it."""
        return self.draft_s + self.wait_s + self.feedback_s


@dataclass
class Generation:
    """One prompt's generation."""

    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    rounds: list[RoundStat] = field(default_factory=list)
    prefill_s: float = 0.0  # drafter prefill + verifier open (the target's prefill)
    decode_s: float = 0.0  # wall clock of all rounds
    precision: str = ""  # the verifier's, when it says
    stopped_by_eos: bool = False

    @property
    def drafted(self) -> int:
        return sum(r.drafted for r in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rounds)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        return sum(r.accepted + 1 for r in self.rounds) / len(self.rounds) if self.rounds else 0.0

    @property
    def predraft_hit_rate(self) -> float:
        tried = [r.predraft_hit for r in self.rounds if r.predraft_hit is not None]
        return sum(tried) / len(tried) if tried else 0.0


class PipelineChooser:
    """Chooses, round by round, whether to pre-draft during the wait ("auto" pipelining), from what each choice
    achieved: committed tokens per second from one round's submit to the next round's submit (so the pre-draft's
    saving on the next round and any slow-down of the verifier it causes are both counted). Rounds alternate until
    each choice has ``warmup`` samples; then the better rate is used, and the other one is tried again (for
    ``warmup`` rounds) after ``explore_every`` rounds, an interval that doubles (up to ``max_explore_every``) each
    time the trial does not change the choice. Keep one chooser across generations (the board runtime does)."""

    def __init__(self, warmup: int = 3, explore_every: int = 8, max_explore_every: int = 128,
                 smoothing: float = 0.25) -> None:
        self.warmup = warmup
        self.explore_every = explore_every
        self.max_explore_every = max_explore_every
        self.smoothing = smoothing
        self.tokens = {True: 0.0, False: 0.0}
        self.seconds = {True: 0.0, False: 0.0}
        self.samples = {True: 0, False: 0}
        self._interval = explore_every
        self._since_trial = 0
        self._trial: bool | None = None  # the choice being re-tried, and the best one before the trial
        self._best_before: bool | None = None
        self._trial_left = 0  # trial rounds still to choose
        self._trial_seen = 0  # trial rounds observed

    def rate(self, predraft: bool) -> float:
        return self.tokens[predraft] / self.seconds[predraft] if self.seconds[predraft] > 0 else 0.0

    def best(self) -> bool:
        return self.rate(True) >= self.rate(False)

    def choose(self) -> bool:
        if min(self.samples.values()) < self.warmup:
            return self.samples[True] <= self.samples[False]
        if self._trial is not None and self._trial_left > 0:
            self._trial_left -= 1
            return self._trial
        best = self.best()
        self._since_trial += 1
        if self._since_trial >= self._interval:  # a trial: ``warmup`` rounds of the other choice
            self._since_trial = 0
            self._trial, self._best_before, self._trial_left = not best, best, self.warmup - 1
            self._trial_seen = 0
            return not best
        return best

    def observe(self, predraft: bool, tokens: int, seconds: float) -> None:
        if seconds <= 0:
            return
        a = self.smoothing if self.samples[predraft] else 1.0
        self.tokens[predraft] += a * (tokens - self.tokens[predraft])
        self.seconds[predraft] += a * (seconds - self.seconds[predraft])
        self.samples[predraft] += 1
        if self._trial is not None and predraft == self._trial:
            self._trial_seen += 1
            if self._trial_seen >= self.warmup:
                changed = self.best() != self._best_before
                self._interval = self.explore_every if changed else min(2 * self._interval, self.max_explore_every)
                self._trial = self._best_before = None


class RoundEngine:
    """Runs generations with one drafter, one verifier link and one controller (one generation at a time)."""

    def __init__(self, drafter: DraftSource, link: VerifierLink, controller: Controller, pipeline: str = "auto",
                 vocab_hash: bytes = bytes(32), clock: Callable[[], float] = time.perf_counter,
                 chooser: PipelineChooser | None = None) -> None:
        if pipeline not in PIPELINE_MODES:
            raise EngineError(f"pipeline must be one of {', '.join(PIPELINE_MODES)}, got {pipeline!r}")
        self.drafter = drafter
        self.link = link
        self.controller = controller
        self.pipeline = pipeline
        self.vocab_hash = bytes(vocab_hash)
        self.clock = clock
        self.chooser = chooser or PipelineChooser()
        self._wait_ewma = 0.0  # expected submit → verdict time, for "on" pre-drafting
        self._previous: tuple[bool, int, float] | None = None  # (pre-drafted?, tokens, submit time) of the last round

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, seed: int = 0,
                 on_round: Callable[[Generation, RoundStat], None] | None = None) -> Generation:
        """Generate up to ``max_new_tokens`` after ``prompt_ids`` (stops after a committed EOS token when the
        drafter's config says ``stop_at_eos``); ``seed`` goes to the verifier (its draws), the drafter keeps its
        own; ``on_round`` is called after every round."""
        if max_new_tokens < 1 or len(prompt_ids) == 0:
            raise EngineError("need a non-empty prompt and max_new_tokens >= 1")
        drafter, link, controller = self.drafter, self.link, self.controller
        cfg = drafter.config
        vocab = drafter.slm.vocab_size
        run = Generation([int(t) for t in prompt_ids])
        controller.reset()
        t0 = self.clock()
        drafter.start(run.prompt_ids)
        info = link.open(run.prompt_ids, SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p, seed), vocab,
                         self.vocab_hash)
        if info.pass_s:
            controller.set_verifier_costs(list(info.pass_s), info.precision)
        run.precision = info.precision
        start = self.clock()
        run.prefill_s = start - t0
        self._previous = None
        while not run.stopped_by_eos and len(run.tokens) < max_new_tokens:
            stat = self._round(run, max_new_tokens - len(run.tokens), vocab)
            run.rounds.append(stat)
            if on_round is not None:
                on_round(run, stat)
        run.decode_s = self.clock() - start
        return run

    def _round(self, run: Generation, budget: int, vocab: int) -> RoundStat:
        drafter, link, controller = self.drafter, self.link, self.controller
        cfg = drafter.config
        decision = self._within_limits(controller.choose(link.channel_view()))
        round_cfg = dataclasses.replace(cfg, ell=decision.ell) if decision.ell != cfg.ell else cfg
        t0 = self.clock()
        draft = drafter.draft(min(decision.max_draft, max(budget - 1, 1)), round_cfg, controller.should_continue)
        t1 = self.clock()
        link.submit(draft)
        if self._previous is not None:
            predrafted, tokens, submitted = self._previous
            self.chooser.observe(predrafted, tokens, t1 - submitted)
        mode = self.pipeline
        if mode == "auto":
            mode = "on" if self.chooser.choose() else "off"
        verdict, predraft_s, tried = self._wait(draft, decision.max_draft, budget, round_cfg, mode, t1)
        t2 = self.clock()
        hits_before = drafter.speculation.hits
        committed = drafter.feedback(verdict.accepted, verdict.next_token)
        t3 = self.clock()
        new_tokens: list[int] = []
        eos = drafter.slm.eos_token_ids
        for token in committed[:budget]:
            new_tokens.append(token)
            if cfg.stop_at_eos and token in eos:
                run.stopped_by_eos = True
                break
        run.tokens.extend(new_tokens)
        self._previous = (mode != "off", len(new_tokens), t1)
        wait_s = t2 - t1
        id_bits = codec.token_bits(vocab)
        lattice_bytes = sum(len(m) for m in draft.messages)
        stat = RoundStat(
            index=len(run.rounds), drafted=draft.length, ell=draft.ell, accepted=verdict.accepted,
            new_tokens=new_tokens, lattice_bytes=lattice_bytes, token_id_bits=draft.length * id_bits,
            bound_bits=draft.length * (16 + codec.bound_bits(vocab, draft.ell)), draft_s=t1 - t0, wait_s=wait_s,
            verify_s=verdict.verify_s, feedback_s=t3 - t2, model_s=draft.slm_seconds,
            overhead_s=draft.core_seconds + draft.stats_seconds, reused=draft.reused, predraft_s=predraft_s,
            predraft_hit=(drafter.speculation.hits > hits_before) if tried else None)
        controller.observe(RoundObservation(
            ell=draft.ell, confidences=[draft.confidence(i) for i in range(draft.length)],
            accepted=verdict.accepted, draft_s=draft.compute_seconds,
            verify_s=verdict.verify_s, elapsed_s=wait_s,
            uplink_bits=8 * lattice_bytes + stat.token_id_bits if verdict.uplink_bits is None else verdict.uplink_bits,
            alphas=list(verdict.alphas) or None, entropies=draft.entropies or None,
            downlink_bits=verdict.downlink_bits))
        return stat

    def _within_limits(self, decision: Decision) -> Decision:
        """A link that speaks the wire protocol (``link.limits``, the protocol's ``Limits``) gets no round its
        verifier would refuse: L is clamped to ``max_draft_len``; an ℓ above ``max_ell`` is an error (the ℓ set is
        the controller's configuration: ``edge_runtime.config`` refuses such a set)."""
        limits = getattr(self.link, "limits", None)
        if limits is None:
            return decision
        if decision.ell > limits.max_ell:
            raise EngineError(f"controller chose ell={decision.ell}, above the protocol's max ell {limits.max_ell} "
                              "(qsv_wire.protocol.Limits); the verifier would refuse the round (TOO_LARGE)")
        if decision.max_draft > limits.max_draft_len:
            return dataclasses.replace(decision, max_draft=limits.max_draft_len)
        return decision

    def _wait(self, draft: DraftRound, max_draft: int, budget: int, config: object, mode: str,
              submitted: float) -> tuple[Verdict, float, bool]:
        """Wait for the verdict, pre-drafting the next round meanwhile; (verdict, pre-drafting seconds, tried)."""
        link, drafter = self.link, self.drafter
        # If every draft is accepted the round commits L + 1 tokens; the next round drafts at most this many.
        next_budget = budget - draft.length - 1
        depth = min(max_draft, max(next_budget - 1, 1))
        if mode == "off" or next_budget < 1 or draft.hit_eos:
            return self._blocking_wait(submitted), 0.0, False
        started = self.clock()
        verdict: Verdict | None = None
        while True:
            if mode == "on":
                verdict = link.poll()
                if verdict is not None:
                    break
                expected_left = self._wait_ewma - (self.clock() - started)
                if self._wait_ewma > 0 and expected_left < drafter.forward_seconds:
                    break
            if not drafter.speculate(depth, config):  # type: ignore[arg-type]
                break
        predraft_s = self.clock() - started
        return (verdict or self._blocking_wait(submitted)), predraft_s, True

    def _blocking_wait(self, submitted: float) -> Verdict:
        """``link.wait()``; the submit → verdict time feeds the expected wait that "on" pre-drafting budgets with
        (a verdict found by ``poll`` between pre-draft forwards arrived at an unknown point of the last forward and
        is not counted)."""
        verdict = self.link.wait()
        waited = self.clock() - submitted
        self._wait_ewma = waited if self._wait_ewma == 0 else 0.7 * self._wait_ewma + 0.3 * waited
        return verdict
