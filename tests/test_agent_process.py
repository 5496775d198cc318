"""The board agent as a real process (``python -m edge_runtime.flashing.agent``) on a socat pty pair: round trip with
runtime restart, SIGKILL during the write and mid-transfer (the board keeps a valid config), local rollback."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from edge_runtime.config import board_config_path, validate_config_bytes
from edge_runtime.flashing.agent import main as agent_main
from edge_runtime.flashing.flasher import Flasher, FlashError
from edge_runtime.flashing.framing import BEGIN_BODY, DATA_OFFSET, FrameType
from edge_runtime.flashing.ptypair import PtyPair
from edge_runtime.flashing.store import ConfigStore

REPO = Path(__file__).resolve().parent.parent
CONFIG_A = board_config_path("x86-dev").read_bytes()
CONFIG_B = board_config_path("raspberry-pi-5").read_bytes()
# A trivial "edge runtime": records its pid and the sha256 of the config it was started with, then idles.
RUNTIME = """\
import hashlib, os, sys, time
config, log = sys.argv[1], sys.argv[2]
digest = hashlib.sha256(open(config, "rb").read()).hexdigest()
with open(log, "a") as fh:
    fh.write(f"{os.getpid()} {digest}\\n")
time.sleep(600)
"""


class AgentProcess:
    def __init__(self, port: str, config_path: Path, log_path: Path, *extra: str):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.flashing.agent", port, "--config", str(config_path),
             "--log-level", "DEBUG", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    with PtyPair() as ports:
        yield ports


@pytest.fixture
def host(pty_pair: tuple[str, str]) -> Iterator[serial.Serial]:
    ser = serial.Serial(pty_pair[1], timeout=0.02)
    yield ser
    ser.close()


def wait_ready(host: serial.Serial) -> Flasher:
    flasher = Flasher(host, timeout=0.3, retries=60)  # agent start-up (imports) takes a moment on a loaded machine
    flasher.hello()
    flasher.retries = 3
    return flasher


def wait_for(predicate, timeout: float = 15.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def runtime_starts(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    return [(int(p), h) for p, h in (line.split() for line in path.read_text().splitlines())]


def temporaries(directory: Path) -> list[bytes]:
    out = []
    for tmp in directory.glob(".board.yaml.*.tmp"):
        try:
            out.append(tmp.read_bytes())
        except FileNotFoundError:  # renamed meanwhile
            pass
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a terminated child the agent has not reaped yet is a zombie: count it as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_round_trip_restarts_the_runtime(pty_pair: tuple[str, str], host: serial.Serial, tmp_path: Path) -> None:
    cfg = tmp_path / "board" / "board.yaml"
    starts = tmp_path / "runtime-starts.txt"
    script = tmp_path / "fake_runtime.py"
    script.write_text(RUNTIME)
    cmd = f"{sys.executable} {script} {{config}} {starts}"
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log", "--runtime-cmd", cmd, "--stop-timeout", "2")
    try:
        flasher = wait_ready(host)
        res = flasher.flash(CONFIG_A)
        assert res.verified and res.outcome == "applied"
        wait_for(lambda: len(runtime_starts(starts)) == 1)
        (pid_a, hash_a), = runtime_starts(starts)
        assert hash_a == hashlib.sha256(CONFIG_A).hexdigest()
        assert flasher.flash(CONFIG_B).verified
        wait_for(lambda: len(runtime_starts(starts)) == 2)
        pid_b, hash_b = runtime_starts(starts)[1]
        assert hash_b == hashlib.sha256(CONFIG_B).hexdigest() and pid_b != pid_a
        wait_for(lambda: not alive(pid_a))
        assert alive(pid_b)
        assert flasher.flash(CONFIG_B).outcome == "unchanged"
        time.sleep(0.2)
        assert len(runtime_starts(starts)) == 2  # no restart without a change
        assert flasher.read_hash() == (hashlib.sha256(CONFIG_B).hexdigest(), len(CONFIG_B))
    finally:
        agent.stop()
    wait_for(lambda: not alive(pid_b))  # the agent stops its runtime on SIGTERM


def test_sigkill_during_the_write_keeps_the_previous_config(
    pty_pair: tuple[str, str], host: serial.Serial, tmp_path: Path
) -> None:
    cfg = tmp_path / "board" / "board.yaml"
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log")
    try:
        assert wait_ready(host).flash(CONFIG_A).verified
    finally:
        agent.stop()
    # the new config is fully written to its temporary file and fsynced; the agent dies before the rename
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log", "--fault-delay", "30")
    outcome: dict[str, object] = {}

    def flash_b() -> None:
        try:
            outcome["result"] = Flasher(host, timeout=1.5, retries=1).flash(CONFIG_B)
        except FlashError as exc:
            outcome["error"] = exc

    try:
        wait_ready(host)
        thread = threading.Thread(target=flash_b)
        thread.start()
        wait_for(lambda: CONFIG_B in temporaries(cfg.parent))  # (the first temporary is the .prev copy of A)
        agent.kill()
        thread.join(10)
    finally:
        agent.stop()
    assert "no usable answer" in str(outcome["error"])  # the host reports that the board went silent on COMMIT
    assert "COMMIT" in str(outcome["error"])
    assert cfg.read_bytes() == CONFIG_A and validate_config_bytes(cfg.read_bytes()) == []
    # a restarted agent cleans up the stale temporary and reports the previous config
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log")
    try:
        flasher = wait_ready(host)
        assert flasher.read_hash() == (hashlib.sha256(CONFIG_A).hexdigest(), len(CONFIG_A))
        assert not any(cfg.parent.glob(".board.yaml.*.tmp"))
        assert flasher.flash(CONFIG_B).verified
    finally:
        agent.stop()
    assert "removed stale temporary" in (tmp_path / "agent.log").read_text()


def test_sigkill_mid_transfer_keeps_the_previous_config(
    pty_pair: tuple[str, str], host: serial.Serial, tmp_path: Path
) -> None:
    cfg = tmp_path / "board" / "board.yaml"
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log")
    try:
        flasher = wait_ready(host)
        flasher.flash(CONFIG_A)
        flasher.request(FrameType.BEGIN, BEGIN_BODY.pack(len(CONFIG_B), 0, hashlib.sha256(CONFIG_B).digest()))
        flasher.request(FrameType.DATA, DATA_OFFSET.pack(0) + CONFIG_B[:300])
        agent.kill()
    finally:
        agent.stop()
    assert cfg.read_bytes() == CONFIG_A
    agent = AgentProcess(pty_pair[0], cfg, tmp_path / "agent.log")
    try:
        flasher = wait_ready(host)
        assert flasher.read_hash()[0] == hashlib.sha256(CONFIG_A).hexdigest()
        with pytest.raises(FlashError, match="NO_TRANSFER"):  # the half transfer died with the process
            flasher.request(FrameType.COMMIT)
    finally:
        agent.stop()


def test_local_rollback_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "board.yaml"
    assert agent_main(["--rollback", "--config", str(cfg)]) == 1  # nothing to roll back to
    cfg.write_bytes(CONFIG_B)
    (tmp_path / "board.yaml.prev").write_bytes(CONFIG_A)
    assert agent_main(["--rollback", "--config", str(cfg)]) == 0
    assert hashlib.sha256(CONFIG_A).hexdigest() in capsys.readouterr().out
    assert cfg.read_bytes() == CONFIG_A and (tmp_path / "board.yaml.prev").read_bytes() == CONFIG_B


# ------------------------------------------------------------------------------- kill -9 at every step of a write
CONFIG_P = board_config_path("generic-aarch64").read_bytes()  # the rollback target before the write


def wait_log(path: Path, text: str, timeout: float = 15.0) -> None:
    wait_for(lambda: path.exists() and text in path.read_text(errors="replace"), timeout)


@pytest.mark.parametrize(("step", "active", "previous"), [
    ("written", CONFIG_A, CONFIG_P),  # new config in an fsynced temporary, not yet read back
    ("verified", CONFIG_A, CONFIG_P),  # temporary read back and checked; .prev not touched yet
    ("rotated", CONFIG_A, CONFIG_A),  # .prev is now (a link to) the current config; board.yaml not replaced yet
    ("renamed", CONFIG_B, CONFIG_A),  # board.yaml replaced, directory not fsynced yet
])
def test_sigkill_at_each_write_step_leaves_valid_active_and_previous(
    step: str, active: bytes, previous: bytes, pty_pair: tuple[str, str], host: serial.Serial, tmp_path: Path
) -> None:
    cfg = tmp_path / "board" / "board.yaml"
    store = ConfigStore(cfg)
    store.write(CONFIG_P)
    store.write(CONFIG_A)
    log_path = tmp_path / "agent.log"
    agent = AgentProcess(pty_pair[0], cfg, log_path, "--fault-delay", "30", "--fault-step", step)
    errors: list[Exception] = []

    def flash_b() -> None:
        try:
            Flasher(host, timeout=1.0, retries=1).flash(CONFIG_B)
        except FlashError as exc:
            errors.append(exc)

    try:
        wait_ready(host)
        thread = threading.Thread(target=flash_b)
        thread.start()
        wait_log(log_path, f"at step {step}")
        agent.kill()
        thread.join(10)
    finally:
        agent.stop()
    assert errors and "COMMIT" in str(errors[0])  # the board went silent during the write
    assert cfg.read_bytes() == active and store.prev_path.read_bytes() == previous
    assert validate_config_bytes(cfg.read_bytes()) == [] and validate_config_bytes(previous) == []
    assert all(action.startswith("removed stale temporary") for action in store.recover())
    assert not list(cfg.parent.glob(".board.yaml.*.tmp"))
    assert cfg.read_bytes() == active  # recovery keeps a valid active config as it is


@pytest.mark.parametrize(("step", "active", "previous"), [
    ("rb-staged", CONFIG_A, CONFIG_P),  # both contents staged as temporaries, nothing renamed
    ("rb-current", CONFIG_P, CONFIG_P),  # the old previous is active; .prev not yet the old active
])
def test_sigkill_during_local_rollback_leaves_valid_files(step: str, active: bytes, previous: bytes,
                                                         tmp_path: Path) -> None:
    cfg = tmp_path / "board.yaml"
    store = ConfigStore(cfg)
    store.write(CONFIG_P)
    store.write(CONFIG_A)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = tmp_path / "rollback.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.flashing.agent", "--rollback", "--config",
                                 str(cfg), "--fault-delay", "30", "--fault-step", step],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_log(log_path, f"at step {step}")
        finally:
            proc.kill()
            proc.wait(5)
    assert cfg.read_bytes() == active and store.prev_path.read_bytes() == previous
    store.recover()
    assert not list(tmp_path.glob(".board.yaml.*.tmp")) and cfg.read_bytes() == active


# --------------------------------------------------------------------------------- no orphaned runtime after kill -9
def test_sigkill_of_the_agent_leaves_no_orphaned_runtime(tmp_path: Path) -> None:
    """5 x (agent supervising a runtime, kill -9 of the agent): the kernel stops each runtime (PR_SET_PDEATHSIG)."""
    cfg = tmp_path / "board" / "board.yaml"
    ConfigStore(cfg).write(CONFIG_A)  # a config exists, so the agent starts the runtime at once
    pids_file = tmp_path / "runtime-pids.txt"
    runtime = f"/bin/sh -c 'echo $$ >> {pids_file}; exec sleep 600' {{config}}"
    pids: list[int] = []
    for i in range(5):
        agent = AgentProcess("loop://", cfg, tmp_path / f"agent-{i}.log", "--runtime-cmd", runtime)
        try:
            wait_for(lambda n=i + 1: len(runtime_starts_pids(pids_file)) == n)
            pid = runtime_starts_pids(pids_file)[-1]
            assert alive(pid)
            agent.kill()
            pids.append(pid)
        finally:
            agent.stop()
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists() and alive(pid)] == []


def runtime_starts_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_agent_stops_the_runtime_group_on_restart(tmp_path: Path) -> None:
    """The runtime runs in its own process group; a restart signals the whole group (helpers it spawned too)."""
    from edge_runtime.flashing.supervisor import RuntimeSupervisor

    pids_file = tmp_path / "pids.txt"
    script = f"sleep 600 & echo $! >> {pids_file}; echo $$ >> {pids_file}; wait"
    sup = RuntimeSupervisor(["/bin/sh", "-c", script], stop_timeout_s=2)
    sup.start()
    try:
        wait_for(lambda: len(runtime_starts_pids(pids_file)) == 2)
        helper, shell = runtime_starts_pids(pids_file)
        assert os.getpgid(shell) == shell == sup.pid and os.getpgid(helper) == shell
    finally:
        sup.stop()
    wait_for(lambda: not alive(helper) and not alive(shell), timeout=10)
