"""Run mosquitto from a generated config: start, wait until it listens, stop, kill -9, restart on the same ports.
Also ``DevBroker``: the secured development setup (dev CA, certificates, passwords, ACLs) in one directory."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.broker.certs import CertFiles, create_ca, issue_cert
from edge_runtime.broker.config import ListenerConfig, render_config
from edge_runtime.broker.fleet import Fleet, generate_credentials, render_acl
from edge_runtime.transport.mqtt_common import BrokerEndpoint

log = logging.getLogger(__name__)

MOSQUITTO = os.environ.get("QSV_MOSQUITTO", "/usr/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.02)


class MosquittoProcess:
    """One mosquitto process for a config file; stderr goes to ``<config dir>/mosquitto.log``."""

    def __init__(self, config_path: Path, ports: list[int], host: str = "127.0.0.1") -> None:
        self.config_path = Path(config_path)
        self.ports = ports
        self.host = host
        self.log_path = self.config_path.with_name("mosquitto.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mosquitto already running")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=logf, stderr=logf)
        try:
            for port in self.ports:
                wait_listening(self.host, port, timeout_s)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_path.read_text()[-2000:]}") from None
        log.info("mosquitto pid %d on %s", self.proc.pid, self.ports)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DevBroker:
    """A secured development broker in ``workdir``: TLS listener (mutual TLS + passwords + ACLs) and, for the
    quick demo and the side-by-side benchmark, a plain listener (passwords + ACLs, no TLS)."""

    workdir: Path
    fleet: Fleet
    host: str = "127.0.0.1"
    tls_port: int = 0
    plain_port: int = 0
    plain_auth: bool = True
    passwords: dict[str, str] = field(default_factory=dict)
    ca: CertFiles | None = None
    process: MosquittoProcess | None = None

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        self.ca = create_ca(pki)
        server = issue_cert(pki, self.ca, "broker", server=True, hosts=("localhost", self.host))
        for name in (*self.fleet.devices, *self.fleet.verifiers):
            issue_cert(pki, self.ca, name)
        self.passwords = generate_credentials(self.fleet, self.workdir)
        acl = self.workdir / "acl"
        acl.write_text(render_acl(self.fleet))
        self.tls_port = self.tls_port or free_port(self.host)
        self.plain_port = self.plain_port or free_port(self.host)
        passwd = self.workdir / "passwd"
        listeners = [
            ListenerConfig(self.tls_port, self.host, cafile=self.ca.cert, certfile=server.cert, keyfile=server.key,
                           password_file=passwd, acl_file=acl),
            ListenerConfig(self.plain_port, self.host, password_file=passwd if self.plain_auth else None,
                           acl_file=acl if self.plain_auth else None),
        ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(listeners))
        self.process = MosquittoProcess(conf, [self.tls_port, self.plain_port], self.host)

    def start(self) -> DevBroker:
        if self.process is None:
            self.prepare()
        assert self.process is not None
        self.process.start()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def endpoint(self, name: str, tls: bool = True) -> BrokerEndpoint:
        """Connection settings for a fleet member (device or verifier)."""
        pki = self.workdir / "pki"
        password = self.passwords.get(name) if (tls or self.plain_auth) else None
        if not tls:
            return BrokerEndpoint(self.host, self.plain_port, username=name if password else None, password=password)
        assert self.ca is not None
        return BrokerEndpoint(self.host, self.tls_port, username=name, password=password, ca_file=self.ca.cert,
                              cert_file=pki / f"{name}.crt", key_file=pki / f"{name}.key")
