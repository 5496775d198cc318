"""Crash-safe config storage on the board: atomic replace, previous config kept for rollback.

Files in the config directory (for ``board.yaml``):

* ``board.yaml``       the active config
* ``board.yaml.prev``  the config active before the last change (rollback target)
* ``.board.yaml.*.tmp`` temporaries; only ever renamed over the two above, removed at start-up after a crash

A write (``write``) goes: the new bytes to a temporary file in the same directory, fsync (step ``written``); read
the temporary back and check it is byte-identical to the (validated) bytes (``verified``); only then rotate: a hard
link to the current file (an fsynced copy where the file system has no hard links) is renamed over
``board.yaml.prev``, fsync the directory (``rotated``); rename the temporary over ``board.yaml`` (``renamed``), fsync
the directory. rename(2) is atomic, so after a crash or SIGKILL at any instant ``board.yaml`` is the old or the new
config and ``board.yaml.prev`` the old previous or the old current one: both always complete and valid, and ``.prev``
is never touched before the new config has been verified on disk.

A rollback swaps the two: both contents are staged as temporaries (``rb-staged``), the old previous is renamed over
``board.yaml`` (``rb-current``), the old current over ``board.yaml.prev``. A crash in between leaves the old previous
config in both files (valid; the old current is lost, as with any two-file swap without renameat2).

The step names are fault-injection points (``ConfigStore(fault_delay_s=…, fault_step=…)``; hidden
``qsv board-agent --fault-delay S --fault-step STEP`` for tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config import validate_config_bytes

log = logging.getLogger(__name__)


WRITE_STEPS = ("written", "verified", "rotated", "renamed")
ROLLBACK_STEPS = ("rb-staged", "rb-current")
FAULT_STEPS = WRITE_STEPS + ROLLBACK_STEPS


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

    def __init__(self, path: str | Path, fault_delay_s: float = 0.0, fault_step: str = "rotated"):
        if fault_step not in FAULT_STEPS:
            raise ValueError(f"fault_step must be one of {', '.join(FAULT_STEPS)}")
        self.path = Path(path)
        self.prev_path = self.path.with_name(self.path.name + ".prev")
        self.fault_delay_s = fault_delay_s  # fault injection: pause this long at ``fault_step``
        self.fault_step = fault_step
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
    def _fault(self, step: str) -> None:
        if self.fault_delay_s > 0 and step == self.fault_step:
            log.warning("fault injection: pausing %.1fs at step %s", self.fault_delay_s, step)
            time.sleep(self.fault_delay_s)

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

    def _stage(self, source: Path, raw: bytes) -> Path:
        """A temporary holding ``raw``, the current content of ``source``: a hard link to it (no copy, nothing to
        fsync), or an fsynced copy where the file system has no hard links."""
        for _ in range(100):
            link = self.path.parent / f"{self._tmp_prefix()}{secrets.token_hex(6)}.tmp"
            try:
                os.link(source, link)
            except FileExistsError:
                continue
            except OSError:  # EPERM / ENOTSUP / EXDEV: e.g. a FAT boot partition
                break
            return link
        return self._write_temp(raw, source.stat().st_mode & 0o777)

    def _replace(self, target: Path, raw: bytes) -> None:
        tmp = self._write_temp(raw)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    def write(self, raw: bytes) -> ConfigIdentity:
        """Make ``raw`` (validated by the caller) the active config; the current one becomes the rollback target.
        See the module docstring for the order of the steps."""
        temps: list[Path] = []
        try:
            tmp = self._write_temp(raw)
            temps.append(tmp)
            self._fault("written")
            if tmp.read_bytes() != raw:
                raise StoreError(f"writing {self.path} failed: the temporary file does not read back as written")
            self._fault("verified")
            current = self.active()
            if current is not None and current != raw:
                staged = self._stage(self.path, current)
                temps.append(staged)
                os.replace(staged, self.prev_path)
                temps.remove(staged)
                _fsync_dir(self.path.parent)
            self._fault("rotated")
            os.replace(tmp, self.path)
            temps.remove(tmp)
            self._fault("renamed")
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise StoreError(f"writing {self.path} failed: {exc}") from exc
        finally:
            for leftover in temps:
                leftover.unlink(missing_ok=True)
        return ConfigIdentity.of(raw)

    def rollback(self) -> ConfigIdentity:
        """Swap active and previous. The previous config is validated first; an invalid one is refused."""
        prev = self.previous()
        if prev is None:
            raise StoreError(f"no previous config ({self.prev_path} does not exist)")
        issues = validate_config_bytes(prev, str(self.prev_path))
        if issues:
            raise StoreError("previous config is invalid: " + "; ".join(str(i) for i in issues))
        temps: list[Path] = []
        try:
            current = self.active()
            new_current = self._stage(self.prev_path, prev)
            temps.append(new_current)
            new_prev = None
            if current is not None:
                new_prev = self._stage(self.path, current)
                temps.append(new_prev)
            self._fault("rb-staged")
            os.replace(new_current, self.path)
            temps.remove(new_current)
            _fsync_dir(self.path.parent)
            self._fault("rb-current")
            if new_prev is not None:
                os.replace(new_prev, self.prev_path)
                temps.remove(new_prev)
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise StoreError(f"rollback failed: {exc}") from exc
        finally:
            for leftover in temps:
                leftover.unlink(missing_ok=True)
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
