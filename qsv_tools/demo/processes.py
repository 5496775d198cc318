"""The demo's processes: a mosquitto broker from a generated config and one verifier worker, always cleaned up.

``DemoStack`` is a context manager. Leaving it (normally, on an exception, on Ctrl-C, or on SIGTERM, which is
turned into KeyboardInterrupt while the stack is up) terminates the worker (then kills it after a grace period) and
stops the broker. Both also get SIGTERM from the kernel if this process dies without cleaning up (SIGKILL, the OOM
killer; Linux PR_SET_PDEATHSIG), so no broker and no verifier holding gigabytes of weights is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from qsv_tools.broker.fleet import Fleet
from qsv_tools.broker.process import MOSQUITTO, DevBroker, MosquittoProcess, wait_listening
from qsv_wire.mqtt_common import BrokerEndpoint
from qsv_wire.procutil import die_with_parent, signals_deferred

log = logging.getLogger(__name__)

DEVICE_ID = "board-01"
VERIFIER_USER = "verifier"
WORKER_ID = "worker-1"


class DemoStackError(RuntimeError):
    """The broker or the verifier worker did not come up."""


class _TiedMosquitto(MosquittoProcess):
    """mosquitto that the kernel stops when the demo dies without cleaning up (SIGKILL, OOM killer)."""

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mosquitto already running")
        with open(self.log_path, "ab") as logf:
            with signals_deferred():
                self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=logf, stderr=logf,
                                             preexec_fn=die_with_parent())
        try:
            for port in self.ports:
                wait_listening(self.host, port, timeout_s)
        except TimeoutError:
            self.stop()
            raise DemoStackError(f"mosquitto did not start; log:\n{self.log_path.read_text()[-2000:]}") from None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class DemoStack:
    """Broker (mutual TLS, certificate CN = username, per-device ACLs; or plain TCP with passwords + ACLs) and one
    verifier worker process. Entering starts the broker and spawns the worker; ``wait_ready`` waits until the worker
    serves (its model load can take minutes, so the caller may do other work first); ``spawn_edge`` starts
    ``qsv edge``."""

    def __init__(self, worker_args: list[str], tls: bool = True, cloud_threads: int = 1,
                 workdir: Path | None = None, ready_timeout_s: float = 900.0, host: str = "127.0.0.1") -> None:
        """``host``: the address the broker listens on (and its certificate names), e.g. a veth address."""
        self.host = host
        self.worker_args = worker_args
        self.tls = tls
        self.cloud_threads = cloud_threads
        self.ready_timeout_s = ready_timeout_s
        self._tmp: tempfile.TemporaryDirectory | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="qsv-demo-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.broker: DevBroker | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_log = self.workdir / "verifier.log"
        self.edge: subprocess.Popen | None = None
        self.edge_log = self.workdir / "edge.log"
        self.edge_socket = self.workdir / "edge.sock"
        self.worker_ready_s = 0.0
        self.preamble: list[str] = []
        self.spawned_at = 0.0
        self._old_sigterm: object = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> DemoStack:
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.start_broker()
            self.spawn_worker()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_broker(self) -> None:
        # without TLS (--no-tls) the demo asks for the plain listener explicitly: a mutual-TLS setup has none
        broker = DevBroker(self.workdir / "broker", Fleet((DEVICE_ID,), (VERIFIER_USER,)), host=self.host,
                           insecure_dev=not self.tls)
        broker.prepare()  # dev CA, certificates, passwords, ACL, mosquitto.conf
        assert broker.process is not None
        broker.process = _TiedMosquitto(broker.process.config_path, broker.process.ports, broker.host)
        self.broker = broker.start()
        log.info("mosquitto on %s (device TLS port %d, verifier TLS port %d, plain port %s)", self.broker.host,
                 self.broker.tls_port, self.broker.verifier_port, self.broker.plain_port or "none")

    def endpoint(self, name: str) -> BrokerEndpoint:
        if self.broker is None:
            raise DemoStackError("broker not started")
        return self.broker.endpoint(name, tls=self.tls)

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.tls_port if self.tls else self.broker.plain_port

    def spawn_worker(self) -> None:
        """Start ``python -m cloud_verifier.mqtt_service`` (the ``qsv verifier`` worker); see ``wait_ready``."""
        ep = self.endpoint(VERIFIER_USER)
        password_file = self.workdir / "verifier.pw"
        password_file.write_text(ep.password or "")
        os.chmod(password_file, 0o600)
        assert self.broker is not None
        cmd = [sys.executable, "-m", "cloud_verifier.mqtt_service", "--worker-id", WORKER_ID, "--broker", ep.url,
               "--username", VERIFIER_USER, "--password-file", str(password_file), "--group", self.broker.share_group,
               "--log-level", "WARNING", "--idle-timeout", "600", *self.worker_args]
        if ep.tls:
            cmd += ["--ca", str(ep.ca_file), "--cert", str(ep.cert_file), "--key", str(ep.key_file)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cloud_threads), MKL_NUM_THREADS=str(self.cloud_threads))
        self.spawned_at = time.monotonic()
        with open(self.worker_log, "ab") as err:
            with signals_deferred():
                self.worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                               preexec_fn=die_with_parent())

    def wait_ready(self) -> float:
        """Block until the worker printed READY (model loaded, subscribed); returns seconds since it was spawned.
        Lines it printed before (``PRECISION {json}``: the precision it chose and why) are kept in ``preamble``."""
        if self.worker is None:
            raise DemoStackError("worker not started")
        line = self._read_ready()
        if not line.startswith("READY"):
            code = self.worker.poll()
            raise DemoStackError(f"verifier worker did not start (exit {code}); its log:\n"
                                 f"{self.worker_log.read_text(errors='replace')[-3000:]}")
        self.worker_ready_s = time.monotonic() - self.spawned_at
        return self.worker_ready_s

    def precision_report(self) -> dict | None:
        """The worker's ``PRECISION`` line as a dict (precision, reason, pass_ms, rows, timings), if it printed one."""
        for line in self.preamble:
            if line.startswith("PRECISION "):
                try:
                    return json.loads(line.removeprefix("PRECISION "))
                except ValueError:
                    return None
        return None

    def _read_ready(self) -> str:
        """The worker's READY line, or '' on timeout / exit (reader thread: readline has no timeout)."""
        assert self.worker is not None and self.worker.stdout is not None
        box: list[str] = []

        def read() -> None:
            while True:
                line = self.worker.stdout.readline()
                if not line or line.startswith("READY"):
                    box.append(line)
                    return
                self.preamble.append(line.rstrip("\n"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + self.ready_timeout_s
        while reader.is_alive() and time.monotonic() < deadline:
            reader.join(0.2)  # short joins keep Ctrl-C responsive
        return box[0] if box else ""

    def write_board_config(self, onnx_path: Path, threads: int, controller: dict, sampling: dict) -> Path:
        """The board config ``qsv edge`` runs with: this stack's broker and the device's credentials (and client
        certificate with TLS), the exported drafter, the controller and sampling settings given."""
        import yaml

        ep = self.endpoint(DEVICE_ID)
        secrets = self.workdir / "edge-credentials"
        secrets.mkdir(exist_ok=True)
        (secrets / "username").write_text(ep.username or DEVICE_ID)
        (secrets / "password").write_text(ep.password or "")
        for name in ("username", "password"):
            os.chmod(secrets / name, 0o600)
        broker: dict = {"url": ep.url, "credentials": {"username_file": str(secrets / "username"),
                                                       "password_file": str(secrets / "password")}}
        if ep.tls:
            broker["tls"] = {"enabled": True, "ca_file": str(ep.ca_file), "cert_file": str(ep.cert_file),
                             "key_file": str(ep.key_file)}
        config = {"schema_version": 1, "device": {"id": DEVICE_ID, "board": "x86-dev"}, "broker": broker,
                  "model": {"onnx_path": str(onnx_path), "onnxruntime": {"intra_op_threads": threads}},
                  "controller": controller, "sampling": sampling}
        path = self.workdir / "board.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def spawn_edge(self, config: Path, timeout_s: float = 120.0) -> float:
        """Start ``qsv edge --config CONFIG`` (the board runtime) on this stack; returns once it serves its socket
        (seconds taken). Its log goes to ``edge.log``."""
        cmd = [sys.executable, "-m", "qsv", "edge", "--config", str(config), "--socket", str(self.edge_socket),
               "--feedback-timeout", "600", "--log-level", "WARNING"]
        t0 = time.monotonic()
        with open(self.edge_log, "ab") as err:
            with signals_deferred():
                self.edge = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                             preexec_fn=die_with_parent())
        assert self.edge.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.edge.stdout.readline()), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        while reader.is_alive() and time.monotonic() < deadline:
            reader.join(0.2)
        if not box or "serving on" not in box[0]:
            code = self.edge.poll()
            self.stop_edge()
            raise DemoStackError(f"qsv edge did not start (exit {code}); its log:\n"
                                 f"{self.edge_log.read_text(errors='replace')[-3000:]}")
        return time.monotonic() - t0

    @staticmethod
    def _stop(proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_edge(self) -> None:
        proc, self.edge = self.edge, None
        self._stop(proc)

    def stop_worker(self) -> None:
        proc, self.worker = self.worker, None
        self._stop(proc)

    def close(self) -> None:
        try:
            self.stop_edge()
            self.stop_worker()
        finally:
            if self.broker is not None:
                self.broker.stop()
                self.broker = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)  # type: ignore[arg-type]
                self._old_sigterm = None
