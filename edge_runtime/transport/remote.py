"""The board's view of the cloud verifier over MQTT 5: ``open`` a session, then ``verify`` one draft round at a time.

Faults are handled here, invisibly to the drafter:
- no feedback within ``feedback_timeout_s``: the same round (same sequence number) is published again — the
  verifier answers a duplicate with its cached feedback, so a resend never advances the generation twice;
- still nothing after ``max_resends`` resends, or an UNKNOWN_SESSION / DESYNC error (the worker died, restarted or
  dropped an idle session): resync — reopen the session on the shared topic with the full token history (prompt +
  every committed token), get a new worker, resend the round there;
- RATE_LIMITED: back off and retry; broker loss: paho reconnects with exponential backoff and resubscribes.
Replies are matched by MQTT correlation data (session, seq, kind); anything else on the feedback topic (late
duplicates, replies to superseded attempts) is dropped.
"""

from __future__ import annotations

import collections
import logging
import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge_runtime.drafter import DraftRound as DraftedRound
from edge_runtime.engine import Verdict, VerifierInfo
from qsv_wire import topics
from qsv_wire.mqtt_common import BrokerEndpoint, LoopDriver, make_client, publish_properties
from qsv_wire.protocol import (
    CODEC_MODE_QSV1,
    DEFAULT_LIMITS,
    CloseSession,
    DraftRound,
    ErrorCode,
    ErrorReply,
    Feedback,
    Message,
    OpenAck,
    OpenSession,
    ProtocolError,
    SamplingParams,
    decode,
    encode,
)

log = logging.getLogger(__name__)

_CORR = struct.Struct("<QIB")
_KIND_OPEN, _KIND_ROUND = 1, 2
_RESYNC_CODES = {ErrorCode.UNKNOWN_SESSION, ErrorCode.DESYNC, ErrorCode.INTERNAL}


