"""Verifier sessions: per-board state (token history, KV cache, round sequence), statistics, eviction.

A session is evicted when it has been idle longer than the idle timeout, or when the number of sessions or the total
KV-cache bytes exceed their limits: then the device holding the most pays first, with its least recently used
session, so one device's sessions cannot push out another's. The manager remembers why a session went away
(bounded), so a board whose session was evicted is told EVICTED (and resyncs by reopening with its full history)
rather than UNKNOWN_SESSION.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from cloud_verifier.sampling import SamplingParams
from cloud_verifier.target import KVState

log = logging.getLogger(__name__)

GONE_MEMORY = 4096  # how many departed session ids are remembered with their reason


@dataclass
class SessionStats:
    rounds: int = 0
    drafted: int = 0  # draft tokens received
    accepted: int = 0  # draft tokens accepted
    emitted: int = 0  # tokens added to the sequence (accepted + corrected/bonus)
    uplink_bytes: int = 0  # draft-round payload bytes (token ids + lattice points) when known
    verify_s: float = 0.0  # forward + verification time attributed to this session
    queue_s: float = 0.0  # time rounds waited for a batch
    acceptance_prob_sum: float = 0.0  # Σ α_i over drafted positions

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        return self.accepted / self.rounds if self.rounds else 0.0

    @property
    def bytes_per_accepted_token(self) -> float:
        return self.uplink_bytes / self.accepted if self.accepted else float("inf")

    @property
    def mean_verify_ms(self) -> float:
        return 1e3 * self.verify_s / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "rounds": self.rounds, "drafted": self.drafted, "accepted": self.accepted, "emitted": self.emitted,
            "acceptance_rate": self.acceptance_rate, "mean_accepted_length": self.mean_accepted_length,
            "uplink_bytes": self.uplink_bytes, "bytes_per_accepted_token": self.bytes_per_accepted_token,
            "mean_verify_ms": self.mean_verify_ms,
        }


@dataclass
class Session:
    session_id: int
    device_id: str
    tokens: list[int]  # full committed history; the KV cache covers tokens[:-1]
    kv: KVState
    params: SamplingParams
    seed: int
    next_seq: int
    last_used: float
    last_seq: int | None = None
    last_reply: object | None = None  # the stored Feedback of round last_seq (idempotent duplicates)
    version: int = 0  # bumped on every commit; a batch result for an older version is discarded
    stats: SessionStats = field(default_factory=SessionStats)

    @property
    def position(self) -> int:
        return len(self.tokens)

    def round_generator(self, position: int) -> torch.Generator:
        """The generator for the round starting at ``position``: a function of (seed, position) only, so a session
        reopened with its full history after eviction draws exactly what it would have drawn."""
        digest = hashlib.sha256(f"qsv-verify:{self.seed}:{position}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class SessionGone(LookupError):
    """The session is not held: ``reason`` is 'unknown', 'closed', 'evicted (…)' or 'idle'."""

    def __init__(self, session_id: int, reason: str) -> None:
        super().__init__(f"session {session_id:#x}: {reason}")
        self.session_id = session_id
        self.reason = reason

    @property
    def evicted(self) -> bool:
        return self.reason.startswith("evicted") or self.reason == "idle"


class SessionManager:
    """Holds sessions in LRU order under a session-count limit, a KV memory budget and an idle timeout.

    Not thread-safe by itself: the service serializes access with its lock.
    """

    def __init__(self, max_sessions: int, memory_budget_bytes: int, idle_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1 or memory_budget_bytes < 1 or idle_timeout_s <= 0:
            raise ValueError("max_sessions, memory_budget_bytes and idle_timeout_s must be positive")
        self.max_sessions = max_sessions
        self.memory_budget_bytes = memory_budget_bytes
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._sessions: OrderedDict[int, Session] = OrderedDict()
        self._gone: OrderedDict[int, str] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: int) -> bool:
        return session_id in self._sessions

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def kv_bytes(self) -> int:
        return sum(s.kv.nbytes for s in self._sessions.values())

    def get(self, session_id: int) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionGone(session_id, self._gone.get(session_id, "unknown"))
        return session

    def peek(self, session_id: int) -> Session | None:
        """The session if held (no LRU update)."""
        return self._sessions.get(session_id)

    def touch(self, session: Session) -> None:
        session.last_used = self.clock()
        self._sessions.move_to_end(session.session_id)

    def put(self, session: Session) -> list[int]:
        """Add or replace a session (most recently used); returns the ids evicted to make room."""
        self._sessions.pop(session.session_id, None)
        self._gone.pop(session.session_id, None)
        self._sessions[session.session_id] = session
        session.last_used = self.clock()
        return self.enforce_limits(protect={session.session_id})

    def remove(self, session_id: int, reason: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._gone[session_id] = reason
            while len(self._gone) > GONE_MEMORY:
                self._gone.popitem(last=False)
        return session

    def enforce_limits(self, protect: Iterable[int] = ()) -> list[int]:
        """Evict sessions until count and memory fit. The device holding the most (KV bytes when over the memory
        budget, sessions when over the count) pays first, its least recently used session; so one device's large
        sessions never push out another device's. Protected sessions go last."""
        protected = set(protect)
        evicted: list[int] = []
        total = self.kv_bytes
        while self._sessions and (len(self._sessions) > self.max_sessions or total > self.memory_budget_bytes):
            over_memory = total > self.memory_budget_bytes
            victim = self._victim(protected, over_memory)
            why = "memory budget" if over_memory else "session limit"
            session = self.remove(victim, f"evicted ({why})")
            assert session is not None
            total -= session.kv.nbytes
            evicted.append(victim)
            self.evictions += 1
            log.info("session %#x of %s evicted (%s); %d sessions, %d KV bytes left", victim, session.device_id, why,
                     len(self._sessions), total)
        return evicted

    def _victim(self, protected: set[int], by_memory: bool) -> int:
        """The least recently used unprotected session of the heaviest device (any session if all are protected)."""
        held: dict[str, int] = {}
        oldest: dict[str, int] = {}  # device -> its least recently used unprotected session (dict keeps LRU order)
        for sid, s in self._sessions.items():
            held[s.device_id] = held.get(s.device_id, 0) + (s.kv.nbytes if by_memory else 1)
            if sid not in protected:
                oldest.setdefault(s.device_id, sid)
        if not oldest:
            return next(iter(self._sessions))
        rank = {sid: i for i, sid in enumerate(self._sessions)}
        device = max(oldest, key=lambda d: (held[d], -rank[oldest[d]]))
        return oldest[device]

    def expire_idle(self, now: float | None = None) -> list[int]:
        now = self.clock() if now is None else now
        idle = [sid for sid, s in self._sessions.items() if now - s.last_used > self.idle_timeout_s]
        for sid in idle:
            self.remove(sid, "idle")
            self.evictions += 1
            log.info("session %#x closed after %.1f s idle", sid, self.idle_timeout_s)
        return idle
