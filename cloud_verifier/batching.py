"""Batching scheduler: a thread that gathers queued rounds into batches bounded by size and wait time.

The first round to arrive opens a batch; the batch closes when it holds ``max_batch`` rounds (or ``batch_limit()``
rounds, when given: the service passes the number of open sessions, since a forward carries at most one round per
session, so a lone board never waits), or when ``max_wait_s`` has passed since it opened, whichever is first. It is then
handed to ``process``, which resolves every item's future.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class BatchScheduler:
    def __init__(self, process: Callable[[list[Any]], None], max_batch: int, max_wait_s: float,
                 on_idle: Callable[[], object] | None = None, idle_every_s: float = 5.0,
                 batch_limit: Callable[[], int] | None = None) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_idle = on_idle
        self.idle_every_s = idle_every_s
        self.batch_limit = batch_limit
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.items = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._run, name="qsv-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, item: Any) -> Any:
        """Queue ``item`` (which carries a ``future``); returns the future."""
        if not self.running:
            raise RuntimeError("the batching scheduler is not running: call start()")
        self._queue.put(item)
        return item.future

    def _run(self) -> None:
        next_idle = time.monotonic() + self.idle_every_s
        while True:
            try:
                first = self._queue.get(timeout=self.idle_every_s)
            except queue.Empty:
                first = None
            if first is _STOP:
                return
            batch = [] if first is None else [first]
            stop_after = False
            if batch:
                deadline = time.monotonic() + self.max_wait_s
                limit = self.max_batch if self.batch_limit is None else max(1, min(self.max_batch, self.batch_limit()))
                while len(batch) < limit:
                    remaining = deadline - time.monotonic()
                    try:
                        item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop_after = True
                        break
                    batch.append(item)
                self._run_batch(batch)
            now = time.monotonic()
            if self.on_idle is not None and now >= next_idle:
                try:
                    self.on_idle()
                except Exception:  # noqa: BLE001 - housekeeping must not stop the scheduler
                    log.exception("idle housekeeping failed")
                next_idle = now + self.idle_every_s
            if stop_after:
                return

    def _run_batch(self, batch: list[Any]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            self.process(batch)
        except Exception as exc:  # noqa: BLE001 - never leave a caller waiting forever
            log.exception("batch processing failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
