"""The transport-agnostic verifier service: open / verify / close on the protocol's plain dataclasses.

Implements the ``VerifierHandler`` interface of ``cloud_verifier.mqtt_service`` (``open(OpenSession) -> int |
ErrorReply``, ``verify(DraftRound) -> Feedback | ErrorReply``, ``close(session_id)``) and adds ``submit`` (a Future)
so a transport can hand in rounds from many boards and let the batching scheduler verify them together.

Errors are :class:`VerifierErrorReply`, a protocol ``ErrorReply`` (wire code) with the service's finer ``reason``
(:class:`ServiceErrorCode`). A bad request never changes any session, its own included, except that an
out-of-order round leaves the session as it was (the board resyncs).

Threads (docs/VERIFIER.md, "Scheduling and fairness"): rounds are verified on the batching scheduler's thread
(``cloud_verifier.batching``: per-device queues served in turn, expensive-to-admit devices isolated); opens are
prefilled on a second thread in
chunks of ``prefill_chunk_tokens``, one chunk at a time, devices lightest first, a chunk starting only while the
batcher is idle (or after ``prefill_yield_s``). Neither runs on the caller's (the MQTT service's) thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from cloud_verifier.batching import BatchScheduler, DeviceUsage, QueueFull
from cloud_verifier.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S, MetricsRegistry
from cloud_verifier.sampling import SamplingParams, VerificationError, target_probs, verify_round
from cloud_verifier.sessions import Session, SessionGone, SessionManager
from cloud_verifier.target import KVState, RoundOutput, TargetModel
from qsv_wire.lattice import LatticeError, LatticePoint
from qsv_wire.protocol import (
    CODEC_MODE_QSV1,
    DraftRound,
    ErrorCode,
    ErrorReply,
    Feedback,
    Limits,
    OpenSession,
)

log = logging.getLogger(__name__)

OpenRequest = OpenSession  # the service speaks the wire protocol's dataclasses


class ServiceErrorCode(Enum):
    """Why a request was refused; ``wire`` is the protocol error code it travels as."""

    UNKNOWN_SESSION = ("unknown_session", ErrorCode.UNKNOWN_SESSION)  # never opened or closed: open with history
    EVICTED = ("evicted", ErrorCode.UNKNOWN_SESSION)  # evicted (memory, session limit, idle): resync with history
    VOCAB_MISMATCH = ("vocab_mismatch", ErrorCode.VOCAB_MISMATCH)
    ROUND_TOO_LARGE = ("round_too_large", ErrorCode.TOO_LARGE)
    HISTORY_TOO_LARGE = ("history_too_large", ErrorCode.TOO_LARGE)
    MALFORMED_LATTICE = ("malformed_lattice", ErrorCode.MALFORMED)
    MALFORMED_ROUND = ("malformed_round", ErrorCode.MALFORMED)
    OUT_OF_ORDER = ("out_of_order", ErrorCode.DESYNC)  # round sequence or position is not the expected next one
    BAD_PARAMS = ("bad_params", ErrorCode.BAD_PARAMS)
    UNSUPPORTED_CODEC = ("unsupported_codec", ErrorCode.BAD_PARAMS)  # a codec mode this verifier does not decode
    RATE_LIMITED = ("rate_limited", ErrorCode.RATE_LIMITED)  # the device's queue is full: back off, send again
    SUPERSEDED = ("superseded", ErrorCode.DESYNC)  # an open replaced by a newer open or a close before it finished
    INTERNAL = ("internal", ErrorCode.INTERNAL)

    @property
    def wire(self) -> ErrorCode:
        return self.value[1]


@dataclass(frozen=True)
class VerifierErrorReply(ErrorReply):
    reason: ServiceErrorCode = ServiceErrorCode.INTERNAL


def error_reply(reason: ServiceErrorCode, message: str, session_id: int = 0, round_seq: int = 0) -> VerifierErrorReply:
    return VerifierErrorReply(reason.wire, f"{reason.name}: {message}", session_id, round_seq, reason)


@dataclass
class ServiceConfig:
    max_sessions: int = 64
    memory_budget_bytes: int = 4 << 30
    idle_timeout_s: float = 300.0
    max_batch: int = 16
    max_wait_s: float = 0.004
    limits: Limits = field(default_factory=Limits)  # the protocol's one table (L, ℓ, history, …), the worker's
    vocab_hash: bytes | None = None  # None: only the vocabulary size is checked
    worker_id: str = "verifier-0"
    max_queued_per_device: int = 16  # rounds (and, separately, opens) queued per device; more: RATE_LIMITED
    prefill_chunk_tokens: int = 256  # an open's prefill runs in chunks of this many tokens
    prefill_yield_s: float = 0.25  # a chunk waits for the batcher to be idle at most this long
    prefill_nice: int = 10  # the prefill thread's niceness increment: on contended CPU cores, rounds go first
    usage_halflife_s: float = 1.0  # decay of each device's verifier seconds (the prefill thread serves the least used)
    isolate_admit_s: float = 0.01  # a device whose rounds cost more to admit (decode) gets batches of its own
    admit_slice_s: float = 0.005  # ... and its rounds are decoded in slices of about this long, one slice per turn


@dataclass
class _Pending:
    msg: DraftRound
    future: Future
    enqueued: float
    points: list[LatticePoint] = field(default_factory=list)
    session: Session | None = None
    version: int = 0
    kv: KVState | None = None  # the session's cache and pending token, captured under the lock at admission
    pending_token: int = 0
    cost_s: float = 0.0  # verifier seconds this round cost (admission + lattice decode + forward share + verify)
    admit_s: float | None = None  # of which admission (checks + lattice decode), before the batch's forward
    admit_total: float = 0.0  # admission seconds so far (over the slices of an isolated device's round)
    isolated: bool = False  # set by the scheduler: admit in slices of admit_slice_s
    requeue: bool = False  # set here: admission unfinished, the scheduler queues the round again


@dataclass(eq=False)
class _PrefillJob:
    msg: OpenSession
    device: str
    future: Future
    history: list[int]
    params: SamplingParams
    kv: KVState | None = None
    done: int = 0  # tokens of history[:-1] in kv
    cancelled: bool = False


_MORE = object()  # _admit: the round's points are decoded in part; the next slice in a later turn


def decode_lattice(blob: bytes | LatticePoint, vocab_size: int, ell: int) -> LatticePoint:
    """A lattice point from the round: LatticePoints pass through, bytes go through the codec."""
    if isinstance(blob, LatticePoint):
        return blob
    from qsv_wire.codec import decode  # the codec owns the byte format (docs/CODEC.md)

    return decode(bytes(blob), vocab_size, ell)


def _round_bytes(msg: DraftRound) -> int:
    lattice = sum(len(b) for b in msg.lattice if isinstance(b, bytes | bytearray | memoryview))
    bits = max(1, int(np.ceil(np.log2(max(2, msg.vocab_size)))))
    return lattice + (len(msg.tokens) * bits + 7) // 8


class VerifierService:
    """Sessions + target model + batching. Thread-safe; ``start()`` runs the batching scheduler thread."""

    def __init__(self, target: TargetModel, config: ServiceConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.config = config or ServiceConfig()
        self.clock = clock
        self.sessions = SessionManager(self.config.max_sessions, self.config.memory_budget_bytes,
                                       self.config.idle_timeout_s, clock)
        self._lock = threading.RLock()
        self.metrics = MetricsRegistry()
        self._register_metrics()
        self.usage = DeviceUsage(self.config.usage_halflife_s)
        self.scheduler = BatchScheduler(self._process_batch, self.config.max_batch, self.config.max_wait_s,
                                        on_idle=self.expire_idle, idle_every_s=min(5.0, self.config.idle_timeout_s),
                                        batch_limit=lambda: len(self.sessions),
                                        max_queued_per_key=self.config.max_queued_per_device, usage=self.usage,
                                        isolate_admit_s=self.config.isolate_admit_s)
        self._prefill_cond = threading.Condition()
        self._prefills: dict[str, list[_PrefillJob]] = {}  # pending opens per device, oldest first
        self._prefill_thread: threading.Thread | None = None
        self._prefill_stop = False

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> VerifierService:
        self.scheduler.start()
        if self._prefill_thread is None or not self._prefill_thread.is_alive():
            self._prefill_stop = False
            self._prefill_thread = threading.Thread(target=self._prefill_loop, name="qsv-prefill", daemon=True)
            self._prefill_thread.start()
        return self

    def stop(self) -> None:
        if self._prefill_thread is not None:
            with self._prefill_cond:
                self._prefill_stop = True
                self._prefill_cond.notify_all()
            self._prefill_thread.join(10.0)
            self._prefill_thread = None
        self.scheduler.stop()

    def __enter__(self) -> VerifierService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _register_metrics(self) -> None:
        m = self.metrics
        m.counter("rounds_total", "draft rounds verified")
        m.counter("draft_tokens_total", "draft tokens received in verified rounds")
        m.counter("accepted_tokens_total", "draft tokens accepted")
        m.counter("emitted_tokens_total", "tokens committed (accepted + corrected/bonus)")
        m.counter("errors_total", "refused requests by reason")
        m.counter("duplicate_rounds_total", "duplicate rounds answered from the stored feedback")
        m.counter("evictions_total", "sessions evicted (memory, session limit, idle)")
        m.counter("opens_total", "sessions opened or resynced")
        m.gauge("sessions", "sessions held", lambda: len(self.sessions))
        m.gauge("kv_cache_bytes", "KV-cache bytes held by all sessions", lambda: self.sessions.kv_bytes)
        m.gauge("queue_depth", "rounds waiting for a batch", lambda: self.scheduler.queue_depth)
        m.gauge("acceptance_rate", "accepted / drafted over all rounds", self._acceptance_rate)
        m.histogram("round_latency_seconds", "queue wait + forward + verification per round", LATENCY_BUCKETS_S)
        m.histogram("batch_forward_seconds", "one batched target forward pass", LATENCY_BUCKETS_S)
        m.histogram("batch_size", "rounds per forward pass", BATCH_BUCKETS)

    def _acceptance_rate(self) -> float:
        drafted = self.metrics.value("draft_tokens_total")
        return self.metrics.value("accepted_tokens_total") / drafted if drafted else 0.0

    def _error(self, reason: ServiceErrorCode, message: str, session_id: int = 0, seq: int = 0) -> VerifierErrorReply:
        self.metrics.inc("errors_total", reason=reason.name)
        log.info("refused (session %#x, round %d): %s %s", session_id, seq, reason.name, message)
        return error_reply(reason, message, session_id, seq)

    # ---------------------------------------------------------------------------------------------------- open
    def open(self, msg: OpenSession) -> int | VerifierErrorReply:
        """Create the session (or replace it: resync) with the full history; returns the history length held.
        Blocks until the prefill is done (on the prefill thread when the service runs, else here)."""
        return self.submit_open(msg).result()

    def submit_open(self, msg: OpenSession, device: str | None = None) -> Future:
        """Check the open at once, then queue its prefill; the Future gives the history length held or a
        VerifierErrorReply. A newer open (or a close) of the same session supersedes one still being prefilled."""
        future: Future = Future()
        device = msg.device_id if device is None else device
        checked = self._check_open(msg)
        if isinstance(checked, VerifierErrorReply):
            future.set_result(checked)
            return future
        job = _PrefillJob(msg, device, future, *checked)
        if self._prefill_thread is None or not self._prefill_thread.is_alive():
            with self._prefill_cond:
                self._cancel_prefill(msg.session_id)
            while not self._prefill_step(job):
                pass
            return future
        with self._prefill_cond:
            self._cancel_prefill(msg.session_id)
            queue = self._prefills.setdefault(device, [])
            if len(queue) >= self.config.max_queued_per_device:
                future.set_result(self._error(ServiceErrorCode.RATE_LIMITED,
                                              f"{len(queue)} opens of device {device} queued already", msg.session_id))
                return future
            queue.append(job)
            self._prefill_cond.notify_all()
        return future

    def _check_open(self, msg: OpenSession) -> tuple[list[int], SamplingParams] | VerifierErrorReply:
        sid = msg.session_id
        if msg.vocab_size != self.target.vocab_size:
            return self._error(ServiceErrorCode.VOCAB_MISMATCH,
                               f"board vocab_size {msg.vocab_size}, target model {self.target.vocab_size}", sid)
        if self.config.vocab_hash is not None and bytes(msg.vocab_hash) != self.config.vocab_hash:
            return self._error(ServiceErrorCode.VOCAB_MISMATCH,
                               f"vocab hash {bytes(msg.vocab_hash).hex()[:12]}… differs from the target's "
                               f"{self.config.vocab_hash.hex()[:12]}…: the board's tokenizer is not the target's", sid)
        history = [int(t) for t in msg.history]
        max_history = min(self.config.limits.max_history, self.target.max_positions or self.config.limits.max_history)
        if not 1 <= len(history) <= max_history:
            return self._error(ServiceErrorCode.HISTORY_TOO_LARGE,
                               f"history must hold 1..{max_history} tokens, got {len(history)}", sid)
        if min(history) < 0 or max(history) >= self.target.vocab_size:
            return self._error(ServiceErrorCode.BAD_PARAMS, "history token id out of range", sid)
        return history, msg.sampling

    def _cancel_prefill(self, session_id: int) -> None:
        """Supersede the queued prefill of ``session_id``, if any (callers hold _prefill_cond or run it inline)."""
        for device, queue in list(self._prefills.items()):
            for job in [j for j in queue if j.msg.session_id == session_id]:
                job.cancelled = True
                queue.remove(job)
                job.future.set_result(self._error(ServiceErrorCode.SUPERSEDED, "a newer open or a close replaced "
                                                  "this open before its prefill finished", session_id))
            if not queue:
                del self._prefills[device]

    def _prefill_loop(self) -> None:
        """The prefill thread: one chunk at a time, of the lightest device's oldest open."""
        if self.config.prefill_nice and hasattr(os, "setpriority"):
            try:  # per thread on Linux (torch's intra-op threads started from here inherit it)
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                         + self.config.prefill_nice))
            except OSError as exc:
                log.warning("prefill thread priority unchanged: %s", exc)
        while True:
            with self._prefill_cond:
                while not self._prefills and not self._prefill_stop:
                    self._prefill_cond.wait()
                if self._prefill_stop:
                    for queue in self._prefills.values():
                        for job in queue:
                            job.future.set_result(self._error(ServiceErrorCode.INTERNAL, "verifier stopping",
                                                              job.msg.session_id))
                    self._prefills.clear()
                    return
                now = self.usage.clock()
                device = min(self._prefills, key=lambda d: self.usage.get(d, now))
                job = self._prefills[device][0]
            # rounds first: a chunk starts while the batcher is idle, or after prefill_yield_s (no starvation)
            self.scheduler.idle.wait(self.config.prefill_yield_s)
            if self._prefill_step(job):
                with self._prefill_cond:
                    self._dequeue(job)

    def _dequeue(self, job: _PrefillJob) -> None:
        """Take ``job`` off its device's queue (callers hold _prefill_cond)."""
        queue = self._prefills.get(job.device)
        if queue is not None and job in queue:
            queue.remove(job)
        if queue is not None and not queue:
            del self._prefills[job.device]

    def _prefill_step(self, job: _PrefillJob) -> bool:
        """Prefill one chunk of ``job`` (or finish it); True once its future is resolved."""
        if job.cancelled:
            return True
        sid = job.msg.session_id
        context = job.history[:-1]
        t0 = time.perf_counter()
        try:
            if job.done < len(context):
                chunk = context[job.done : job.done + max(1, self.config.prefill_chunk_tokens)]
                job.kv = self.target.extend(job.kv or self.target.empty_state(), chunk)
                job.done += len(chunk)
            elif job.kv is None:
                job.kv = self.target.empty_state()
        except Exception as exc:  # noqa: BLE001 - reported to the board, the service keeps running
            log.exception("prefill failed for session %#x", sid)
            job.future.set_result(self._error(ServiceErrorCode.INTERNAL, f"prefill failed: {exc}", sid))
            return True
        finally:
            self.usage.charge(job.device, time.perf_counter() - t0)
        kv = job.kv
        if job.done and kv.nbytes * len(context) > self.config.memory_budget_bytes * job.done:  # projected size
            job.future.set_result(self._error(
                ServiceErrorCode.HISTORY_TOO_LARGE, f"history needs ≈ {kv.nbytes * len(context) // job.done} KV "
                f"bytes, budget {self.config.memory_budget_bytes}", sid))
            return True
        if job.done < len(context):
            return False
        msg = job.msg
        session = Session(sid, msg.device_id, job.history, kv, job.params, int(msg.sampling.seed), msg.next_round_seq,
                          self.clock())
        with self._prefill_cond:  # a close or newer open that came meanwhile wins; after this, a close removes it
            if job.cancelled:
                return True
            self._dequeue(job)
            with self._lock:
                evicted = self.sessions.put(session)
        self.metrics.inc("opens_total")
        self.metrics.inc("evictions_total", len(evicted))
        log.info("session %#x %s: %d history tokens, %s", sid, "resynced" if msg.resync else "opened",
                 len(job.history), job.params)
        job.future.set_result(len(job.history))
        return True

    def close(self, session_id: int) -> None:
        with self._prefill_cond:
            self._cancel_prefill(session_id)
        with self._lock:
            self.sessions.remove(session_id, "closed")

    def expire_idle(self) -> list[int]:
        with self._lock:
            idle = self.sessions.expire_idle()
        self.metrics.inc("evictions_total", len(idle))
        return idle

    def history(self, session_id: int) -> list[int]:
        with self._lock:
            return list(self.sessions.get(session_id).tokens)

    def session_stats(self, session_id: int) -> dict[str, float]:
        with self._lock:
            return self.sessions.get(session_id).stats.as_dict()

    # -------------------------------------------------------------------------------------------------- rounds
    def submit(self, msg: DraftRound, device: str | None = None) -> Future:
        """Queue a round for the batching scheduler (must be started) in ``device``'s queue (default: the device
        that opened the session); the Future gives Feedback or an error (RATE_LIMITED when the queue is full)."""
        if device is None:
            with self._lock:
                session = self.sessions.peek(msg.session_id)
            device = session.device_id if session is not None else ""
        item = _Pending(msg, Future(), self.clock())
        try:
            return self.scheduler.submit(item, device)
        except QueueFull as exc:
            item.future.set_result(self._error(ServiceErrorCode.RATE_LIMITED, f"device {device}: {exc}",
                                               msg.session_id, msg.round_seq))
            return item.future

    def verify(self, msg: DraftRound) -> Feedback | VerifierErrorReply:
        """Verify one round: through the scheduler when it runs (so it can share a batch), else directly."""
        if self.scheduler.running:
            return self.submit(msg).result()
        pending = _Pending(msg, Future(), self.clock())
        self._process_batch([pending])
        return pending.future.result()

    def verify_many(self, msgs: Sequence[DraftRound]) -> list[Feedback | VerifierErrorReply]:
        """Verify rounds of different sessions in one forward pass (no scheduler; used by tests and benchmarks)."""
        pendings = [_Pending(m, Future(), self.clock()) for m in msgs]
        self._process_batch(pendings)
        return [p.future.result() for p in pendings]

    def _admit(self, item: _Pending, slice_s: float | None = None) -> Feedback | VerifierErrorReply | object | None:
        """Checks under the lock; None when the round is to be verified (item.session/points filled). With
        ``slice_s``, decoding stops after about that long (at least one point) and returns _MORE; the points decoded
        so far stay in ``item.points`` and the next call checks the session again and goes on from there."""
        msg = item.msg
        sid, seq = msg.session_id, msg.round_seq
        try:
            session = self.sessions.get(sid)
        except SessionGone as gone:
            reason = ServiceErrorCode.EVICTED if gone.evicted else ServiceErrorCode.UNKNOWN_SESSION
            return self._error(reason, f"session {gone.reason}: reopen with the full token history", sid, seq)
        if session.last_seq is not None and seq == session.last_seq and isinstance(session.last_reply, Feedback):
            if msg.position == session.last_reply.position:
                self.metrics.inc("duplicate_rounds_total")
                self.sessions.touch(session)
                return session.last_reply
        if seq != session.next_seq:
            return self._error(ServiceErrorCode.OUT_OF_ORDER, f"round {seq}, expected {session.next_seq}", sid, seq)
        if msg.position != session.position:
            return self._error(ServiceErrorCode.OUT_OF_ORDER,
                               f"round at position {msg.position}, session holds {session.position} tokens", sid, seq)
        n = len(msg.tokens)
        if not 1 <= n <= self.config.limits.max_draft_len:
            return self._error(ServiceErrorCode.ROUND_TOO_LARGE,
                               f"draft length {n} outside 1..{self.config.limits.max_draft_len}", sid, seq)
        limit = self.config.limits.max_history
        if self.target.max_positions:
            limit = min(limit, self.target.max_positions)
        if session.position + n > limit:
            return self._error(ServiceErrorCode.HISTORY_TOO_LARGE,
                               f"round would take the sequence past {limit} tokens (history or model context)", sid,
                               seq)
        if msg.vocab_size != self.target.vocab_size:
            return self._error(ServiceErrorCode.VOCAB_MISMATCH,
                               f"round vocab_size {msg.vocab_size}, target {self.target.vocab_size}", sid, seq)
        if len(msg.lattice) != n:
            return self._error(ServiceErrorCode.MALFORMED_ROUND, f"{len(msg.lattice)} lattice points, {n} tokens",
                               sid, seq)
        max_ell = self.config.limits.max_ell
        if not 1 <= msg.ell <= max_ell:
            return self._error(ServiceErrorCode.ROUND_TOO_LARGE, f"ell {msg.ell} outside 1..{max_ell}", sid, seq)
        if msg.codec_mode != CODEC_MODE_QSV1:
            return self._error(ServiceErrorCode.UNSUPPORTED_CODEC,
                               f"codec mode {msg.codec_mode}: this verifier decodes mode {CODEC_MODE_QSV1} only", sid,
                               seq)
        points = item.points
        first = len(points)
        deadline = None if slice_s is None else time.perf_counter() + slice_s
        for i in range(first, n):
            if deadline is not None and i > first and time.perf_counter() > deadline:
                return _MORE
            tok, blob = msg.tokens[i], msg.lattice[i]
            try:
                point = decode_lattice(blob, msg.vocab_size, msg.ell)
            except (LatticeError, ValueError, ImportError) as exc:
                return self._error(ServiceErrorCode.MALFORMED_LATTICE, f"lattice point {i}: {exc}", sid, seq)
            if point.ell != msg.ell or point.vocab_size != msg.vocab_size:
                return self._error(ServiceErrorCode.MALFORMED_LATTICE,
                                   f"lattice point {i} has ell={point.ell}, V={point.vocab_size}", sid, seq)
            if not 0 <= int(tok) < msg.vocab_size or point.count_of(int(tok)) == 0:
                return self._error(ServiceErrorCode.MALFORMED_LATTICE,
                                   f"draft token {i} = {tok} is not in its lattice point's support", sid, seq)
            points.append(point)
        item.session, item.version = session, session.version
        item.kv, item.pending_token = session.kv, session.tokens[-1]
        return None

    def _process_batch(self, items: list[_Pending]) -> None:
        """Admit, run one forward over all admitted rounds, verify each, commit; resolves every future."""
        admitted: list[_Pending] = []
        deferred: list[_Pending] = []
        with self._lock:
            seen: set[int] = set()
            for item in items:
                if item.msg.session_id in seen:  # one round per session per forward; the next batch takes it
                    deferred.append(item)
                    continue
                t0 = time.perf_counter()
                # decodes the lattice points: the cost a flood of DRAFTs can cause (sliced for an isolated device)
                reply = self._admit(item, self.config.admit_slice_s if item.isolated else None)
                spent = time.perf_counter() - t0
                item.admit_total += spent
                item.cost_s += spent
                if reply is _MORE:
                    item.requeue = True  # the scheduler gives the other devices a turn, then the next slice
                    continue
                item.admit_s = item.admit_total
                if reply is None:
                    seen.add(item.msg.session_id)
                    admitted.append(item)
                else:
                    item.future.set_result(reply)
        if admitted:
            self._verify_admitted(admitted)
        if deferred:
            self._process_batch(deferred)

    def _verify_admitted(self, admitted: list[_Pending]) -> None:
        start = self.clock()
        try:
            outputs = self.target.forward_rounds(
                [it.kv for it in admitted],
                [[it.pending_token, *map(int, it.msg.tokens)] for it in admitted],
            )
        except Exception as exc:  # noqa: BLE001 - every round of the batch gets the error, sessions untouched
            log.exception("batched forward failed")
            for it in admitted:
                it.future.set_result(self._error(ServiceErrorCode.INTERNAL, f"forward failed: {exc}",
                                                 it.msg.session_id, it.msg.round_seq))
            return
        forward_s = self.clock() - start
        self.metrics.observe("batch_forward_seconds", forward_s)
        self.metrics.observe("batch_size", len(admitted))
        for it, out in zip(admitted, outputs, strict=True):
            t0 = time.perf_counter()
            it.future.set_result(self._verify_one(it, out, start, forward_s / len(admitted)))
            it.cost_s += forward_s / len(admitted) + time.perf_counter() - t0
        with self._lock:
            evicted = self.sessions.enforce_limits(protect={it.msg.session_id for it in admitted})
        self.metrics.inc("evictions_total", len(evicted))

    def _verify_one(self, it: _Pending, out: RoundOutput, start: float,
                    forward_share_s: float) -> Feedback | VerifierErrorReply:
        msg, session = it.msg, it.session
        assert session is not None
        t0 = self.clock()
        try:
            p = target_probs(out.logits, session.params)
            result = verify_round(p, [int(t) for t in msg.tokens], it.points, msg.ell,
                                  session.round_generator(msg.position))
        except VerificationError as exc:
            return self._error(ServiceErrorCode.MALFORMED_LATTICE, str(exc), msg.session_id, msg.round_seq)
        verify_s = forward_share_s + self.clock() - t0
        with self._lock:
            current = self.sessions.peek(msg.session_id)
            if current is not session or session.version != it.version:
                return self._error(ServiceErrorCode.EVICTED, "session evicted or replaced while verifying",
                                   msg.session_id, msg.round_seq)
            session.kv = out.committed_state(result.accepted + 1)
            session.tokens.extend(result.tokens)
            session.version += 1
            feedback = Feedback(msg.session_id, msg.round_seq, msg.position, result.accepted, result.next_token,
                                tuple(float(a) for a in result.acceptance_probs),
                                queue_us=int(max(0.0, start - it.enqueued) * 1e6), verify_us=int(verify_s * 1e6))
            session.last_seq, session.last_reply = msg.round_seq, feedback
            session.next_seq = msg.round_seq + 1
            st = session.stats
            st.rounds += 1
            st.drafted += len(msg.tokens)
            st.accepted += result.accepted
            st.emitted += result.emitted
            st.uplink_bytes += _round_bytes(msg)
            st.verify_s += verify_s
            st.queue_s += max(0.0, start - it.enqueued)
            st.acceptance_prob_sum += sum(result.acceptance_probs)
            self.sessions.touch(session)
        self.metrics.inc("rounds_total")
        self.metrics.inc("draft_tokens_total", len(msg.tokens))
        self.metrics.inc("accepted_tokens_total", result.accepted)
        self.metrics.inc("emitted_tokens_total", result.emitted)
        self.metrics.observe("round_latency_seconds", self.clock() - it.enqueued)
        return feedback


__all__ = [
    "OpenRequest", "ServiceConfig", "ServiceErrorCode", "VerifierErrorReply", "VerifierService", "error_reply",
]
