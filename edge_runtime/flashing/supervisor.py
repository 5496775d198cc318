"""Supervision of the edge runtime process by the board agent: start, restart on config change, restart after a crash.

Non-blocking: ``request_restart()`` only marks the wish; ``poll()`` (called from the agent's loop) sends SIGTERM,
escalates to SIGKILL after ``stop_timeout_s``, starts the new process, and restarts a crashed one with exponential
back-off. The agent therefore keeps answering the serial line while the runtime shuts down.

The runtime runs in its own session / process group (signals go to the whole group, so helpers it spawned stop with
it) and gets ``SIGTERM`` from the kernel when the agent dies without cleaning up (SIGKILL, OOM killer:
``qsv_wire.procutil.die_with_parent``), so a killed agent leaves no orphaned runtime behind; the agent that
systemd starts next starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from qsv_wire.procutil import die_with_parent

log = logging.getLogger(__name__)


def build_command(template: str, config_path: Path) -> list[str]:
    """Split a shell-like command template; ``{config}`` is replaced by the active config path."""
    return [part.replace("{config}", str(config_path)) for part in shlex.split(template)]


class RuntimeSupervisor:
    def __init__(
        self,
        command: Sequence[str] | None,
        stop_timeout_s: float = 5.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ):
        self.command = list(command) if command else None
        self.stop_timeout_s = stop_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._restart_pending = False
        self._term_sent_at: float | None = None
        self._backoff_s = backoff_min_s
        self._next_start_at: float | None = None
        self._started_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.command is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        if not self.command or self.pid is not None:
            return
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        except OSError as exc:  # e.g. the program was removed: the agent keeps serving, retries with back-off
            self.proc = None
            self._next_start_at = time.monotonic() + self._backoff_s
            log.error("runtime cannot start (%s); retrying in %.1fs", exc, self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)
            return
        self.starts += 1
        self._started_at = time.monotonic()
        self._next_start_at = None
        log.info("runtime started: pid %d: %s", self.proc.pid, shlex.join(self.command))

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        """``sig`` to the runtime's process group (the runtime and whatever it spawned); only while the runtime is
        not yet reaped, so its pid (= the group id) cannot have been reused."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            proc.send_signal(sig)

    def request_restart(self) -> None:
        if self.command:
            self._restart_pending = True
            self.poll()

    def poll(self) -> None:
        """Advance restarts and crash recovery; cheap, call it often."""
        if not self.command:
            return
        now = time.monotonic()
        proc = self.proc
        alive = proc is not None and proc.poll() is None
        if self._restart_pending:
            if alive:
                assert proc is not None
                if self._term_sent_at is None:
                    log.info("runtime restart: SIGTERM to pid %d", proc.pid)
                    self._signal(proc, signal.SIGTERM)
                    self._term_sent_at = now
                elif now - self._term_sent_at > self.stop_timeout_s:
                    log.warning("runtime pid %d ignored SIGTERM for %.1fs: SIGKILL", proc.pid, self.stop_timeout_s)
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
                    alive = False
            if not alive:
                self._restart_pending = False
                self._term_sent_at = None
                self._backoff_s = self.backoff_min_s
                self.start()
            return
        if proc is None:
            if self._next_start_at is not None and now >= self._next_start_at:
                self.start()  # a start that failed
            return
        if not alive:
            if self._next_start_at is None:
                ran = now - self._started_at
                if ran > self.backoff_max_s:
                    self._backoff_s = self.backoff_min_s
                log.warning("runtime pid %d exited with %s after %.1fs; restarting in %.1fs",
                            proc.pid, proc.returncode, ran, self._backoff_s)
                self._next_start_at = now + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)
            elif now >= self._next_start_at:
                self.start()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait()
        log.info("runtime pid %d stopped (%s)", proc.pid, proc.returncode)
