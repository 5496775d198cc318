"""Shared pytest fixtures.

MQTT (issue 5): real mosquitto brokers started from generated configs on free ports.
- ``mosquitto_broker``: session-wide secured broker for the fleet ``dev-a``, ``dev-b``, ``dev-c`` and ``verifier``
  (mutual TLS, certificate CN = username = device client id, per-device ACLs; see ``DevBroker``), which also opts in
  to the plain listener (``insecure_dev``: passwords + ACLs, no TLS) for the tests that compare plain and TLS.
- ``mosquitto_broker_fresh``: one per test (for tests that kill or restart the broker), TLS only.
- ``mosquitto_open_broker``: one per test, plus a plain listener without authentication (for tests that inject
  traffic).
- ``spawn_verifier``: start verifier worker processes that the test may kill -9 (the toy verifier of
  ``tests/doubles/toy.py`` by default, through ``tests/doubles/toy_worker.py``); all are killed at teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY_WORKER = ROOT / "tests" / "doubles" / "toy_worker.py"
FLEET_DEVICES = ("dev-a", "dev-b", "dev-c")


def _dev_broker(workdir: Path, insecure_dev: bool, plain_auth: bool = True):  # noqa: ANN202 - DevBroker (lazy)
    from qsv_tools.broker.fleet import Fleet
    from qsv_tools.broker.process import DevBroker

    return DevBroker(workdir, Fleet(FLEET_DEVICES, ("verifier",)), plain_auth=plain_auth,
                     insecure_dev=insecure_dev).start()


@pytest.fixture(scope="session")
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    broker = _dev_broker(tmp_path_factory.mktemp("mosquitto"), insecure_dev=True)
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_broker_fresh(tmp_path: Path) -> Iterator:
    broker = _dev_broker(tmp_path / "mosquitto", insecure_dev=False)
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_open_broker(tmp_path: Path) -> Iterator:
    broker = _dev_broker(tmp_path / "mosquitto", insecure_dev=True, plain_auth=False)
    yield broker
    broker.stop()


@pytest.fixture
def spawn_verifier(tmp_path: Path) -> Iterator[Callable[..., list[subprocess.Popen]]]:
    """``spawn_verifier(broker, "w1", "w2", tls=True, idle_timeout=30.0, verifier=())`` starts the workers in
    parallel and returns their processes once all are subscribed (``verifier``: ``qsv verifier``'s handler options,
    e.g. ``("--random-model", "tiny")`` for the PyTorch verifier; empty: the toy verifier of the test doubles)."""
    procs: list[subprocess.Popen] = []

    def spawn(broker, *worker_ids: str, tls: bool = True, idle_timeout: float = 30.0,  # noqa: ANN001
              verifier: tuple[str, ...] = ()) -> list[subprocess.Popen]:
        ep = broker.endpoint("verifier", tls)
        pw = tmp_path / "verifier.pw"
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
            procs.append(proc)
            started.append(proc)
        for worker_id, proc in zip(worker_ids, started, strict=True):
            line = proc.stdout.readline() if proc.stdout else ""
            while line.startswith("PRECISION "):  # a PyTorch worker reports its precision first
                line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("READY"):
                proc.kill()
                raise RuntimeError(f"verifier worker {worker_id} did not start (exit {proc.poll()})")
        return started

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
