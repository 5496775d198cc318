"""Batching scheduler: a thread that gathers queued rounds into batches bounded by size and wait time, fairly
across devices.

Rounds are queued per *key* (the device: ``submit(item, key)``), each queue bounded (``max_queued_per_key``: a full
queue raises :class:`QueueFull`, which the service answers with RATE_LIMITED). The first round to arrive opens a
batch; the batch closes when ``max_batch`` rounds are queued (or ``batch_limit()`` rounds, when given: the service
passes the number of open sessions, since a forward carries at most one round per session, so a lone board never
waits), or when ``max_wait_s`` has passed since it opened, whichever is first. It is then handed to ``process``,
which resolves every item's future.

Fairness (docs/VERIFIER.md): keys take turns, least recently served first. Admitting a round (decoding its lattice
points) happens one round after the other before the batch's forward, so an expensive round would delay every round
of its batch: a key whose rounds cost more than ``isolate_admit_s`` to admit (an exponential average of
``item.admit_s``, which ``process`` sets) is *isolated* — when its turn comes its batch holds one of its rounds and
nothing else, and the other keys' rounds are batched without it. A device flooding the verifier with maximal DRAFTs
therefore delays another device's round by at most one of its rounds (the one running), whatever it sends; keys
whose rounds are cheap to admit share batches as before. The item of an isolated batch gets ``isolated = True``;
``process`` may leave it unresolved with ``requeue = True`` (its admission is done in slices): it goes back to the
head of its key's queue, and the other keys have their turn first. ``usage`` (decayed verifier seconds per key, from
``item.cost_s``) is kept for the prefill thread, which serves the least-used device's open first.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The key's queue holds ``max_queued_per_key`` items already."""


