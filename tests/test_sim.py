"""Simulator: trace format, synthetic generator, round execution, and agreement with the throughput model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.controller import StaticController, ThroughputModel
from edge_runtime.controller.model import TimingPriors
from edge_runtime.controller.types import ChannelView
from qsv_tools.channel import PAPER_4MBPS, PAPER_350KBPS, MarkovChannel
from qsv_tools.sim import (
    PROFILES,
    SimRoundExecutor,
    TimingProfile,
    TraceError,
    TraceSet,
    generate_traces,
    run_episode,
    target_alone_time,
)
from qsv_tools.sim.synthetic import lattice_quantize_rows


def test_lattice_quantizer_rows_follow_paper_rule() -> None:
    np.testing.assert_array_equal(lattice_quantize_rows(np.array([[0.6, 0.3, 0.1]]), 2), [[1, 1, 0]])
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.full(300, 0.05), size=50)
    for ell in (1, 2, 16, 240, 720):
        b = lattice_quantize_rows(q, ell)
        assert np.all(b.sum(axis=1) == ell)
        assert np.all(b >= 0)
        assert np.all(np.abs(b - ell * q) < 1.0 + 1e-9)


def test_synthetic_traces_have_easy_and_hard_stretches_and_quantization_costs_acceptance() -> None:
    ts = generate_traces(30, 80, (16, 240), seed=1)
    conf = np.concatenate([s.confidences("qs", 240) for s in ts.sequences])
    a240 = np.concatenate([s.alphas("qs", 240) for s in ts.sequences])
    a16 = np.concatenate([s.alphas("qs", 16) for s in ts.sequences])
    assert 0.3 < np.mean(conf >= 0.9) < 0.7
    assert a240[conf >= 0.9].mean() > 0.95 > 0.6 > a240[conf < 0.5].mean()
    assert a16.mean() < a240.mean() - 0.03  # coarser lattice → lower acceptance
    easy = (conf >= 0.9).reshape(30, 80)
    f = easy.mean()
    iid_same = f * f + (1 - f) * (1 - f)
    assert np.mean(easy[:, 1:] == easy[:, :-1]) > iid_same + 0.08  # stretches, not i.i.d. tokens
    # S-Q at a coarse lattice accepts tokens that q̂ gave zero mass (the bias the paper points out)
    sq16 = ts.sequences[0].columns("sq", 16)
    assert np.any(sq16[:, 1] == 0.0)


def test_trace_roundtrip_and_validation(tmp_path: Path) -> None:
    ts = generate_traces(3, 10, (16, 240), vocab_size=50_272, seed=2)
    ts.rounds.append({"seq": 0, "L": 3, "ell": 240, "accepted": 2, "draft_s": 0.012, "verify_s": 0.035,
                      "uplink_bits": 7000, "elapsed_s": 0.06})
    path = tmp_path / "t.jsonl"
    ts.save(path)
    back = TraceSet.load(path)
    assert back.vocab_size == 50_272 and back.ells == (16, 240) and len(back.sequences) == 3
    assert back.rounds == ts.rounds
    np.testing.assert_allclose(back.sequences[1].columns("qs", 240), ts.sequences[1].columns("qs", 240), atol=1e-7)
    np.testing.assert_allclose(back.sequences[2].alphas("sq", 16), ts.sequences[2].alphas("sq", 16), atol=1e-6)
    lines = path.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[1:]))
    with pytest.raises(TraceError, match="before the meta"):
        TraceSet.load(bad)
    rec = json.loads(lines[1])
    rec["qs"]["240"] = [0.5, 1.5, 0.2]
    bad.write_text(lines[0] + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(TraceError, match=r"bad.jsonl:2"):
        TraceSet.load(bad)
    bad.write_text(lines[0] + "\nnot json\n")
    with pytest.raises(TraceError, match="not JSON"):
        TraceSet.load(bad)


def test_executor_round_accounting_and_determinism() -> None:
    ts = generate_traces(4, 80, (240,), seed=3)

    def run(seed: int) -> list[tuple[int, int, float]]:
        ex = SimRoundExecutor(ts, MarkovChannel(PAPER_4MBPS, seed=seed), PROFILES["paper-gpu"], seed=seed)
        ep = run_episode(StaticController(4, 240), ex, 2, 52)
        assert ep.tokens == 52  # the engine never drafts past the budget and cuts the last round to it
        assert ex.pos == sum(r.observation.accepted + 1 for r in ep.rounds)  # the replay followed every round
        left = 52
        for r in ep.rounds:
            o = r.observation
            assert o.drafted == min(4, max(left - 1, 1)) and r.emitted == min(o.accepted + 1, left)
            left -= r.emitted
            assert r.round_time_s == pytest.approx(o.draft_s + o.elapsed_s)
            assert o.uplink_bits == PROFILES["paper-gpu"].header_bits + o.drafted * 2591
        return [(r.observation.accepted, r.channel_state, r.round_time_s) for r in ep.rounds]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_executor_errors() -> None:
    ts = generate_traces(1, 5, (240,), seed=0)
    ex = SimRoundExecutor(ts, MarkovChannel(PAPER_4MBPS, seed=0), PROFILES["paper-gpu"])
    with pytest.raises(TraceError, match="no sequence"):
        ex.begin(7)
    with pytest.raises(TraceError, match="ell=720"):
        run_episode(StaticController(3, 720), ex, 0, 3)
    with pytest.raises(TraceError, match="generate longer traces"):
        run_episode(StaticController(3, 240), ex, 0, 52)
    with pytest.raises(ValueError):
        SimRoundExecutor(ts, MarkovChannel(PAPER_4MBPS), PROFILES["paper-gpu"], scheme="xx")


def test_timing_profile_calibrates_from_round_records() -> None:
    rng = np.random.default_rng(0)
    rounds = [{"L": int(L), "draft_s": 0.02 * L * rng.uniform(0.95, 1.05), "verify_s": 0.04 + 0.002 * L}
              for L in rng.integers(1, 10, 200)]
    prof = TimingProfile.from_rounds(rounds)
    assert prof.draft_per_token_s == pytest.approx(0.02, rel=0.02)
    assert prof.verify_intercept_s == pytest.approx(0.04, abs=1e-6)
    assert prof.verify_per_token_s == pytest.approx(0.002, abs=1e-6)
    assert target_alone_time(prof, 10, rtt_s=0.05) == pytest.approx(0.05 + 10 * 0.042, abs=1e-5)
    with pytest.raises(TraceError):
        TimingProfile.from_rounds([])


@pytest.fixture(scope="module")
def calib_traces() -> TraceSet:
    return generate_traces(50, 120, (16, 240, 720), seed=9)


@pytest.mark.parametrize("spec", [PAPER_4MBPS, PAPER_350KBPS], ids=["4mbps", "350kbps"])
@pytest.mark.parametrize("length,ell", [(1, 240), (3, 240), (4, 240), (8, 240), (6, 720), (3, 16)])
def test_model_predicted_throughput_matches_simulation(calib_traces: TraceSet, spec, length: int, ell: int) -> None:
    """Calibrate the online model on one set of episodes, then predict another set round by round from the draft
    confidences alone: predicted Σ E[N] / Σ T within 15 % of the simulated tokens / time."""
    ts = calib_traces
    prof = PROFILES["paper-gpu"]
    model = ThroughputModel(ts.vocab_size, TimingPriors(0.01, 0.05, 0.005))
    ctl = StaticController(length, ell)
    ex = SimRoundExecutor(ts, MarkovChannel(spec, seed=1), prof, seed=2)
    for s in range(25):
        for r in run_episode(ctl, ex, s, 52).rounds:
            model.observe(r.observation)
    view = ChannelView(spec.mean_sec_per_bit, spec.rtt_s, None, 1.0 / spec.downlink_bps)
    tokens = time_s = pred_n = pred_t = 0.0
    for s in range(25, 50):
        ep = run_episode(ctl, ex, s, 52)
        tokens += ep.tokens
        time_s += ep.time_s
        for r in ep.rounds:
            p = model.predict_from_confidences(r.observation.confidences, ell, view)
            pred_n += p.expected_tokens
            pred_t += p.round_time_s
    simulated, predicted = tokens / time_s, pred_n / pred_t
    assert predicted == pytest.approx(simulated, rel=0.15)


def test_synthetic_quantizer_agrees_with_c_core() -> None:
    from qsv_wire import core

    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.full(256, 0.1), size=40)
    for ell in (2, 16, 240, 720):
        b = lattice_quantize_rows(q, ell)
        for row in range(q.shape[0]):
            np.testing.assert_array_equal(core.quantize_probs(q[row], ell).dense(), b[row])
