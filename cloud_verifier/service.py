"""The transport-agnostic verifier service: open / verify / close on the protocol's plain dataclasses.

Implements the ``VerifierHandler`` interface of ``cloud_verifier.mqtt_service`` (``open(OpenSession) -> int |
ErrorReply``, ``verify(DraftRound) -> Feedback | ErrorReply``, ``close(session_id)``) and adds ``submit`` (a Future)
so a transport can hand in rounds from many boards and let the batching scheduler verify them together.

Errors are :class:`VerifierErrorReply`, a protocol ``ErrorReply`` (wire code) with the service's finer ``reason``
(:class:`ServiceErrorCode`). A bad request never changes any session, its own included, except that an
out-of-order round leaves the session as it was (the board resyncs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from cloud_verifier.batching import BatchScheduler
from cloud_verifier.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S, MetricsRegistry
from cloud_verifier.sampling import SamplingParams, VerificationError, target_probs, verify_round
from cloud_verifier.sessions import Session, SessionGone, SessionManager
from cloud_verifier.target import KVState, RoundOutput, TargetModel
from edge_runtime.lattice import LatticeError, LatticePoint
from edge_runtime.protocol import DraftRound, ErrorCode, ErrorReply, Feedback, OpenSession
from edge_runtime.protocol import SamplingParams as WireSamplingParams

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
    max_draft_len: int = 32
    max_history: int = 32768
    vocab_hash: bytes | None = None  # None: only the vocabulary size is checked
    worker_id: str = "verifier-0"


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


def decode_lattice(blob: bytes | LatticePoint, vocab_size: int, ell: int) -> LatticePoint:
    """A lattice point from the round: LatticePoints pass through, bytes go through the codec."""
    if isinstance(blob, LatticePoint):
        return blob
    from edge_runtime.codec import decode  # the codec owns the byte format (docs/CODEC.md)

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
        self.scheduler = BatchScheduler(self._process_batch, self.config.max_batch, self.config.max_wait_s,
                                        on_idle=self.expire_idle, idle_every_s=min(5.0, self.config.idle_timeout_s),
                                        batch_limit=lambda: len(self.sessions))

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> VerifierService:
        self.scheduler.start()
        return self

    def stop(self) -> None:
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
        """Create the session (or replace it: resync) with the full history; returns the history length held."""
        sid = msg.session_id
        if msg.vocab_size != self.target.vocab_size:
            return self._error(ServiceErrorCode.VOCAB_MISMATCH,
                               f"board vocab_size {msg.vocab_size}, target model {self.target.vocab_size}", sid)
        if self.config.vocab_hash is not None and bytes(msg.vocab_hash) != self.config.vocab_hash:
            return self._error(ServiceErrorCode.VOCAB_MISMATCH,
                               f"vocab hash {bytes(msg.vocab_hash).hex()[:12]}… differs from the target's "
                               f"{self.config.vocab_hash.hex()[:12]}…: the board's tokenizer is not the target's", sid)
        history = [int(t) for t in msg.history]
        max_history = min(self.config.max_history, self.target.max_positions or self.config.max_history)
        if not 1 <= len(history) <= max_history:
            return self._error(ServiceErrorCode.HISTORY_TOO_LARGE,
                               f"history must hold 1..{max_history} tokens, got {len(history)}", sid)
        if min(history) < 0 or max(history) >= self.target.vocab_size:
            return self._error(ServiceErrorCode.BAD_PARAMS, "history token id out of range", sid)
        try:
            params = to_sampling_params(msg.sampling)
        except ValueError as exc:
            return self._error(ServiceErrorCode.BAD_PARAMS, str(exc), sid)
        try:
            kv = self.target.prefill(history[:-1])
        except Exception as exc:  # noqa: BLE001 - reported to the board, the service keeps running
            log.exception("prefill failed for session %#x", sid)
            return self._error(ServiceErrorCode.INTERNAL, f"prefill failed: {exc}", sid)
        if kv.nbytes > self.config.memory_budget_bytes:
            return self._error(ServiceErrorCode.HISTORY_TOO_LARGE,
                               f"history needs {kv.nbytes} KV bytes, budget {self.config.memory_budget_bytes}", sid)
        session = Session(sid, msg.device_id, history, kv, params, int(msg.sampling.seed), msg.next_round_seq,
                          self.clock())
        with self._lock:
            evicted = self.sessions.put(session)
        self.metrics.inc("opens_total")
        self.metrics.inc("evictions_total", len(evicted))
        log.info("session %#x %s: %d history tokens, %s", sid, "resynced" if msg.resync else "opened", len(history),
                 params)
        return len(history)

    def close(self, session_id: int) -> None:
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
    def submit(self, msg: DraftRound) -> Future:
        """Queue a round for the batching scheduler (must be started); the Future gives Feedback or an error."""
        return self.scheduler.submit(_Pending(msg, Future(), self.clock()))

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

    def _admit(self, item: _Pending) -> Feedback | VerifierErrorReply | None:
        """Checks under the lock; None when the round is to be verified (item.session/points filled)."""
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
        if not 1 <= n <= self.config.max_draft_len:
            return self._error(ServiceErrorCode.ROUND_TOO_LARGE,
                               f"draft length {n} outside 1..{self.config.max_draft_len}", sid, seq)
        limit = self.config.max_history
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
        if not 1 <= msg.ell <= 65535:
            return self._error(ServiceErrorCode.BAD_PARAMS, f"ell {msg.ell} outside 1..65535", sid, seq)
        points = []
        for i, (tok, blob) in enumerate(zip(msg.tokens, msg.lattice, strict=True)):
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
        item.session, item.points, item.version = session, points, session.version
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
                reply = self._admit(item)
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
            it.future.set_result(self._verify_one(it, out, start, forward_s / len(admitted)))
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


def to_sampling_params(wire: WireSamplingParams) -> SamplingParams:
    return SamplingParams(temperature=float(wire.temperature), top_k=int(wire.top_k), top_p=float(wire.top_p))


__all__ = [
    "OpenRequest", "ServiceConfig", "ServiceErrorCode", "VerifierErrorReply", "VerifierService", "error_reply",
]
