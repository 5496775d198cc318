"""``qsv certs`` (dev CA + per-client certificates) and ``qsv broker`` (generate the secured mosquitto setup for a
fleet and run it)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

from qsv_tools.broker.certs import PkiError, create_fleet_pki
from qsv_tools.broker.fleet import Fleet
from qsv_tools.broker.process import DevBroker
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.broker")


def _fleet(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Fleet:
    try:
        if args.fleet:
            return Fleet.load(args.fleet)
        return Fleet(tuple(args.device_id or ["board-01"]), tuple(args.verifier or ["verifier"]))
    except (OSError, ValueError) as exc:  # unreadable / malformed fleet file, invalid or duplicate names
        parser.error(f"--fleet: {exc}" if args.fleet else str(exc))


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=cliargs.readable_file, help="YAML with 'devices' and 'verifiers' lists")
    p.add_argument("--device-id", action="append", type=cliargs.client_id,
                   help="device id (repeatable; instead of --fleet)")
    p.add_argument("--verifier", action="append", type=cliargs.client_id,
                   help="verifier client name (repeatable; default 'verifier')")


def certs_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv certs",
                                description="Create the development CAs (devices, verifiers) and certificates for the "
                                            "broker and a fleet; a client certificate's CN is its MQTT username.")
    p.add_argument("--out", type=cliargs.output_dir, required=True,
                   help="output directory (ca.crt, verifier-ca.crt, broker.crt, <name>.crt/.key)")
    p.add_argument("--host", action="append", default=None, type=cliargs.host,
                   help="broker host names / IPs for the server cert SAN")
    _fleet_args(p)
    add_logging_args(p, default="INFO")
    args = p.parse_args(argv)
    setup_logging(args)
    fleet = _fleet(args, p)
    try:
        create_fleet_pki(args.out, fleet.devices, fleet.verifiers,
                         hosts=tuple(args.host or ["localhost", "127.0.0.1"]))
    except (OSError, PkiError) as exc:  # a runtime failure (disk, openssl), not bad input: exit 1
        log.error("%s", exc)
        return 1
    log.info("certificates for %d clients in %s", len(fleet.devices) + len(fleet.verifiers), args.out)
    return 0


def broker_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qsv broker",
                                description="Generate a secured mosquitto setup for a fleet (mutual TLS; a device's "
                                            "username must be its certificate's CN, then its password is checked, "
                                            "and it is its client id; per-device ACLs; SUBSCRIBE only to its own "
                                            "topics; a secret verifier group) and run the broker in the foreground. "
                                            "The devices' listener loads an auth plugin compiled into --workdir "
                                            "(needs cc and mosquitto-dev, libmosquitto-dev, libssl-dev; without "
                                            "them a WARNING and a weaker fallback).")
    p.add_argument("--workdir", type=cliargs.output_dir, required=True)
    p.add_argument("--host", default="127.0.0.1", type=cliargs.host)
    p.add_argument("--tls-port", type=cliargs.port, default=8883, help="the devices' listener (mutual TLS)")
    p.add_argument("--verifier-port", type=cliargs.port, default=8884,
                   help="the verifiers' listener (mutual TLS, verifier CA only)")
    p.add_argument("--insecure-dev", action="store_true",
                   help="also open a plain-TCP listener (passwords + ACLs, no TLS, client ids not bound to users): "
                        "development only, it undoes the certificate binding")
    p.add_argument("--plain-port", type=cliargs.port, default=1883,
                   help="the plain listener's port (with --insecure-dev)")
    p.add_argument("--generate-only", action="store_true", help="write the files and exit")
    _fleet_args(p)
    add_logging_args(p, default="INFO")
    args = p.parse_args(argv)
    ports = [args.tls_port, args.verifier_port] + ([args.plain_port] if args.insecure_dev else [])
    if len(set(ports)) != len(ports):
        p.error(f"the listeners need different ports, got {', '.join(map(str, ports))}")
    setup_logging(args)
    broker = DevBroker(args.workdir, _fleet(args, p), args.host, args.tls_port,
                       args.plain_port if args.insecure_dev else 0, insecure_dev=args.insecure_dev,
                       verifier_port=args.verifier_port)
    try:
        broker.prepare()
    except (OSError, PkiError) as exc:  # a runtime failure (disk, openssl), not bad input: exit 1
        log.error("%s", exc)
        return 1
    summary = {}
    for name in (*broker.fleet.devices, *broker.fleet.verifiers):
        ep = broker.endpoint(name, True)
        entry = {"host": ep.host, "tls_port": ep.port, "username": name, "ca": str(ep.ca_file),
                 "cert": str(ep.cert_file), "key": str(ep.key_file)}
        if name in broker.fleet.verifiers:
            entry["group"] = "see share-group"  # qsv verifier --group "$(cat share-group)"
        elif broker.auth_plugin is not None:  # the devices' listener checks the password too
            entry["password"] = "see credentials.json"
        if broker.insecure_dev:
            entry.update(plain_port=broker.plain_port, password="see credentials.json")
        summary[name] = entry
    (args.workdir / "endpoints.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("config %s, credentials %s, verifier group in %s", args.workdir / "mosquitto.conf",
             args.workdir / "credentials.json", args.workdir / "share-group")
    if args.generate_only:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        broker.start()  # mosquitto dies with this process (PR_SET_PDEATHSIG), also on kill -9
    except (OSError, RuntimeError) as exc:  # mosquitto missing, port in use: a runtime failure, exit 1
        log.error("mosquitto did not start: %s", exc)
        return 1
    try:
        plain = f", plain {broker.plain_port} (--insecure-dev)" if broker.insecure_dev else ""
        log.info("mosquitto pid %d running (devices TLS %d, verifiers TLS %d%s); Ctrl-C to stop",
                 broker.process.proc.pid if broker.process and broker.process.proc else -1, broker.tls_port,
                 broker.verifier_port, plain)
        while not stop.wait(0.5):
            if broker.process is None or broker.process.proc is None or broker.process.proc.poll() is not None:
                log.error("mosquitto exited; see %s", args.workdir / "mosquitto.log")
                return 1
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(broker_main())
