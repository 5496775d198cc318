"""``qsv certs`` (dev CA + per-client certificates) and ``qsv broker`` (generate the secured mosquitto setup for a
fleet and run it)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path

from edge_runtime.broker.certs import create_ca, issue_cert
from edge_runtime.broker.fleet import Fleet
from edge_runtime.broker.process import DevBroker
from edge_runtime.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.broker")


def _fleet(args: argparse.Namespace) -> Fleet:
    if args.fleet:
        return Fleet.load(args.fleet)
    return Fleet(tuple(args.device_id or ["board-01"]), tuple(args.verifier or ["verifier"]))


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=Path, help="YAML with 'devices' and 'verifiers' lists")
    p.add_argument("--device-id", action="append", help="device id (repeatable; instead of --fleet)")
    p.add_argument("--verifier", action="append", help="verifier client name (repeatable; default 'verifier')")


def certs_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv certs",
                                description="Create a development CA and certificates for the broker and a fleet.")
    p.add_argument("--out", type=Path, required=True, help="output directory (ca.crt, <name>.crt/.key)")
    p.add_argument("--host", action="append", default=None, help="broker host names / IPs for the server cert SAN")
    _fleet_args(p)
    add_logging_args(p, default="INFO")
    args = p.parse_args(argv)
    setup_logging(args)
    fleet = _fleet(args)
    ca = create_ca(args.out)
    issue_cert(args.out, ca, "broker", server=True, hosts=tuple(args.host or ["localhost", "127.0.0.1"]))
    for name in (*fleet.devices, *fleet.verifiers):
        issue_cert(args.out, ca, name)
    log.info("certificates for %d clients in %s", len(fleet.devices) + len(fleet.verifiers), args.out)
    return 0


def broker_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv broker",
                                description="Generate a secured mosquitto setup (mutual TLS, per-client passwords, "
                                            "per-device ACLs) for a fleet and run the broker in the foreground.")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls-port", type=int, default=8883)
    p.add_argument("--plain-port", type=int, default=1883, help="plain listener (still passwords + ACLs)")
    p.add_argument("--generate-only", action="store_true", help="write the files and exit")
    _fleet_args(p)
    add_logging_args(p, default="INFO")
    args = p.parse_args(argv)
    setup_logging(args)
    broker = DevBroker(args.workdir, _fleet(args), args.host, args.tls_port, args.plain_port)
    broker.prepare()
    summary = {}
    for name in (*broker.fleet.devices, *broker.fleet.verifiers):
        ep = broker.endpoint(name, True)
        summary[name] = {"host": ep.host, "tls_port": ep.port, "plain_port": broker.plain_port, "username": name,
                         "ca": str(ep.ca_file), "cert": str(ep.cert_file), "key": str(ep.key_file),
                         "password": "see credentials.json"}
    (args.workdir / "endpoints.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("config %s, credentials %s", args.workdir / "mosquitto.conf", args.workdir / "credentials.json")
    if args.generate_only:
        return 0
    broker.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("mosquitto running (TLS %d, plain %d); Ctrl-C to stop", broker.tls_port, broker.plain_port)
    stop.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(broker_main())
