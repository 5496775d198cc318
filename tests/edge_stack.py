"""Helpers for tests that run real processes (importable from tests as ``edge_stack``: pytest puts tests/ on
sys.path; tests/conftest.py builds its fixtures from them):

- ``dev_broker``: a real mosquitto with the secured development setup (``DevBroker``) for the test fleet;
- ``VerifierSpawner``: ``qsv verifier`` worker processes (a real PyTorch target, or the toy verifier of the test
  doubles) that a test may kill -9;
- ``board_config`` and ``EdgeProcess``: the board runtime ``qsv edge`` with a config pointed at a test broker;
- ``stop_cleanly``: SIGTERM and the exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOY_WORKER = ROOT / "tests" / "doubles" / "toy_worker.py"
FLEET_DEVICES = ("dev-a", "dev-b", "dev-c")
# ``qsv verifier`` options for the real small target: SmolLM2-135M on PyTorch (fp32, CPU, one intra-op thread so
# that the board and the workers of a test share a small CPU without oversubscribing it)
SMALL_VERIFIER = ("--model", "smollm2", "--dtype", "fp32", "--device", "cpu", "--threads", "1")


def dev_broker(workdir: Path, insecure_dev: bool = False, plain_auth: bool = True):  # noqa: ANN201 - DevBroker (lazy)
    """A started secured broker for the fleet ``dev-a``, ``dev-b``, ``dev-c`` and ``verifier`` (see ``DevBroker``);
    ``broker.process.kill()`` / ``.start()`` kill -9 and restart it on the same ports with the same config."""
    from qsv_tools.broker.fleet import Fleet
    from qsv_tools.broker.process import DevBroker

    return DevBroker(workdir, Fleet(FLEET_DEVICES, ("verifier",)), plain_auth=plain_auth,
                     insecure_dev=insecure_dev).start()


class VerifierSpawner:
    """Starts verifier worker processes (``qsv verifier``'s command line) that a test may kill -9; ``close`` kills
    what is still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def spawn(self, broker, *worker_ids: str, tls: bool = True, idle_timeout: float = 30.0,  # noqa: ANN001
              verifier: tuple[str, ...] = ()) -> list[subprocess.Popen]:
        """Start the workers in parallel and return their processes once all are subscribed (``verifier``:
        ``qsv verifier``'s handler options, e.g. ``SMALL_VERIFIER`` or ``("--random-model", "tiny")``; empty: the
        toy verifier of the test doubles, through ``tests/doubles/toy_worker.py``)."""
        ep = broker.endpoint("verifier", tls)
        pw = self.workdir / "verifier.pw"
        pw.write_text(broker.passwords["verifier"])
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        started = []
        for worker_id in worker_ids:
            program = ["-m", "cloud_verifier.mqtt_service", *verifier] if verifier else [str(TOY_WORKER)]
            cmd = [sys.executable, *program, "--worker-id", worker_id,
                   "--broker", ep.url, "--idle-timeout", str(idle_timeout),
                   "--log-level", "WARNING"]
            if ep.username:
                cmd += ["--username", ep.username, "--password-file", str(pw)]
            if ep.tls:
                cmd += ["--ca", str(ep.ca_file), "--cert", str(ep.cert_file), "--key", str(ep.key_file)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            with self._lock:
                self.procs.append(proc)
            started.append(proc)
        for worker_id, proc in zip(worker_ids, started, strict=True):
            line = proc.stdout.readline() if proc.stdout else ""
            while line.startswith("PRECISION "):  # a PyTorch worker reports its precision first
                line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("READY"):
                proc.kill()
                raise RuntimeError(f"verifier worker {worker_id} did not start (exit {proc.poll()})")
        return started

    def close(self) -> None:
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)


def board_config(path: Path, broker, export, device: str = "dev-b", static_len: int = 3,  # noqa: ANN001
                 variant: str = "model.onnx", temperature: float = 0.8) -> Path:
    """A board config for ``device`` (mutual TLS to ``broker``, credentials in files) with the ONNX drafter
    ``export``'s ``variant`` file and a static controller (L = ``static_len``, ℓ = 240), written to ``path``."""
    ep = broker.endpoint(device, tls=True)
    secrets = path.parent / f"{device}-secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "username").write_text(device)
    (secrets / "password").write_text(ep.password)
    config = {
        "schema_version": 1,
        "device": {"id": device, "board": "x86-dev"},
        "broker": {"url": ep.url, "tls": {"enabled": True, "ca_file": str(ep.ca_file), "cert_file": str(ep.cert_file),
                                          "key_file": str(ep.key_file)},
                   "credentials": {"username_file": str(secrets / "username"),
                                   "password_file": str(secrets / "password")}},
        "model": {"onnx_path": str(export.directory / variant), "onnxruntime": {"intra_op_threads": 1}},
        "controller": {"mode": "static", "static_L": static_len, "static_ell": 240},
        "sampling": {"temperature": temperature, "seed": 0},
        "logging": {"level": "INFO", "file": f"logs/{device}.log"},  # relative: next to the config file
    }
    path.write_text(yaml.safe_dump(config))
    return path


class EdgeProcess:
    """``python -m qsv edge --config …`` with its stdout and stderr lines collected by threads (so a runtime that
    logs a lot never blocks on a full pipe)."""

    def __init__(self, config: Path, socket_path: Path, *extra: str, feedback_timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "qsv", "edge", "--config", str(config), "--socket",
                                      str(socket_path), "--feedback-timeout", str(feedback_timeout), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err_lines), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:  # noqa: ANN001
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        """Everything the runtime wrote to stderr so far (all of it once the process has ended)."""
        if self.proc.poll() is not None:
            for reader in self._readers:
                reader.join(5)
        return "\n".join(self.err_lines)

    def wait_line(self, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"qsv edge exited {self.proc.returncode}: {self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from qsv edge; stdout so far: {self.lines}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and the exit status (the runtime's clean stop)."""
        return stop_cleanly(self.proc, timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_cleanly(proc: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM ``proc`` (if it still runs) and return its exit status; a process that does not end in
    ``timeout_s`` is killed and the timeout raised."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
