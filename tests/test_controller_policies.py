"""Controllers choose sensibly in constructed cases; the DDQN learns in the simulator; weights round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.controller import ModelBasedController, StaticController
from edge_runtime.controller.model import TimingPriors
from edge_runtime.controller.types import ChannelView, ControllerError, Decision, RoundObservation
from qsv_tools.channel import SCENARIOS, MarkovChannel
from qsv_tools.sim import PROFILES, SimRoundExecutor, generate_traces, run_episode

V = 151_936
PRIORS = TimingPriors(draft_per_token_s=0.004, verify_intercept_s=0.03, verify_per_token_s=0.001)


def teach(ctl: ModelBasedController, ell: int, conf: float, alpha: float, rounds: int = 200) -> None:
    """Feed rounds where every draft token has confidence ``conf`` and acceptance probability ``alpha`` (timings as
    the priors, so only the acceptance side is learned)."""
    bits = int(ctl.model.timing.bits_per_token(ell))
    for _ in range(rounds):
        ctl.observe(RoundObservation(ell, [conf] * 12, 12, draft_s=12 * PRIORS.draft_per_token_s,
                                     verify_s=PRIORS.verify_intercept_s + 12 * PRIORS.verify_per_token_s,
                                     uplink_bits=12 * bits, alphas=[alpha] * 12))


def test_static_controller_is_fixed() -> None:
    ctl = StaticController(3, 240)
    assert ctl.choose() == Decision(3, 240)
    assert ctl.should_continue(0.01, 1)
    assert ctl.name == "static(3,240)"
    with pytest.raises(ControllerError):
        StaticController(0, 240)


def test_high_confidence_fast_link_gives_long_drafts_low_confidence_short() -> None:
    fast = ChannelView.from_rate(50e6, rtt_s=0.01)
    ctl = ModelBasedController(V, ells=(240,), early_stop=False, explore_rounds=0, epsilon=0, timing_priors=PRIORS)
    teach(ctl, 240, 0.98, 0.97)
    assert ctl.choose(fast).max_draft >= 10
    ctl = ModelBasedController(V, ells=(240,), early_stop=False, explore_rounds=0, epsilon=0, timing_priors=PRIORS)
    teach(ctl, 240, 0.3, 0.3)
    assert ctl.choose(fast).max_draft <= 2


def test_slow_link_picks_small_ell_fast_link_picks_accurate_ell() -> None:
    def make() -> ModelBasedController:
        ctl = ModelBasedController(V, ells=(16, 720), early_stop=False, explore_rounds=0, epsilon=0,
                                   timing_priors=PRIORS)
        teach(ctl, 16, 0.8, 0.70)
        teach(ctl, 720, 0.8, 0.85)
        return ctl

    assert make().choose(ChannelView.from_rate(300e3, rtt_s=0.02)).ell == 16
    assert make().choose(ChannelView.from_rate(100e6, rtt_s=0.02)).ell == 720


def test_early_stop_after_unlikely_token_continues_after_likely_one() -> None:
    ctl = ModelBasedController(V, ells=(240,), early_stop=True, explore_rounds=0, epsilon=0, timing_priors=PRIORS)
    for _ in range(300):  # confident tokens are accepted and followed by acceptable ones; unsure ones are not
        ctl.model.acceptance.update(240, [0.97, 0.97, 0.2, 0.2], 4, alphas=[0.97, 0.97, 0.15, 0.15])
    view = ChannelView.from_rate(4e6, rtt_s=0.02)
    d = ctl.choose(view)
    assert d.max_draft == 12  # early stopping decides the length
    assert ctl.should_continue(0.97, 1)
    assert ctl.should_continue(0.97, 2)
    assert not ctl.should_continue(0.2, 3)


def test_model_controller_learns_timings_and_channel_from_observations() -> None:
    ctl = ModelBasedController(V, ells=(240,), timing_priors=TimingPriors(0.05, 0.2, 0.01))
    rng = np.random.default_rng(0)
    for _ in range(200):
        L = int(rng.integers(1, 8))
        bits = 400 + 2591 * L
        verify = 0.03 + 0.001 * L
        ctl.observe(RoundObservation(240, [0.9] * L, L, 0.004 * L, verify, bits,
                                     elapsed_s=0.02 + bits / 4e6 + verify))
    ctl.channel.observe_probe(0.02)
    view = ctl.channel.view()
    assert view.rate_bps == pytest.approx(4e6, rel=0.02)
    assert ctl.model.timing.draft_per_token.value == pytest.approx(0.004, rel=1e-3)


def test_model_based_beats_static_baselines_in_simulator() -> None:
    traces = generate_traces(30, 80, (240, 720), seed=11)
    results = {}
    for make in (lambda: StaticController(3, 240), lambda: StaticController(4, 240),
                 lambda: ModelBasedController(V, ells=(240, 720), seed=0)):
        ctl = make()
        ex = SimRoundExecutor(traces, MarkovChannel(SCENARIOS["4mbps"], seed=5), PROFILES["paper-gpu"], seed=6)
        eps = [run_episode(ctl, ex, s.seq, 52) for s in traces.sequences]
        results[ctl.name] = sum(e.tokens for e in eps) / sum(e.time_s for e in eps)
    best_static = max(results["static(3,240)"], results["static(4,240)"])
    assert results["model+stop"] > 1.03 * best_static, results


# ----------------------------------------------------------------------------------------------- DDQN (torch)


def test_ddqn_trains_quickly_loss_falls_and_beats_random(tmp_path: Path) -> None:
    from qsv_tools.ddqn_training import DdqnController, DdqnHyper, train_ddqn

    def setup(scenario: str, ells: tuple[int, int]) -> tuple[list[int], object, object]:
        traces = generate_traces(20, 80, ells, seed=21)
        seqs = [s.seq for s in traces.sequences]

        def evaluate(ctl: object, seed: int) -> float:
            ex = SimRoundExecutor(traces, MarkovChannel(SCENARIOS[scenario], seed=seed), PROFILES["paper-gpu"],
                                  seed=seed + 1)
            eps = [run_episode(ctl, ex, s, 52) for s in seqs]  # type: ignore[arg-type]
            return sum(e.tokens for e in eps) / sum(e.time_s for e in eps)

        ex = SimRoundExecutor(traces, MarkovChannel(SCENARIOS[scenario], seed=1), PROFILES["paper-gpu"], seed=2)
        return seqs, ex, evaluate

    # 1) TD loss falls over a few hundred updates (4 Mbit/s, the paper's ℓ pair); lr above the paper's 1e-4 so that
    #    a unit test's budget suffices
    seqs, ex, _ = setup("4mbps", (240, 720))
    agent = DdqnController((240, 720), hyper=DdqnHyper(lr=1e-3), seed=0)
    log = train_ddqn(agent, ex, seqs, episodes=50, max_new_tokens=52, eps_decay=0.93)
    assert agent.steps >= 300
    assert np.mean(log.losses[-100:]) < 0.8 * np.mean(log.losses[:100])

    # 2) where the action matters (350 kbit/s, ℓ ∈ {16, 720}: 720 costs ~19 ms per token), the trained policy beats
    #    uniformly random actions by a wide margin
    seqs, ex, evaluate = setup("350kbps", (16, 720))
    agent = DdqnController((16, 720), hyper=DdqnHyper(lr=1e-3), seed=0)
    train_ddqn(agent, ex, seqs, episodes=50, max_new_tokens=52, eps_decay=0.93)
    rand = DdqnController((16, 720), seed=3)
    rand.epsilon = 1.0  # uniformly random actions
    assert evaluate(agent, 100) > 1.3 * evaluate(rand, 100)

    path = tmp_path / "policy.pt"
    agent.save(path)
    loaded = DdqnController.load(path)
    probe = ChannelView.from_rate(175e3, state=0)
    for conf in (0.1, 0.5, 0.95):
        agent.reset()
        loaded.reset()
        o = RoundObservation(16, [conf] * 5, 5, 0.01, 0.03, 1000)
        agent.observe(o)
        loaded.observe(o)
        assert agent.choose(probe) == loaded.choose(probe)


def test_ddqn_state_layout() -> None:
    from qsv_tools.ddqn_training import WINDOW, DdqnController

    ctl = DdqnController((2, 16))
    assert len(ctl.actions) == 22
    ctl.observe(RoundObservation(16, [0.5, 0.7, 0.1], 2, 0.01, 0.03, 1000))  # only accepted tokens enter the window
    s = ctl.state(ChannelView.from_rate(175e3, state=1))
    assert s.shape == (WINDOW + 3,)
    assert list(s[WINDOW - 2:WINDOW]) == pytest.approx([0.5, 0.7])
    assert s[: WINDOW - 2].sum() == 0.0
    assert s[WINDOW:] == pytest.approx([0.6, 0.7, 1.0])


def test_controller_from_board_config(tmp_path: Path) -> None:
    import dataclasses

    from edge_runtime.config import default_config
    from edge_runtime.controller.factory import controller_from_config
    from qsv_tools.ddqn_training import DdqnController

    cfg = default_config()
    ctl = controller_from_config(cfg, V)
    assert isinstance(ctl, StaticController)
    assert ctl.choose() == Decision(cfg.controller.static_L, cfg.controller.static_ell)
    model_cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller, mode="model"))
    m = controller_from_config(model_cfg, V)
    assert isinstance(m, ModelBasedController)
    assert m.ells == tuple(sorted(cfg.controller.ell_set))
    assert m.channel.view().rate_bps == pytest.approx(cfg.channel.uplink_bps)
    assert m.recovery is not None and m.name == "model+stop+rec"  # the recovery factor is on by default
    norec_cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller, mode="model", recovery=False))
    assert controller_from_config(norec_cfg, V).recovery is None
    ddqn_cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller, mode="ddqn"))
    with pytest.raises(ControllerError, match="policy_path"):
        controller_from_config(ddqn_cfg, V)
    DdqnController(cfg.controller.ell_set).save(tmp_path / "p.pt")
    ddqn_cfg = dataclasses.replace(ddqn_cfg, controller=dataclasses.replace(ddqn_cfg.controller,
                                                                             policy_path=str(tmp_path / "p.pt")))
    with pytest.raises(ControllerError, match="qsv experiment ddqn-onnx"):
        controller_from_config(ddqn_cfg, V)


def test_ddqn_channel_state_from_estimator_without_view() -> None:
    from qsv_tools.ddqn_training import WINDOW, DdqnController

    ctl = DdqnController((240, 720), state_rates_bps=(2e6, 6e6))
    assert ctl.state(None)[WINDOW + 2] == 0.0
    bits = 20_000
    ctl.observe(RoundObservation(240, [0.9] * 3, 3, 0.01, 0.03, bits, elapsed_s=0.02 + bits / 6e6 + 0.03))
    assert ctl.state(None)[WINDOW + 2] == 1.0
    ctl.observe(RoundObservation(240, [0.9] * 3, 3, 0.01, 0.03, bits, elapsed_s=0.02 + bits / 2e6 + 0.03))
    assert ctl.state(None)[WINDOW + 2] == 0.0
    assert ctl.state(ChannelView.from_rate(6e6, state=1))[WINDOW + 2] == 1.0


def test_observation_from_drafter_round_and_trace_record() -> None:
    from edge_runtime.drafter import DraftRound

    draft = DraftRound(tokens=[5, 9, 2], points=[], ell=240, mode="qs", entropies=[1.0, 0.5, 2.0],
                       confidences=[0.9, 0.95, 0.4], slm_seconds=0.02, core_seconds=0.003, stats_seconds=0.001)
    o = RoundObservation.from_draft_round(draft, accepted=2, verify_s=0.03, uplink_bits=8000, elapsed_s=0.06,
                                          alphas=[0.99, 0.97, 0.2])
    assert o.drafted == 3 and o.ell == 240 and o.draft_s == pytest.approx(0.024)
    assert o.round_record(4) == {"seq": 4, "L": 3, "ell": 240, "accepted": 2, "draft_s": pytest.approx(0.024),
                                 "verify_s": 0.03, "uplink_bits": 8000, "elapsed_s": 0.06}
    draft.confidences = []
    with pytest.raises(ControllerError, match="record_stats"):
        RoundObservation.from_draft_round(draft, 0, 0.03, 8000, 0.06)


# ------------------------------------------------------------------------------------ DDQN board format (ONNX)
def test_ddqn_onnx_export_matches_torch(tmp_path: Path) -> None:
    from edge_runtime.controller import OnnxDdqnController, load_policy
    from qsv_tools.ddqn_training import WINDOW, DdqnController, export_policy_onnx

    agent = DdqnController((2, 16), seed=5, state_rates_bps=(175e3, 525e3))
    loaded = load_policy(agent.export_onnx(tmp_path / "policy.onnx"))
    assert isinstance(loaded, OnnxDdqnController)
    assert loaded.actions == agent.actions and loaded.state_rates_bps == agent.state_rates_bps
    states = np.random.default_rng(0).random((256, WINDOW + 3), dtype=np.float32)
    states[:, WINDOW + 2] = np.round(states[:, WINDOW + 2])
    q_torch, q_onnx = agent.q_values(states), loaded.q_values(states)
    assert q_onnx.shape == (256, len(agent.actions))
    np.testing.assert_allclose(q_onnx, q_torch, atol=1e-5, rtol=0)
    assert (q_onnx.argmax(1) == q_torch.argmax(1)).all()
    for conf, state in ((0.1, 0), (0.5, 1), (0.95, 0)):  # same greedy decisions through the Controller interface
        agent.reset()
        loaded.reset()
        o = RoundObservation(16, [conf] * 5, 5, 0.01, 0.03, 1000)
        agent.observe(o)
        loaded.observe(o)
        probe = ChannelView.from_rate(175e3, state=state)
        assert agent.choose(probe) == loaded.choose(probe)
    agent.save(tmp_path / "saved.pt")  # .pt → .onnx conversion (experiments: qsv experiment ddqn-onnx)
    converted = load_policy(export_policy_onnx(tmp_path / "saved.pt"))
    np.testing.assert_allclose(converted.q_values(states), q_torch, atol=1e-5, rtol=0)
    with pytest.raises(ControllerError, match="ddqn-onnx"):  # a board takes the ONNX policy only
        load_policy(tmp_path / "saved.pt")


def test_ddqn_onnx_bad_files(tmp_path: Path) -> None:
    from edge_runtime.controller import load_policy

    with pytest.raises(ControllerError, match="does not exist"):
        load_policy(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ControllerError, match="not a loadable ONNX model"):
        load_policy(tmp_path / "junk.onnx")
    with pytest.raises(ControllerError, match="unknown DDQN policy format"):
        load_policy(tmp_path / "policy.bin")


def test_controller_from_board_config_onnx_policy(tmp_path: Path) -> None:
    import dataclasses

    from edge_runtime.config import default_config
    from edge_runtime.controller import OnnxDdqnController
    from edge_runtime.controller.factory import controller_from_config
    from qsv_tools.ddqn_training import DdqnController

    cfg = default_config()
    path = DdqnController(cfg.controller.ell_set).export_onnx(tmp_path / "ddqn.onnx")
    ddqn_cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller, mode="ddqn",
                                                                        policy_path=str(path)))
    ctl = controller_from_config(ddqn_cfg, V)
    assert isinstance(ctl, OnnxDdqnController) and ctl.ells == cfg.controller.ell_set
    assert ctl.choose(ChannelView.from_rate(4e6, state=1)).ell in cfg.controller.ell_set
    other = DdqnController((2, 16)).export_onnx(tmp_path / "other.onnx")
    with pytest.raises(ControllerError, match="outside ell_set"):
        controller_from_config(dataclasses.replace(ddqn_cfg, controller=dataclasses.replace(
            ddqn_cfg.controller, policy_path=str(other))), V)
