"""Crash-safe config storage on the board: atomic replace, previous config kept for rollback.

Files in the config directory (for ``board.yaml``):

* ``board.yaml``       the active config
* ``board.yaml.prev``  the config active before the last change (rollback target)
* ``.board.yaml.*.tmp`` temporaries; only ever renamed over the two above, removed at start-up after a crash

Every replacement is: write a temporary file in the same directory, fsync it, rename it over the target, fsync the
directory. rename(2) is atomic, so after a crash or SIGKILL at any instant each of the two files holds either its old
or its new content, never a mix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config import validate_config_bytes

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class ConfigIdentity:
    digest: bytes  # sha256 of the exact bytes
    size: int

    @property
    def hex(self) -> str:
        return self.digest.hex()

    @classmethod
    def of(cls, raw: bytes) -> ConfigIdentity:
        return cls(hashlib.sha256(raw).digest(), len(raw))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ConfigStore:
    """The active and previous config files of one board."""

    def __init__(self, path: str | Path, fault_delay_s: float = 0.0):
        self.path = Path(path)
        self.prev_path = self.path.with_name(self.path.name + ".prev")
        self.fault_delay_s = fault_delay_s  # fault injection: pause with the new temp file written, before rename
        self.path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------------- reading
    def active(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def previous(self) -> bytes | None:
        try:
            return self.prev_path.read_bytes()
        except FileNotFoundError:
            return None

    def active_identity(self) -> ConfigIdentity | None:
        raw = self.active()
        return None if raw is None else ConfigIdentity.of(raw)

    # ------------------------------------------------------------------------------------------------------- writing
    def _tmp_prefix(self) -> str:
        return f".{self.path.name}."

    def _write_temp(self, raw: bytes, mode: int = 0o644) -> Path:
        fd, name = tempfile.mkstemp(prefix=self._tmp_prefix(), suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, mode)  # mkstemp creates 0600; the runtime may run as another user
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def _replace(self, target: Path, raw: bytes, pause: bool = False) -> None:
        tmp = self._write_temp(raw)
        try:
            if pause and self.fault_delay_s > 0:
                log.warning("fault injection: pausing %.1fs before renaming %s", self.fault_delay_s, tmp.name)
                time.sleep(self.fault_delay_s)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    def write(self, raw: bytes) -> ConfigIdentity:
        """Make ``raw`` the active config; the current one becomes the rollback target."""
        try:
            current = self.active()
            if current is not None and current != raw:
                self._replace(self.prev_path, current)
            self._replace(self.path, raw, pause=True)
        except OSError as exc:
            raise StoreError(f"writing {self.path} failed: {exc}") from exc
        return ConfigIdentity.of(raw)

    def rollback(self) -> ConfigIdentity:
        """Swap active and previous. The previous config is validated first; an invalid one is refused."""
        prev = self.previous()
        if prev is None:
            raise StoreError(f"no previous config ({self.prev_path} does not exist)")
        issues = validate_config_bytes(prev, str(self.prev_path))
        if issues:
            raise StoreError("previous config is invalid: " + "; ".join(str(i) for i in issues))
        current = self.active()
        try:
            self._replace(self.path, prev)
            if current is not None:
                self._replace(self.prev_path, current)
        except OSError as exc:
            raise StoreError(f"rollback failed: {exc}") from exc
        return ConfigIdentity.of(prev)

    # ------------------------------------------------------------------------------------------------------ recovery
    def recover(self) -> list[str]:
        """Start-up clean-up after a crash: remove stale temporaries; restore the previous config if the active one is
        missing or invalid. Returns what was done (also logged)."""
        actions: list[str] = []
        for tmp in self.path.parent.glob(self._tmp_prefix() + "*.tmp"):
            tmp.unlink(missing_ok=True)
            actions.append(f"removed stale temporary {tmp.name}")
        current = self.active()
        bad = current is None or bool(validate_config_bytes(current, str(self.path)))
        prev = self.previous()
        if bad and prev is not None and not validate_config_bytes(prev, str(self.prev_path)):
            self._replace(self.path, prev)
            state = "missing" if current is None else "invalid"
            actions.append(f"active config {state}: restored {self.prev_path.name}")
        for action in actions:
            log.warning("config store recovery: %s", action)
        return actions
