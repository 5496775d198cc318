"""Child processes that do not outlive their parent (Linux ``PR_SET_PDEATHSIG``).

``subprocess.Popen(cmd, preexec_fn=die_with_parent())``: the kernel sends the child ``SIGTERM`` (or the signal
given) when the parent dies, also when the parent is killed with SIGKILL or by the OOM killer, so no supervised
runtime, broker or verifier is left behind as an orphan. Used by the board agent's runtime supervisor and by the
demo's process stack.

Two details: the death signal is tied to the *thread* that forked the child (spawn from a long-lived thread, e.g. the
main thread), and a parent that dies between ``fork`` and the ``prctl`` call would be missed, so the child checks
its parent pid afterwards and signals itself if it has already been re-parented. On systems without ``prctl`` the
function does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved here, never in the forked child
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def pdeathsig_supported() -> bool:
    return _PRCTL is not None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process dies."""
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: no allocation-heavy work, no imports
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED)  # see signals_deferred
        if _PRCTL is None:
            return
        if _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (e.g. ``self.child = Popen(...)``): a Python signal handler
    that raises (KeyboardInterrupt) can lose its exception inside ``fork_exec``, and a child started in the block
    must be recorded before the handler runs, so that cleanup knows it. The signal is delivered when the block
    ends; children started with ``die_with_parent`` unblock both again."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
