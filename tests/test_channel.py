"""Channel: Markov link model statistics, the online estimator, and real tc shaping across network namespaces."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edge_runtime.channel import ChannelEstimator
from edge_runtime.controller.types import ControllerError
from qsv_tools.channel import PAPER_4MBPS, PAPER_350KBPS, MarkovChannel, MarkovChannelSpec
from qsv_tools.channel.markov import ChannelConfigError
from qsv_tools.channel.netem import ShapingError


def test_paper_scenarios() -> None:
    assert PAPER_4MBPS.mean_rate_bps == pytest.approx(4e6)
    assert PAPER_350KBPS.mean_rate_bps == pytest.approx(350e3)
    assert PAPER_4MBPS.mean_sec_per_bit == pytest.approx(0.5 / 2e6 + 0.5 / 6e6)


def test_markov_chain_transition_frequencies() -> None:
    ch = MarkovChannel(PAPER_4MBPS, seed=0)
    states = np.array(ch.states(20_000))
    switches = np.mean(states[1:] != states[:-1])
    assert switches == pytest.approx(0.5, abs=0.02)  # all transitions 0.5: redrawn independently each round
    assert states.mean() == pytest.approx(0.5, abs=0.02)
    sticky = MarkovChannelSpec((1e6, 5e6), ((0.9, 0.1), (0.3, 0.7)))
    assert sticky.stationary == pytest.approx([0.75, 0.25])
    s = np.array(MarkovChannel(sticky, seed=1).states(40_000))
    assert np.mean(s == 0) == pytest.approx(0.75, abs=0.02)
    assert MarkovChannel(PAPER_4MBPS, seed=3).states(50) == MarkovChannel(PAPER_4MBPS, seed=3).states(50)


def test_markov_spec_validation() -> None:
    with pytest.raises(ChannelConfigError):
        MarkovChannelSpec((1e6, 2e6), ((0.5, 0.6), (0.5, 0.5)))
    with pytest.raises(ChannelConfigError):
        MarkovChannelSpec((0.0,), ((1.0,),))


def test_estimator_converges_to_mean_seconds_per_bit_and_rtt() -> None:
    """Rates redrawn per round (2/6 Mbps), sizes vary with L: E[1/R] and the RTT (regression intercept) are found."""
    rng = np.random.default_rng(0)
    ch = MarkovChannel(PAPER_4MBPS, seed=1)
    est = ChannelEstimator(prior_rate_bps=1e6, prior_rtt_s=0.1, alpha=0.005)
    for _ in range(2000):
        bits = 400 + 2591 * int(rng.integers(1, 13))
        verify = 0.03 + rng.normal(0, 1e-4)
        elapsed = 0.025 + bits / ch.rate_bps + verify + rng.normal(0, 2e-4)
        est.observe_round(bits, max(elapsed, verify), verify)
        ch.step()
    view = est.view()
    assert view.rtt_s == pytest.approx(0.025, abs=0.002)
    assert view.sec_per_bit == pytest.approx(PAPER_4MBPS.mean_sec_per_bit, rel=0.10)


def test_estimator_prefers_probes_and_maps_states() -> None:
    est = ChannelEstimator(prior_rate_bps=4e6, prior_rtt_s=0.05, state_rates_bps=(2e6, 6e6))
    est.observe_probe(0.012)
    est.observe_probe(0.010)
    est.observe_round(10_000, 0.010 + 10_000 / 6e6 + 0.03, 0.03)
    assert est.rtt_s() == pytest.approx(0.010)
    assert est.last_sec_per_bit == pytest.approx(1 / 6e6, rel=1e-6)
    assert est.view().state == 1
    est.observe_round(10_000, 0.010 + 10_000 / 2e6 + 0.03, 0.03)
    assert est.view(use_last=True).state == 0
    with pytest.raises(ControllerError):
        est.observe_round(0, 1.0, 0.1)
    with pytest.raises(ControllerError):
        est.observe_probe(-1.0)


# ------------------------------------------------------------------------------ real shaping (netns + tc tbf)

def _netns_reason() -> str:
    from qsv_tools.channel.netem import netns_available

    ok, reason = netns_available()
    return "" if ok else reason


NETNS_SKIP = _netns_reason()


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.skipif(bool(NETNS_SKIP), reason=f"network namespaces unavailable: {NETNS_SKIP}")
def test_tbf_shaped_veth_delivers_configured_rate_and_cleans_up() -> None:
    from qsv_tools.channel.netem import MarkovShaper, ShapedLink, measure_tcp_goodput

    with ShapedLink(2e6, shaper="tbf") as link:
        names = (link.ends.edge_ns, link.ends.cloud_ns)
        assert all(n in _namespaces() for n in names)
        slow = measure_tcp_goodput(link, seconds=2.0)
        link.set_uplink_rate(6e6)
        assert "6Mbit" in link.qdisc_show()
        fast = measure_tcp_goodput(link, seconds=2.0)
        # TCP/IP headers take ≈ 4% of a 1500-byte packet; the token bucket may add a little burst.
        assert 0.85 * 2e6 < slow < 1.08 * 2e6, slow
        assert 0.85 * 6e6 < fast < 1.08 * 6e6, fast
        shaper = MarkovShaper(link, MarkovChannel(PAPER_4MBPS, seed=0))
        for _ in range(5):
            state = shaper.step()
            want = "2Mbit" if state == 0 else "6Mbit"
            assert want in link.qdisc_show()
    listing = _namespaces()
    assert not any(n in listing for n in names)


@pytest.mark.skipif(bool(NETNS_SKIP), reason=f"network namespaces unavailable: {NETNS_SKIP}")
def test_shaped_link_cleans_up_after_error() -> None:
    from qsv_tools.channel.netem import ShapedLink

    with pytest.raises(RuntimeError, match="boom"):
        with ShapedLink(1e6) as link:
            names = (link.ends.edge_ns, link.ends.cloud_ns)
            raise RuntimeError("boom")
    assert not any(n in _namespaces() for n in names)
    with pytest.raises(ValueError):
        ShapedLink(0.0)
    with pytest.raises(ValueError, match="shaper"):
        ShapedLink(1e6, shaper="htb")
    with pytest.raises(ShapingError, match="netem"):
        with ShapedLink(1e6, rtt_s=0.02, shaper="tbf"):
            pass


def _netem_reason() -> str:
    if NETNS_SKIP:
        return NETNS_SKIP
    from qsv_tools.channel.netem import qdisc_available

    return "" if qdisc_available("netem", ["rate", "1mbit"]) else "this kernel has no sch_netem"


@pytest.mark.skipif(bool(_netem_reason()), reason=f"netem unavailable: {_netem_reason()}")
def test_netem_link_shapes_rate_with_delay() -> None:
    """netem path (rate + RTT): bulk goodput at the configured rate, and rate changes applied in place."""
    from qsv_tools.channel.netem import ShapedLink, measure_tcp_goodput

    with ShapedLink(2e6, rtt_s=0.02, shaper="netem") as link:
        assert "netem" in link.qdisc_show()
        got = measure_tcp_goodput(link, seconds=2.0)
        assert 0.85 * 2e6 < got < 1.08 * 2e6, got
        link.set_uplink_rate(6e6)
        assert "6Mbit" in link.qdisc_show()
