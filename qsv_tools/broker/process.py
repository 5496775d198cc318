"""Run mosquitto from a generated config: start, wait until it listens, stop, kill -9, restart on the same ports.
mosquitto gets SIGTERM from the kernel when the process that started it dies (PR_SET_PDEATHSIG), so a ``kill -9``
of ``qsv broker`` (or of a test run) leaves no orphaned broker holding the ports. The death signal is tied to the
thread that forks, so every mosquitto is forked by one spawner thread that lives as long as the process: a broker
(re)started from a short-lived thread (a test's fault injector) is not stopped when that thread ends.
Also ``DevBroker``: the secured development setup (dev CAs, certificates, passwords, ACLs) in one directory."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qsv_tools.broker.certs import CertFiles, create_fleet_pki
from qsv_tools.broker.config import ListenerConfig, render_config
from qsv_tools.broker.fleet import (
    Fleet,
    device_read_topics,
    generate_credentials,
    generate_share_group,
    render_acl,
)
from qsv_tools.broker.plugin import DEV_PACKAGES, build_auth_plugin
from qsv_wire.mqtt_common import BrokerEndpoint
from qsv_wire.procutil import die_with_parent
from qsv_wire.topics import TOPIC_PREFIX

log = logging.getLogger(__name__)

MOSQUITTO = os.environ.get("QSV_MOSQUITTO", "/usr/sbin/mosquitto")
_spawner: tuple[int, ThreadPoolExecutor] | None = None  # (pid that created it, executor): not inherited by forks
_spawner_lock = threading.Lock()


def _spawn_tied(cmd: list[str], **kwargs: object) -> subprocess.Popen:
    """``Popen(cmd, preexec_fn=die_with_parent())`` forked by the process-lifetime spawner thread."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():
            _spawner = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="qsv-mosquitto-spawner"))
        executor = _spawner[1]
    return executor.submit(subprocess.Popen, cmd, preexec_fn=die_with_parent(), **kwargs).result()


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

    def __init__(self, config_path: Path, ports: list[int], host: str = "127.0.0.1",
                 die_with_parent: bool = True) -> None:
        """``die_with_parent``: the kernel stops mosquitto (SIGTERM) when this process dies, also by SIGKILL."""
        self.config_path = Path(config_path)
        self.ports = ports
        self.host = host
        self.die_with_parent = die_with_parent
        self.log_path = self.config_path.with_name("mosquitto.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mosquitto already running")
        cmd = [MOSQUITTO, "-c", str(self.config_path)]
        with open(self.log_path, "ab") as logf:
            if self.die_with_parent:
                self.proc = _spawn_tied(cmd, stdout=logf, stderr=logf)
            else:
                self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf)
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
    """A secured development broker in ``workdir``, three listeners:

    - devices (``tls_port``): mutual TLS against the device CA, plus the device's username and password (the
      devices' password file); the auth plugin (qsv_auth_plugin.c, built into ``workdir``) refuses a username that is
      not the certificate's CN, and a client id that is neither the username nor ``<username>:<role>``, at CONNECT
      (nobody can connect under another client's id; a device's runtime and its bench connect side by side), and
      every SUBSCRIBE outside the device's own readable topics (SUBACK 0x87); device ACL only. Without the plugin
      (no compiler or headers: a WARNING) the certificate's CN is the username, a username or password the client
      sends is ignored, and the username is the client id (one connection per device: a second one takes the first
      over).
    - verifiers (``verifier_port``): mutual TLS against the verifier CA (device certificates are refused in the
      handshake); CN = username; client ids are free, so one verifier identity can run many workers; verifier ACL.
    - plain (``plain_port``), only with ``insecure_dev``: no TLS, passwords + the combined ACL (``plain_auth``
      False: anonymous, no ACL). Client ids are not bound there: any client of that listener can take over any
      session, also on the TLS listeners. For the quick demo (``--no-tls``) and the side-by-side benchmark only.

    ``share_group``: the verifiers' secret shared-subscription group (pass it to ``qsv verifier --group``)."""

    workdir: Path
    fleet: Fleet
    host: str = "127.0.0.1"
    tls_port: int = 0
    plain_port: int = 0
    plain_auth: bool = True
    insecure_dev: bool = False
    verifier_port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    ca: CertFiles | None = None
    verifier_ca: CertFiles | None = None
    share_group: str = ""
    auth_plugin: Path | None = None  # set by prepare(): the plugin the devices' listener loads, None: fallback
    process: MosquittoProcess | None = None

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = create_fleet_pki(self.workdir / "pki", self.fleet.devices, self.fleet.verifiers,
                               hosts=("localhost", self.host))
        self.ca, self.verifier_ca = pki.ca, pki.verifier_ca
        self.passwords = generate_credentials(self.fleet, self.workdir)
        group_file = self.workdir / "share-group"  # kept across restarts, like the CAs: running workers stay valid
        if not self.share_group and group_file.exists():
            self.share_group = group_file.read_text().strip()
        self.share_group = self.share_group or generate_share_group()
        fd = os.open(group_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)
            f.write(self.share_group + "\n")
        acls = {"acl": render_acl(self.fleet), "acl-devices": render_acl(self.fleet, verifiers=False),
                "acl-verifiers": render_acl(self.fleet, devices=False)}
        for name, text in acls.items():
            (self.workdir / name).write_text(text)
        self.tls_port = self.tls_port or free_port(self.host)
        self.verifier_port = self.verifier_port or free_port(self.host)
        server = pki.server
        listeners = [
            self._device_listener(ListenerConfig(self.tls_port, self.host, cafile=pki.ca.cert, certfile=server.cert,
                                                 keyfile=server.key, acl_file=self.workdir / "acl-devices")),
            ListenerConfig(self.verifier_port, self.host, cafile=pki.verifier_ca.cert, certfile=server.cert,
                           keyfile=server.key, acl_file=self.workdir / "acl-verifiers", use_identity_as_username=True),
        ]
        if self.insecure_dev:
            self.plain_port = self.plain_port or free_port(self.host)
            auth = self.plain_auth
            listeners.append(ListenerConfig(self.plain_port, self.host,
                                            password_file=self.workdir / "passwd" if auth else None,
                                            acl_file=self.workdir / "acl" if auth else None))
        else:
            self.plain_port = 0
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(listeners))
        self.process = MosquittoProcess(conf, [lc.port for lc in listeners], self.host)

    def _device_listener(self, listener: ListenerConfig) -> ListenerConfig:
        """With the auth plugin: certificate + username (= its CN, checked by the plugin) + password (the devices'
        password file), SUBSCRIBE limited to the device's own readable topics. Without it (no compiler or headers):
        the certificate is the identity (``use_identity_as_username``), with the two gaps the WARNING names."""
        build = build_auth_plugin(self.workdir)
        self.auth_plugin = build.path
        if build.path is None:
            log.warning("mosquitto auth plugin not available, missing: %s. The devices' listener falls back to "
                        "certificate-as-identity: a device's SUBSCRIBE to $share/..., $-topics, wildcards or other "
                        "devices' topics is granted (SUBACK 0x01; the read ACLs still deliver it nothing) instead of "
                        "refused (0x87), and a username that is not the certificate's CN is ignored instead of "
                        "refused at CONNECT; a device has one connection at a time (its client id is its username). "
                        "Install the C compiler and headers (apt-get install gcc %s) to close these gaps.",
                        build.missing, DEV_PACKAGES)
            return dataclasses.replace(listener, use_identity_as_username=True, use_username_as_clientid=True)
        assert self.passwords and (self.workdir / "passwd").is_file()
        device_passwd = self.workdir / "passwd-devices"  # the hashed lines of the devices only
        devices = set(self.fleet.devices)
        lines = [line for line in (self.workdir / "passwd").read_text().splitlines()
                 if line.split(":", 1)[0] in devices]
        fd = os.open(device_passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)
            f.write("".join(line + "\n" for line in lines))
        opts = (("topic_prefix", TOPIC_PREFIX + "/"), ("read_topics", ",".join(device_read_topics())))
        # no use_username_as_clientid: the plugin binds client ids to "<username>" / "<username>:<role>"
        return dataclasses.replace(listener, password_file=device_passwd, plugin=build.path, plugin_opts=opts)

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
        """Connection settings for a fleet member (device or verifier): with TLS its certificate (whose CN is its
        username) on the devices' or the verifiers' listener; without, the plain listener (``insecure_dev`` only)."""
        pki = self.workdir / "pki"
        if not tls:
            if not self.insecure_dev:
                raise ValueError("this broker has no plain listener (DevBroker(insecure_dev=True) opts in)")
            password = self.passwords.get(name) if self.plain_auth else None
            return BrokerEndpoint(self.host, self.plain_port, username=name if password else None, password=password)
        assert self.ca is not None
        port = self.verifier_port if name in self.fleet.verifiers else self.tls_port
        return BrokerEndpoint(self.host, port, username=name, password=self.passwords.get(name),
                              ca_file=self.ca.cert, cert_file=pki / f"{name}.crt", key_file=pki / f"{name}.key")
