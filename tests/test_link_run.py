"""The real-link experiment's parts: NetRoundExecutor over MQTT against a real PyTorch worker (tiny random target,
ToySLM drafter, real mosquitto), the per-round tc rate setter inside a real namespace, and the model check."""

from __future__ import annotations

import subprocess
import sys

import pytest
from doubles.toy import ToyModel, ToySLM

from edge_runtime.controller import ModelBasedController, StaticController
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
from qsv_tools.channel.markov import SCENARIOS, MarkovChannel
from qsv_tools.sim import run_episode
from qsv_tools.sim.net_executor import NetRoundExecutor

TINY_VOCAB = 96  # cloud_verifier.cli.random_target("tiny")
PROMPTS = [[5, 17, 33, 2], [9, 4, 71]]


def _executor(broker, rates: list[float], seed: int = 0) -> NetRoundExecutor:  # noqa: ANN001
    slm = ToySLM(ToyModel(vocab_size=TINY_VOCAB, seed=3, scale=3.0))
    transport = EdgeTransportConfig(feedback_timeout_s=30.0, open_timeout_s=30.0)
    return NetRoundExecutor(slm, lambda: RemoteVerifier("dev-a", broker.endpoint("dev-a"), transport).connect(),
                            PROMPTS, MarkovChannel(SCENARIOS["4mbps"], seed=seed), bytes(32), set_rate=rates.append,
                            temperature=0.8, seed=seed)


def test_net_executor_runs_policies_over_mqtt_with_early_stop(mosquitto_broker, spawn_verifier) -> None:
    from qsv_wire import codec

    spawn_verifier(mosquitto_broker, "w-link", verifier=("--random-model", "tiny"))
    rates: list[float] = []
    ex = _executor(mosquitto_broker, rates)
    try:
        static = run_episode(StaticController(3, 240), ex, 0, 20)
        model = ModelBasedController(TINY_VOCAB, lengths=range(1, 9), ells=(16, 240), early_stop=True,
                                     explore_rounds=1, seed=1)
        adaptive = run_episode(model, ex, 1, 30)  # a second sequence: a new session on the same worker
    finally:
        ex.close()
    assert static.tokens == 20 and adaptive.tokens == 30
    rounds = static.rounds + adaptive.rounds
    assert len(rates) == len(rounds)  # the link rate is set before every round, to that round's channel state
    for rate, r in zip(rates, rounds, strict=True):
        o = r.observation
        assert rate == r.uplink_rate_bps == SCENARIOS["4mbps"].rates_bps[r.channel_state]
        assert 0 <= o.accepted <= o.drafted and 1 <= r.emitted <= o.accepted + 1
        assert o.uplink_bits > o.drafted * codec.token_bits(TINY_VOCAB)  # lattice bytes + packed ids
        assert o.verify_s > 0 and o.elapsed_s >= o.verify_s and r.round_time_s >= o.elapsed_s
        assert o.alphas is not None and len(o.alphas) == o.drafted  # per-position acceptance probabilities
    left = 20
    for r in static.rounds:  # L = 3 until the budget is near: rounds never draft past it
        assert r.observation.drafted == min(3, max(left - 1, 1))
        left -= r.emitted
    decided = [d.max_draft for d in adaptive.decisions]
    drafted = [r.observation.drafted for r in adaptive.rounds]
    assert all(n <= m for n, m in zip(drafted, decided, strict=True))


def test_model_check_rows_for_static_policies() -> None:
    from experiments.compare import PolicyResult
    from experiments.link_run import model_check
    from qsv_tools.sim import PROFILES, SimRoundExecutor, generate_traces

    traces = generate_traces(6, 80, [240], seed=4)
    ex = SimRoundExecutor(traces, MarkovChannel(SCENARIOS["4mbps"], seed=1), PROFILES["paper-gpu"], seed=2)
    res = PolicyResult("4mbps", "static(3,240)", True)
    res.episodes = [run_episode(StaticController(3, 240), ex, s, 52) for s in range(6)]
    other = PolicyResult("4mbps", "model+stop", True)
    text = model_check([res, other], traces.vocab_size)
    rows = [line for line in text.splitlines() if line.startswith("| 4mbps")]
    assert len(rows) == 1 and "static(3,240)" in rows[0]
    measured, predicted, ratio = (float(x) for x in rows[0].strip("|").split("|")[2:5])
    assert ratio == pytest.approx(predicted / measured, rel=1e-2)
    assert 0.5 < ratio < 2.0


def _netns_reason() -> str:
    from qsv_tools.channel.netem import netns_available

    ok, reason = netns_available()
    return "" if ok else reason


@pytest.mark.skipif(bool(_netns_reason()), reason=f"network namespaces unavailable: {_netns_reason()}")
def test_tc_rate_setter_changes_the_edge_qdisc_from_inside_the_namespace() -> None:
    from qsv_tools.channel.netem import ShapedLink

    with ShapedLink(2e6, shaper="tbf") as link:
        code = ("import sys; from experiments.link_run import tc_rate_setter; "
                "s = tc_rate_setter(sys.argv[1]); s(6e6); s(6e6); s(350e3)")
        subprocess.run(link.ns_exec("edge", [sys.executable, "-c", code, link.ends.edge_if]), check=True)
        assert "350Kbit" in link.qdisc_show()