class RemoteVerifierError(RuntimeError):
    """The verifier refused (with an error the board cannot recover from) or stayed unreachable."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EdgeTransportConfig:
    feedback_timeout_s: float = 2.0
    open_timeout_s: float = 2.0
    max_resends: int = 1  # resends to the same worker before resyncing on another one
    max_resyncs: int | None = None  # per round or open, before giving up (None: only the deadline limits them)
    recovery_deadline_s: float = 120.0  # a round or an open keeps trying (resends, resyncs) this long, then fails
    resync_backoff_s: float = 0.05  # doubled per consecutive failed open, capped at max_backoff_s
    max_backoff_s: float = 2.0
    rate_limited_backoff_s: float = 0.05
    draft_expiry_s: int = 10  # MQTT message expiry: a draft nobody took within this is discarded by the broker
    connect_timeout_s: float = 10.0


@dataclass
class EdgeStats:
    rounds: int = 0
    resends: int = 0
    resyncs: int = 0
    dropped_replies: int = 0
    rate_limited: int = 0
    round_trip_us: list[int] = field(default_factory=list)


@dataclass
class _InFlight:
    """The round that was sent and has no feedback yet."""

    msg: DraftRound
    payload: bytes
    corr: bytes
    started: float  # perf_counter at send: the round trip includes any recovery
    sent_at: float = 0.0  # monotonic time of the latest publish (resends restart the timeout)
    sent_first: float = 0.0  # monotonic time of the first publish (the recovery deadline counts from it)
    early: Message | None = None  # a reply taken by poll() that only wait() may act on


class RemoteVerifier:
    """One board's session with the verifier group. Single-threaded: the caller's thread drives the MQTT client
    (``LoopDriver``) while it waits for a reply; between rounds nothing runs."""

    def __init__(self, device_id: str, endpoint: BrokerEndpoint, config: EdgeTransportConfig | None = None,
                 session_id: int | None = None) -> None:
        self.device_id = topics.check_client_id(device_id)
        self.endpoint = endpoint
        self.config = config or EdgeTransportConfig()
        self.session_id = session_id if session_id is not None else random.getrandbits(63)
        self.stats = EdgeStats()
        self.history: list[int] = []
        self.prompt_len = 0
        self.worker_id: str | None = None
        self.next_seq = 0
        self._sampling = SamplingParams()
        self._vocab_size = 0
        self._vocab_hash = bytes(32)
        self._open_nonce = 0
        self._replies: collections.deque[tuple[bytes, bytes | None]] = collections.deque()
        self._subscribed = False
        self._feedback_topic = topics.feedback_topic(device_id)
        self._inflight: _InFlight | None = None
        self._refused: mqtt.ReasonCode | None = None
        client_id = topics.device_client_id(device_id, f"edge-{self.session_id & 0xFFFFFF:06x}")
        self.client = make_client(client_id, endpoint, on_connect=self._on_connect, on_refused=self._on_refused)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.loop = LoopDriver(self.client, endpoint)

    # ------------------------------------------------------------------ callbacks (run inside loop.pump, never block)
    def _on_connect(self, client: mqtt.Client) -> None:
        self._subscribed = False
        client.subscribe(self._feedback_topic, qos=1)

    def _on_refused(self, reason: mqtt.ReasonCode) -> None:
        self._refused = reason

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        if any(r.is_failure for r in reasons):
            log.error("%s: feedback subscription refused: %s", self.device_id, reasons)
        else:
            self._subscribed = True

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        corr = getattr(message.properties, "CorrelationData", None) if message.properties is not None else None
        self._replies.append((bytes(message.payload), corr))

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> RemoteVerifier:
        self.loop.connect()
        ok = self.loop.pump_until(lambda: self._subscribed or self._refused is not None or self.loop.connection_losses,
                                  self.config.connect_timeout_s)
        if self._refused is not None or self.loop.connection_losses:
            self.loop.close()
            why = self._refused or "connection closed during the handshake (client certificate refused?)"
            hint = ""
            if self._refused is not None and int(self._refused.value) in (0x86, 0x87):  # credentials, authorization
                hint = (f" (a device logs in with its certificate, the username {self.device_id!r} = the certificate's "
                        "CN, and its password: broker.credentials in the board config)")
            raise RemoteVerifierError(f"{self.device_id}: broker refused the connection: {why}{hint}")
        if not ok:
            raise RemoteVerifierError(f"{self.device_id}: no feedback subscription after "
                                      f"{self.config.connect_timeout_s}s (broker down or not authorized)")
        return self

    def disconnect(self, send_close: bool = True) -> None:
        if send_close and self.worker_id is not None:
            self._publish(topics.worker_topic(self.device_id, self.worker_id),
                          encode(CloseSession(self.session_id, 0)), None)
            self.loop.pump(0.0)
        self.loop.close()

    def __enter__(self) -> RemoteVerifier:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # ------------------------------------------------------------------ requests
    def _publish(self, topic: str, payload: bytes, corr: bytes | None) -> None:
        props = publish_properties(self._feedback_topic, corr, self.config.draft_expiry_s)
        info = self.client.publish(topic, payload, qos=1, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_QUEUE_SIZE):
            log.warning("%s: publish on %s returned %s", self.device_id, topic, mqtt.error_string(info.rc))

    def _take(self, corr: bytes) -> Message | None:
        """The first queued reply carrying ``corr``, decoded; other queued replies are dropped. Never blocks."""
        while self._replies:
            payload, got = self._replies.popleft()
            if got != corr:
                self.stats.dropped_replies += 1
                continue
            try:
                return decode(payload)
            except ProtocolError as exc:
                log.warning("%s: undecodable reply dropped: %s", self.device_id, exc)
                self.stats.dropped_replies += 1
        return None

    def _await(self, corr: bytes, timeout_s: float) -> Message | None:
        """The decoded reply carrying ``corr``, or None on timeout; other replies are dropped."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._take(corr)
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.loop.pump(min(left, 0.05))

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int, vocab_hash: bytes) -> OpenAck:
        """Start a generation from ``prompt`` (a new session; the previous one, if any, is closed). Raises
        RemoteVerifierError when no worker accepts it."""
        if self.worker_id is not None:
            self._publish(topics.worker_topic(self.device_id, self.worker_id),
                          encode(CloseSession(self.session_id, 0)), None)
            self.session_id = random.getrandbits(63)
            self.worker_id = None
        self.history = [int(t) for t in prompt]
        self.prompt_len = len(self.history)
        self._sampling, self._vocab_size, self._vocab_hash = sampling, vocab_size, bytes(vocab_hash)
        self.next_seq = 0
        self._inflight = None
        return self._open(resync=False)

    def resume(self, prompt_len: int, history: Sequence[int], next_seq: int, sampling: SamplingParams,
               vocab_size: int, vocab_hash: bytes) -> OpenAck:
        """Continue a generation this board saved (after a reboot or a long absence): resync with the history."""
        self.history = [int(t) for t in history]
        self.prompt_len = prompt_len
        self._sampling, self._vocab_size, self._vocab_hash = sampling, vocab_size, bytes(vocab_hash)
        self.next_seq = next_seq
        return self.resync()

    def _open(self, resync: bool, deadline: float | None = None) -> OpenAck:
        """Open (or reopen) the session on whichever worker takes it; retried with backoff until ``deadline``
        (monotonic; default: ``recovery_deadline_s`` from now), so a verifier group that is restarting is waited
        for, not given up on."""
        msg = OpenSession(self.device_id, self.session_id, tuple(self.history), self._sampling, self._vocab_size,
                          self._vocab_hash, self.next_seq, resync)
        payload = encode(msg)
        started = time.monotonic()
        deadline = started + self.config.recovery_deadline_s if deadline is None else deadline
        backoff = self.config.resync_backoff_s
        attempts = 0
        while True:
            attempts += 1
            self._open_nonce += 1
            corr = _CORR.pack(self.session_id, self._open_nonce, _KIND_OPEN)
            self._publish(topics.open_topic(self.device_id), payload, corr)
            reply = self._await(corr, self.config.open_timeout_s)
            if isinstance(reply, OpenAck):
                if reply.position != len(self.history) or reply.session_id != self.session_id:
                    raise RemoteVerifierError(f"open ack for position {reply.position}, sent {len(self.history)}")
                self.worker_id = reply.worker_id
                log.info("%s: session %x %s on worker %s at position %d", self.device_id, self.session_id,
                         "resynced" if resync else "opened", reply.worker_id, reply.position)
                return reply
            if isinstance(reply, ErrorReply) and reply.code not in (ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL):
                raise RemoteVerifierError(f"open refused: {reply.code.name}: {reply.message}", reply.code)
            waited = time.monotonic() - started
            limit = self.config.max_resyncs
            if time.monotonic() + backoff >= deadline or (limit is not None and attempts >= limit):
                raise RemoteVerifierError(f"{self.device_id}: no verifier accepted the session in {waited:.0f} s "
                                          f"({attempts} attempts; broker {self.endpoint.url})", None)
            log.warning("%s: no verifier answered the session %s (attempt %d, %.0f s so far); retrying in %.2f s",
                        self.device_id, "resync" if resync else "open", attempts, waited, backoff)
            self.loop.pump_until(lambda: False, backoff)
            backoff = min(self.config.max_backoff_s, backoff * 2)

    def resync(self, deadline: float | None = None) -> OpenAck:
        self.stats.resyncs += 1
        return self._open(resync=True, deadline=deadline)

    def verify(self, tokens: Sequence[int], lattice: Sequence[bytes], ell: int, codec_mode: int) -> Feedback:
        """Send one draft round and return its feedback; the committed history grows by accepted + 1 tokens."""
        self.send(tokens, lattice, ell, codec_mode)
        return self.wait()

    def send(self, tokens: Sequence[int], lattice: Sequence[bytes], ell: int, codec_mode: int) -> None:
        """Publish one draft round and return at once; :meth:`poll` or :meth:`wait` collect its feedback."""
        if self.worker_id is None:
            raise RemoteVerifierError("verify before open")
        if self._inflight is not None:
            raise RemoteVerifierError(f"round {self._inflight.msg.round_seq} is still waiting for its feedback")
        seq, position = self.next_seq, len(self.history)
        msg = DraftRound(self.session_id, seq, position, self._vocab_size, ell, codec_mode,
                         tuple(int(t) for t in tokens), tuple(lattice))
        flight = _InFlight(msg, encode(msg), _CORR.pack(self.session_id, seq, _KIND_ROUND), time.perf_counter())
        self.loop.pump(0.0)  # acks and late replies that arrived while the board was drafting
        self._publish(topics.worker_topic(self.device_id, self.worker_id), flight.payload, flight.corr)
        flight.sent_at = flight.sent_first = time.monotonic()
        self._inflight = flight

    def poll(self) -> Feedback | None:
        """The in-flight round's feedback if it has arrived (never blocks); errors are left to :meth:`wait`."""
        flight = self._inflight
        if flight is None:
            raise RemoteVerifierError("no round in flight")
        if flight.early is None:
            self.loop.pump(0.0)
            flight.early = self._take(flight.corr)
        if isinstance(flight.early, Feedback):
            return self._commit(flight.early)
        return None

    def wait(self) -> Feedback:
        """Block until the in-flight round's feedback: resends, resyncs and backoff happen here."""
        flight = self._inflight
        if flight is None:
            raise RemoteVerifierError("no round in flight")
        seq = flight.msg.round_seq
        sends_on_worker = resyncs = 0
        deadline = flight.sent_first + self.config.recovery_deadline_s
        while True:
            if flight.early is not None:
                reply, flight.early = flight.early, None
            else:
                reply = self._await(flight.corr, flight.sent_at + self.config.feedback_timeout_s - time.monotonic())
            if isinstance(reply, Feedback):
                return self._commit(reply)
            if isinstance(reply, ErrorReply) and reply.code == ErrorCode.RATE_LIMITED:
                self.stats.rate_limited += 1
                self.loop.pump_until(lambda: False, self.config.rate_limited_backoff_s)
            elif isinstance(reply, ErrorReply) and reply.code not in _RESYNC_CODES:
                self._inflight = None
                raise RemoteVerifierError(f"round {seq} refused: {reply.code.name}: {reply.message}", reply.code)
            elif reply is None and sends_on_worker < self.config.max_resends:
                sends_on_worker += 1
                self.stats.resends += 1
                log.info("%s: no feedback for round %d from %s, resending", self.device_id, seq, self.worker_id)
            else:
                resyncs += 1
                limit = self.config.max_resyncs
                if (limit is not None and resyncs > limit) or time.monotonic() >= deadline:
                    self._inflight = None
                    raise RemoteVerifierError(f"round {seq}: no verifier answered in "
                                              f"{time.monotonic() - flight.sent_first:.0f} s ({resyncs - 1} resyncs)")
                try:
                    self.resync(deadline)
                except RemoteVerifierError:
                    self._inflight = None
                    raise
                sends_on_worker = 0
            self.loop.pump(0.0)
            self._publish(topics.worker_topic(self.device_id, self.worker_id), flight.payload, flight.corr)
            flight.sent_at = time.monotonic()

    def _commit(self, fb: Feedback) -> Feedback:
        flight = self._inflight
        assert flight is not None
        msg = flight.msg
        self._inflight = None
        consistent = fb.round_seq == msg.round_seq and fb.position == msg.position
        if not consistent or fb.accepted > msg.draft_len or not 0 <= fb.next_token < msg.vocab_size:
            raise RemoteVerifierError(f"inconsistent feedback for round {msg.round_seq}: {fb}")
        self.history.extend(msg.tokens[: fb.accepted])
        self.history.append(fb.next_token)
        self.next_seq += 1
        self.stats.rounds += 1
        self.stats.round_trip_us.append(int((time.perf_counter() - flight.started) * 1e6))
        return fb

    @property
    def generated(self) -> list[int]:
        return self.history[self.prompt_len:]


