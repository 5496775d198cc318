"""Shared pytest fixtures.

MQTT (issue 5): real mosquitto brokers started from generated configs on free ports.
- ``mosquitto_broker``: session-wide secured broker for the fleet ``dev-a``, ``dev-b``, ``dev-c`` and ``verifier``
  (mutual TLS, certificate CN = username = device client id, per-device ACLs; see ``DevBroker``), which also opts in
  to the plain listener (``insecure_dev``: passwords + ACLs, no TLS) for the tests that compare plain and TLS.
- ``mosquitto_broker_fresh``: one per test (for tests that kill or restart the broker), TLS only.
- ``mosquitto_open_broker``: one per test, plus a plain listener without authentication (for tests that inject
  traffic).
- ``one_torch_thread``: torch on one intra-op thread for a module of tiny models (threads cost more than they save
  there, ~10x on a loaded shared CPU); restored afterwards. Use: ``pytest.mark.usefixtures("one_torch_thread")``.
- ``spawn_verifier``: start verifier worker processes that the test may kill -9 (the toy verifier of
  ``tests/doubles/toy.py`` by default, through ``tests/doubles/toy_worker.py``); all are killed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edge_stack import VerifierSpawner, dev_broker


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    broker = dev_broker(tmp_path_factory.mktemp("mosquitto"), insecure_dev=True)
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_broker_fresh(tmp_path: Path) -> Iterator:
    broker = dev_broker(tmp_path / "mosquitto", insecure_dev=False)
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_open_broker(tmp_path: Path) -> Iterator:
    broker = dev_broker(tmp_path / "mosquitto", insecure_dev=True, plain_auth=False)
    yield broker
    broker.stop()


@pytest.fixture
def spawn_verifier(tmp_path: Path) -> Iterator[Callable[..., list]]:
    """``spawn_verifier(broker, "w1", "w2", tls=True, idle_timeout=30.0, verifier=())`` starts the workers in
    parallel and returns their processes once all are subscribed (``verifier``: ``qsv verifier``'s handler options,
    e.g. ``("--random-model", "tiny")`` for the PyTorch verifier; empty: the toy verifier of the test doubles); all
    are killed at teardown (``edge_stack.VerifierSpawner``)."""
    spawner = VerifierSpawner(tmp_path)
    yield spawner.spawn
    spawner.close()