class DeviceUsage:
    """Exponentially decayed verifier seconds per key (thread-safe)."""

    def __init__(self, halflife_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if halflife_s <= 0:
            raise ValueError("halflife_s must be positive")
        self.rate = math.log(2.0) / halflife_s
        self.clock = clock
        self._usage: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        with self._lock:
            value, stamp = self._usage.get(key, (0.0, now))
        return value * math.exp(-self.rate * max(0.0, now - stamp))

    def charge(self, key: Hashable, seconds: float) -> None:
        now = self.clock()
        with self._lock:
            value, stamp = self._usage.get(key, (0.0, now))
            self._usage[key] = (value * math.exp(-self.rate * max(0.0, now - stamp)) + max(0.0, seconds), now)
            if len(self._usage) > 4096:  # forget keys that have decayed to nothing
                for k in [k for k, (v, s) in self._usage.items() if v * math.exp(-self.rate * (now - s)) < 1e-6]:
                    del self._usage[k]


class BatchScheduler:
    def __init__(self, process: Callable[[list[Any]], None], max_batch: int, max_wait_s: float,
                 on_idle: Callable[[], object] | None = None, idle_every_s: float = 5.0,
                 batch_limit: Callable[[], int] | None = None, max_queued_per_key: int = 0,
                 usage: DeviceUsage | None = None, isolate_admit_s: float = 0.01) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_idle = on_idle
        self.idle_every_s = idle_every_s
        self.batch_limit = batch_limit
        self.max_queued_per_key = max_queued_per_key  # 0: unbounded
        self.usage = usage or DeviceUsage()
        self.isolate_admit_s = isolate_admit_s
        self._admit_cost: dict[Hashable, float] = {}  # exponential average of admission seconds per round
        self._served: dict[Hashable, int] = {}  # batch number of each key's last turn
        self._cond = threading.Condition()
        self._queues: dict[Hashable, collections.deque] = {}  # only keys with queued items, in arrival order
        self._queued = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.idle = threading.Event()  # set while no batch is being gathered or processed
        self.idle.set()
        self.batches = 0
        self.items = 0
        self.isolated_batches = 0  # batches that served one expensive-to-admit round alone

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._queued

    def queued(self, key: Hashable) -> int:
        with self._cond:
            q = self._queues.get(key)
            return len(q) if q else 0

    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="qsv-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._thread = None

    def submit(self, item: Any, key: Hashable = None) -> Any:
        """Queue ``item`` (which carries a ``future``) under ``key``; returns the future. Raises QueueFull."""
        if not self.running:
            raise RuntimeError("the batching scheduler is not running: call start()")
        with self._cond:
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = collections.deque()
            elif self.max_queued_per_key and len(q) >= self.max_queued_per_key:
                raise QueueFull(f"{len(q)} items of {key!r} queued already")
            q.append(item)
            self._queued += 1
            self.idle.clear()
            self._cond.notify_all()
        return item.future

    def isolated(self, key: Hashable) -> bool:
        return self._admit_cost.get(key, 0.0) > self.isolate_admit_s

    def _pick(self, limit: int) -> list[tuple[Hashable, Any]]:
        """Up to ``limit`` (key, item) pairs, keys least recently served first; an isolated key's turn is a batch of
        one of its rounds alone, and isolated keys are left out of the others' batches (under the lock)."""
        order = {k: i for i, k in enumerate(self._queues)}
        keys = sorted(self._queues, key=lambda k: (self._served.get(k, -1), order[k]))
        turn = self.batches + 1
        alone = self.isolated(keys[0])
        if alone:
            keys, limit = keys[:1], 1
            self.isolated_batches += 1
        batch: list[tuple[Hashable, Any]] = []
        for key in keys:
            if len(keys) > 1 and self.isolated(key):
                continue
            q = self._queues[key]
            while q and len(batch) < limit:
                batch.append((key, q.popleft()))
            self._served[key] = turn
            if not q:
                del self._queues[key]
            if len(batch) >= limit:
                break
        self._queued -= len(batch)
        if alone:
            batch[0][1].isolated = True
        return batch

    def _run(self) -> None:
        next_idle = time.monotonic() + self.idle_every_s
        while True:
            batch: list[tuple[Hashable, Any]] = []
            with self._cond:
                if not self._queued and not self._stopping:
                    self.idle.set()
                    self._cond.wait(timeout=max(0.0, next_idle - time.monotonic()))
                if self._queued:
                    self.idle.clear()
                    deadline = time.monotonic() + self.max_wait_s
                    limit = self.max_batch if self.batch_limit is None else max(1, min(self.max_batch,
                                                                                       self.batch_limit()))
                    while self._queued < limit and not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    batch = self._pick(limit)
                elif self._stopping:
                    self.idle.set()
                    return
            if batch:
                self._run_batch(batch)
            now = time.monotonic()
            if self.on_idle is not None and now >= next_idle:
                try:
                    self.on_idle()
                except Exception:  # noqa: BLE001 - housekeeping must not stop the scheduler
                    log.exception("idle housekeeping failed")
                next_idle = now + self.idle_every_s

    def _run_batch(self, batch: list[tuple[Hashable, Any]]) -> None:
        self.batches += 1
        items = [item for _, item in batch]
        start = time.perf_counter()
        try:
            self.process(items)
        except Exception as exc:  # noqa: BLE001 - never leave a caller waiting forever
            log.exception("batch processing failed")
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        share = (time.perf_counter() - start) / len(batch)
        for key, item in batch:
            if getattr(item, "requeue", False) and not item.future.done():
                item.requeue = False
                with self._cond:  # unfinished (a sliced admission): its key's next turn continues it
                    self._queues.setdefault(key, collections.deque()).appendleft(item)
                    self._queued += 1
                    self._cond.notify_all()
                continue
            self.items += 1
            cost = getattr(item, "cost_s", None)
            self.usage.charge(key, share if cost is None else cost)
            admit = getattr(item, "admit_s", None)
            if admit is not None:
                with self._cond:
                    self._admit_cost[key] = 0.7 * self._admit_cost.get(key, admit) + 0.3 * admit
                    if len(self._served) > 4096:  # forget keys without a queue and with cheap rounds
                        for k in [k for k in self._served if k not in self._queues and not self.isolated(k)]:
                            self._served.pop(k, None)
                            self._admit_cost.pop(k, None)