class MqttLink:
    """The engine's verifier link (:class:`edge_runtime.engine.VerifierLink`) over a :class:`RemoteVerifier`."""

    limits = DEFAULT_LIMITS  # the engine keeps every round within the protocol's limits table

    def __init__(self, remote: RemoteVerifier, codec_mode: int = CODEC_MODE_QSV1) -> None:
        self.remote = remote
        self.codec_mode = codec_mode

    def open(self, prompt: Sequence[int], sampling: SamplingParams, vocab_size: int,
             vocab_hash: bytes) -> VerifierInfo:
        ack = self.remote.open(prompt, sampling, vocab_size, vocab_hash)
        return VerifierInfo(tuple(c / 1e6 for c in ack.pass_us), ack.precision)

    def submit(self, draft: DraftedRound) -> None:
        self.remote.send(draft.tokens, draft.messages, draft.ell, self.codec_mode)

    def poll(self) -> Verdict | None:
        fb = self.remote.poll()
        return None if fb is None else self._verdict(fb)

    def wait(self) -> Verdict:
        return self._verdict(self.remote.wait())

    def channel_view(self) -> None:
        return None

    @staticmethod
    def _verdict(fb: Feedback) -> Verdict:
        return Verdict(fb.accepted, fb.next_token, fb.verify_us / 1e6, tuple(fb.accept_probs))
