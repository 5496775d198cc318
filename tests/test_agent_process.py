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
