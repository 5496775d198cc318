"""Measure what the tc-shaped veth link between two fresh namespaces delivers (bulk TCP), per configured rate.

    python -m experiments.link_check --rates 2e6,6e6,350e3 --seconds 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from qsv_tools.channel.netem import ShapedLink, measure_tcp_goodput, netns_available
    from qsv_wire.logs import add_logging_args, setup_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="2e6,6e6", help="comma list of uplink rates in bit/s")
    p.add_argument("--seconds", type=float, default=3.0, help="transfer time per rate")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args)
    ok, reason = netns_available()
    if not ok:
        raise SystemExit(f"cannot shape a link here: {reason}")
    rates = [float(r) for r in args.rates.split(",")]
    with ShapedLink(rates[0]) as link:
        print("| configured (bit/s) | measured TCP goodput (bit/s) | ratio |")
        print("|---|---|---|")
        for r in rates:
            link.set_uplink_rate(r)
            got = measure_tcp_goodput(link, seconds=args.seconds)
            print(f"| {r:,.0f} | {got:,.0f} | {got / r:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
