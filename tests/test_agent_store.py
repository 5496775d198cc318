"""Config store (atomic replace, rollback, crash recovery) and runtime supervisor with trivial real subprocesses."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from edge_runtime.config import board_config_path
from edge_runtime.flashing.store import ConfigStore, StoreError
from edge_runtime.flashing.supervisor import RuntimeSupervisor, build_command

CONFIG_A = board_config_path("x86-dev").read_bytes()
CONFIG_B = board_config_path("generic-aarch64").read_bytes()


def test_write_keeps_previous_and_leaves_no_temporaries(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "b" / "board.yaml")
    assert store.active() is None and store.active_identity() is None
    store.write(CONFIG_A)
    assert store.active() == CONFIG_A and store.previous() is None
    ident = store.write(CONFIG_B)
    assert store.active() == CONFIG_B and store.previous() == CONFIG_A and ident.size == len(CONFIG_B)
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["board.yaml", "board.yaml.prev"]
    assert store.path.stat().st_mode & 0o777 == 0o644


def test_rollback_refuses_an_invalid_previous(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "board.yaml")
    store.write(CONFIG_A)
    with pytest.raises(StoreError, match="no previous config"):
        store.rollback()
    store.prev_path.write_bytes(b"schema_version: 2\n")
    with pytest.raises(StoreError, match="previous config is invalid.*schema_version"):
        store.rollback()
    assert store.active() == CONFIG_A


def test_failed_rename_removes_the_temporary_and_keeps_the_active(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "board.yaml")
    store.write(CONFIG_A)
    store.prev_path.mkdir()  # renaming a file over a (non-empty) directory fails, as on a read-only or full disk
    (store.prev_path / "x").write_text("x")
    with pytest.raises(StoreError, match="writing"):
        store.write(CONFIG_B)
    assert not list(tmp_path.glob(".board.yaml.*.tmp"))
    assert store.active() == CONFIG_A


def test_unreadable_active_config_is_a_store_error(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "board.yaml")
    store.path.mkdir()
    with pytest.raises(StoreError):
        store.write(CONFIG_A)


def test_recover_removes_temporaries_and_restores_a_broken_active(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "board.yaml")
    store.write(CONFIG_A)
    store.write(CONFIG_B)
    (tmp_path / ".board.yaml.abc123.tmp").write_bytes(CONFIG_B[:10])
    assert store.recover() == ["removed stale temporary .board.yaml.abc123.tmp"]
    assert store.active() == CONFIG_B
    store.path.write_bytes(b"broken: [")  # e.g. edited by hand
    assert store.recover() == ["active config invalid: restored board.yaml.prev"]
    assert store.active() == CONFIG_A
    store.path.unlink()
    assert store.recover() == ["active config missing: restored board.yaml.prev"]


# ----------------------------------------------------------------------------------------------------------- supervisor
def poll_until(sup: RuntimeSupervisor, predicate, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.poll()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("supervisor did not reach the expected state")


def test_build_command_substitutes_config(tmp_path: Path) -> None:
    assert build_command("run --config {config} -v 'a b'", tmp_path / "c.yaml") == [
        "run", "--config", str(tmp_path / "c.yaml"), "-v", "a b"]


def test_restart_terminates_and_starts_again() -> None:
    sup = RuntimeSupervisor([sys.executable, "-c", "import time; time.sleep(60)"], stop_timeout_s=2)
    sup.start()
    first = sup.pid
    assert first is not None
    sup.request_restart()
    poll_until(sup, lambda: sup.pid not in (None, first))
    assert sup.starts == 2
    sup.stop()
    assert sup.pid is None


def test_runtime_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    sup = RuntimeSupervisor([sys.executable, "-c", code], stop_timeout_s=0.3)
    sup.start()
    first = sup.pid
    time.sleep(0.3)  # let it install the handler
    start = time.monotonic()
    sup.request_restart()
    poll_until(sup, lambda: sup.pid not in (None, first))
    assert time.monotonic() - start >= 0.3  # SIGTERM was ignored for the whole grace period
    sup.stop()


def test_crashed_runtime_is_restarted_with_backoff() -> None:
    sup = RuntimeSupervisor([sys.executable, "-c", "import sys; sys.exit(3)"], backoff_min_s=0.05, backoff_max_s=0.2)
    sup.start()
    poll_until(sup, lambda: sup.starts >= 4)
    assert sup.proc is not None
    sup.stop()


def test_disabled_supervisor_does_nothing() -> None:
    sup = RuntimeSupervisor(None)
    sup.start()
    sup.request_restart()
    sup.poll()
    assert not sup.enabled and sup.pid is None and sup.starts == 0
