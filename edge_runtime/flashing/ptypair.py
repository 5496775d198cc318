"""A connected pair of pseudo-terminals from socat: a serial link without hardware (tests, trying the workflow).

    with PtyPair() as (board_port, host_port):
        ...  # run qsv board-agent on board_port, qsv flash on host_port
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

PTY_LINE = re.compile(r"PTY is (/dev/pts/\d+|\S+)")


class PtyPairError(RuntimeError):
    pass


class PtyPair:
    """``socat -d -d pty,raw,echo=0 pty,raw,echo=0``; the two device paths are parsed from socat's stderr."""

    def __init__(self, startup_timeout_s: float = 5.0):
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.ports: tuple[str, str] | None = None

    def start(self) -> tuple[str, str]:
        socat = shutil.which("socat")
        if socat is None:
            raise PtyPairError("socat not found (apt-get install socat)")
        self.proc = subprocess.Popen([socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        found: list[str] = []
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.proc.stderr is not None
        while len(found) < 2 and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            match = PTY_LINE.search(line)
            if match:
                found.append(match.group(1))
        if len(found) < 2:
            self.stop()
            raise PtyPairError(f"socat did not report two PTYs within {self.startup_timeout_s}s (got {found})")
        # socat reports the PTYs before it enters its transfer loop; wait for that line so no early byte is lost
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line or "starting data transfer loop" in line:
                break
        self.ports = (found[0], found[1])
        return self.ports

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> tuple[str, str]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
