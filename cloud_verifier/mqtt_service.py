"""MQTT 5 binding of the verifier: one worker process of a verifier group.

Subscriptions (docs/PROTOCOL.md, docs/DEPLOYMENT.md):
- ``$share/<group>/qsv/v1/+/draft``: session opens (and stray rounds) are load-balanced over the group's workers;
- ``qsv/v1/+/draft/<worker_id>``: rounds of the sessions this worker holds (session affinity: the KV cache stays).

One thread drives the MQTT client (``LoopDriver``, no paho network thread); the paho callback only enqueues, and the
same thread, between network pumps, decodes, checks (the protocol's limits table ``Limits``: sizes at decode, then
the per-device token-bucket rate and in-flight limits; topic device owns the session), deduplicates by (session,
round seq) — a duplicate gets the cached reply — hands the request to the handler (the transport-agnostic verifier
core) and publishes the reply with QoS 1 on the device's feedback topic, echoing the correlation data. Sessions idle
longer than ``idle_timeout_s`` are closed.

Nothing expensive runs on this thread: with the batching ``VerifierService`` (``submit`` / ``submit_open``), rounds
are verified on its batching thread and opens prefilled on its prefill thread; their Futures wake this thread, which
sends the replies. Handlers without those methods (the echo and toy verifiers) are called inline.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from cloud_verifier.calibration import add_precision_args
from qsv_models.registry import model_ref
from qsv_wire import cliargs, topics
from qsv_wire.logs import add_logging_args, setup_logging
from qsv_wire.mqtt_common import BrokerEndpoint, LoopDriver, make_client, publish_properties
from qsv_wire.protocol import (
    CloseSession,
    DraftRound,
    ErrorCode,
    ErrorReply,
    Feedback,
    Limits,
    OpenAck,
    OpenSession,
    ProtocolError,
    decode,
    encode,
)

log = logging.getLogger(__name__)


class VerifierHandler(Protocol):
    """What the MQTT service needs from the verifier core (plain dataclasses in and out)."""

    def open(self, msg: OpenSession) -> int | ErrorReply:
        """Create or replace the session with this full history; return the history length held."""

    def verify(self, msg: DraftRound) -> Feedback | ErrorReply: ...

    def close(self, session_id: int) -> None: ...


class TokenBucket:
    """``rate`` messages per second with bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Session:
    device_id: str
    last_seq: int = -1  # round seq of the last verified round
    last_reply: bytes | None = None
    last_active: float = 0.0


@dataclass
class ServiceStats:
    received: int = 0
    opens: int = 0
    rounds: int = 0
    duplicates: int = 0
    stale_dropped: int = 0
    errors: int = 0
    rate_limited: int = 0  # refused by the rate or the in-flight limit
    idle_closed: int = 0


@dataclass(frozen=True)
class WorkerConfig:
    """The MQTT worker: its identity, its group, the per-device limits it enforces before queueing. What the
    verification itself may cost (sessions, memory, batching) is the service's :class:`ServiceConfig`."""

    worker_id: str
    group: str = topics.DEFAULT_SHARE_GROUP
    idle_timeout_s: float = 60.0
    rate_per_s: float | None = None  # per device (a board sends one draft per round); None: limits.device_rate_per_s
    rate_burst: float | None = None  # None: limits.device_burst
    reply_expiry_s: int = 30
    max_sessions_per_device: int = 4  # a device opening more evicts its least recently active session
    use_submit: bool = True  # handlers with submit() / submit_open() -> Future (VerifierService) run asynchronously
    limits: Limits = field(default_factory=Limits)  # the one table: sizes, L, ℓ, history, rate, in flight
    max_queued_replies: int = 10000  # paho's outgoing queue; beyond it a reply is dropped (memory stays bounded)
    precision: str = ""  # reported in every OPEN_ACK with the cost curve below (cloud_verifier.calibration)
    pass_us: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Inbound:
    topic: str
    payload: bytes
    correlation: bytes | None
    received: float
    mid: int = 0
    qos: int = 0


@dataclass
class _Opening:
    """An OPEN whose prefill is running on the handler's thread; its ack answers the latest attempt's correlation."""

    device: str
    msg: OpenSession
    item: _Inbound
    future: Future


class MqttVerifierService:
    """Runs until ``stop()``; ``start()`` connects and starts the network loop and the worker thread."""

    def __init__(self, handler: VerifierHandler, endpoint: BrokerEndpoint, config: WorkerConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        topics.check_client_id(config.worker_id)
        self.handler = handler
        self.endpoint = endpoint
        self.config = config
        self.clock = clock
        self.stats = ServiceStats()
        self.sessions: dict[int, _Session] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._inbox: collections.deque[_Inbound] = collections.deque()
        self._inflight: dict[tuple[int, int], tuple] = {}
        self._opening: dict[int, _Opening] = {}
        self._load: collections.Counter[str] = collections.Counter()  # requests in flight per device
        self._done: collections.deque[tuple[str, object, str, Future]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self.client = make_client(f"qsv-verifier-{config.worker_id}", endpoint, on_connect=self._on_connect)
        # QoS 1 acks are sent after the reply (manual ack): the PUBACK leaves the round's critical path
        self.client.manual_ack_set(True)
        self.client.max_queued_messages_set(config.max_queued_replies)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.loop = LoopDriver(self.client, endpoint)

    # ------------------------------------------------------------------ callbacks (inside loop.pump; never block)
    def _on_connect(self, client: mqtt.Client) -> None:
        client.subscribe([(topics.shared_open_filter(self.config.group), 1),
                          (topics.worker_filter(self.config.worker_id), 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        bad = [r for r in reasons if r.is_failure]
        if bad:
            log.error("worker %s: subscription refused: %s", self.config.worker_id, bad)
        else:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        self._inbox.append(_Inbound(message.topic, bytes(message.payload), corr, self.clock(), message.mid,
                                    message.qos))

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait_s: float = 10.0) -> MqttVerifierService:
        """Connect, then serve on a background thread; returns once the subscriptions are granted."""
        self.loop.connect()
        self._thread = threading.Thread(target=self.serve, name=f"verifier-{self.config.worker_id}", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(wait_s):
            self.stop()
            raise TimeoutError(f"worker {self.config.worker_id}: not subscribed after {wait_s}s")
        log.info("worker %s ready (group %s)", self.config.worker_id, self.config.group)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.loop.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MqttVerifierService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the serving loop
    def serve(self) -> None:
        """Pump the network, handle what arrived, sweep idle sessions; until ``stop()``."""
        sweep_every = max(0.05, self.config.idle_timeout_s / 4)
        next_sweep = self.clock() + sweep_every
        try:
            while not self._stop.is_set():
                self.loop.pump(0.05)  # returns early on traffic or when a verification completes (wake)
                self._collect_done()
                while self._inbox:
                    item = self._inbox.popleft()
                    try:
                        self._handle(item)
                    except Exception:  # noqa: BLE001 - one bad message must not stop the worker
                        log.exception("worker %s: failure handling a message on %s", self.config.worker_id,
                                      item.topic)
                    if item.qos:
                        self.client.ack(item.mid, item.qos)
                now = self.clock()
                if now >= next_sweep:
                    self._sweep_idle(now)
                    next_sweep = now + sweep_every
        finally:
            self.loop.close()

    def _sweep_idle(self, now: float) -> None:
        for sid in [s for s, st in self.sessions.items() if now - st.last_active > self.config.idle_timeout_s]:
            log.info("worker %s: session %x idle, closed", self.config.worker_id, sid)
            self.sessions.pop(sid, None)
            self.handler.close(sid)
            self.stats.idle_closed += 1

    def _reply(self, device: str, payload: bytes, correlation: bytes | None) -> None:
        props = publish_properties(None, correlation, self.config.reply_expiry_s)
        # Always the device's own feedback topic, whatever ResponseTopic the request named: a device must not be
        # able to make the verifier publish into another device's feedback.
        self.client.publish(topics.feedback_topic(device), payload, qos=1, properties=props)

    def _error(self, device: str, corr: bytes | None, code: ErrorCode, text: str, sid: int = 0, seq: int = 0) -> bytes:
        self.stats.errors += 1
        payload = encode(ErrorReply(code, text, sid, seq))
        self._reply(device, payload, corr)
        return payload

    def _handle(self, item: _Inbound) -> None:
        self.stats.received += 1
        parsed = topics.parse_draft_topic(item.topic)
        if parsed is None:
            log.warning("message on unexpected topic %s ignored", item.topic)
            return
        device, _worker = parsed
        now = self.clock()
        bucket = self._buckets.get(device)
        if bucket is None:
            cfg = self.config
            rate = cfg.limits.device_rate_per_s if cfg.rate_per_s is None else cfg.rate_per_s
            burst = cfg.limits.device_burst if cfg.rate_burst is None else cfg.rate_burst
            bucket = self._buckets[device] = TokenBucket(rate, burst, now)
        if not bucket.take(now):
            self.stats.rate_limited += 1
            self._error(device, item.correlation, ErrorCode.RATE_LIMITED, "message rate limit exceeded")
            return
        try:
            msg = decode(item.payload, self.config.limits)
        except ProtocolError as exc:
            self._error(device, item.correlation, exc.code, exc.detail, exc.session_id, exc.round_seq)
            return
        if isinstance(msg, OpenSession):
            self._open(device, msg, item)
        elif isinstance(msg, DraftRound):
            self._round(device, msg, item)
        elif isinstance(msg, CloseSession):
            st = self.sessions.get(msg.session_id)
            opening = self._opening.get(msg.session_id)
            if (st is not None and st.device_id == device) or (opening is not None and opening.device == device):
                self.sessions.pop(msg.session_id, None)
                self._opening.pop(msg.session_id, None)  # its prefill is cancelled; no ack will be sent
                self.handler.close(msg.session_id)
        else:
            self._error(device, item.correlation, ErrorCode.UNEXPECTED, f"{type(msg).__name__} not accepted here")

    def _open(self, device: str, msg: OpenSession, item: _Inbound) -> None:
        if msg.device_id != device:
            self._error(device, item.correlation, ErrorCode.NOT_OWNER, "device_id differs from the topic's device",
                        msg.session_id)
            return
        held = self.sessions.get(msg.session_id)
        if held is not None and held.device_id != device:
            self._error(device, item.correlation, ErrorCode.NOT_OWNER, "session belongs to another device",
                        msg.session_id)
            return
        if held is not None and msg.next_round_seq <= held.last_seq:
            self.stats.stale_dropped += 1  # a late copy of an older open: the session has moved on
            return
        opening = self._opening.get(msg.session_id)
        if opening is not None and opening.device != device:
            self._error(device, item.correlation, ErrorCode.NOT_OWNER, "session belongs to another device",
                        msg.session_id)
            return
        if opening is not None and opening.msg == msg:  # the board retried while the prefill runs
            self.stats.duplicates += 1
            opening.item = item  # the ack will carry this attempt's correlation data
            return
        submit_open = getattr(self.handler, "submit_open", None) if self.config.use_submit else None
        if submit_open is None:
            self.stats.opens += 1
            self._open_done(device, msg, item, self.handler.open(msg))
            return
        if not self._admit_load(device, item, msg.session_id):
            return
        self.stats.opens += 1
        future = submit_open(msg, device)
        self._opening[msg.session_id] = _Opening(device, msg, item, future)  # supersedes an older one
        self._load[device] += 1
        future.add_done_callback(
            lambda f, sid=msg.session_id: (self._done.append(("open", sid, device, f)), self.loop.wake()))

    def _admit_load(self, device: str, item: _Inbound, sid: int, seq: int = 0) -> bool:
        """The per-device in-flight limit: False (and a RATE_LIMITED reply) when the device has enough pending."""
        if self._load[device] < self.config.limits.device_inflight:
            return True
        self.stats.rate_limited += 1
        self._error(device, item.correlation, ErrorCode.RATE_LIMITED,
                    f"{self._load[device]} requests of this device in flight (limit "
                    f"{self.config.limits.device_inflight})", sid, seq)
        return False

    def _open_done(self, device: str, msg: OpenSession, item: _Inbound, result: int | ErrorReply) -> None:
        if isinstance(result, ErrorReply):
            self.stats.errors += 1
            self._reply(device, encode(result), item.correlation)
            return
        held = self.sessions.get(msg.session_id)
        if held is None:
            self._evict_excess(device)
        self.sessions[msg.session_id] = _Session(device, msg.next_round_seq - 1, None, self.clock())
        ack = OpenAck(msg.session_id, self.config.worker_id, result, msg.next_round_seq, self.config.precision,
                      self.config.pass_us)
        self._reply(device, encode(ack), item.correlation)

    def _evict_excess(self, device: str) -> None:
        """Make room for one more session of ``device`` (bounded state per device, whatever it sends)."""
        own = sorted((st.last_active, sid) for sid, st in self.sessions.items() if st.device_id == device)
        for _, sid in own[: max(0, len(own) - self.config.max_sessions_per_device + 1)]:
            log.info("worker %s: device %s over its session limit, session %x evicted", self.config.worker_id,
                     device, sid)
            self.sessions.pop(sid)
            self.handler.close(sid)

    def _round(self, device: str, msg: DraftRound, item: _Inbound) -> None:
        sid, seq = msg.session_id, msg.round_seq
        st = self.sessions.get(sid)
        if st is None:
            self._error(device, item.correlation, ErrorCode.UNKNOWN_SESSION, "session not held by this worker", sid,
                        seq)
            return
        if st.device_id != device:
            self._error(device, item.correlation, ErrorCode.NOT_OWNER, "session belongs to another device", sid, seq)
            return
        st.last_active = self.clock()
        if seq == st.last_seq and st.last_reply is not None:
            self.stats.duplicates += 1
            self._reply(device, st.last_reply, item.correlation)
            return
        if seq <= st.last_seq:
            self.stats.stale_dropped += 1
            log.debug("session %x: stale round %d (at %d) dropped", sid, seq, st.last_seq)
            return
        if seq != st.last_seq + 1:
            self._error(device, item.correlation, ErrorCode.DESYNC, f"round {seq} after {st.last_seq}", sid, seq)
            return
        start = self.clock()
        submit = getattr(self.handler, "submit", None) if self.config.use_submit else None
        if submit is None:
            self._finish_round(device, item, st, msg, self.handler.verify(msg), start)
            return
        key = (sid, seq)
        if key in self._inflight:  # a copy of a round that is being verified: its reply is on the way
            self.stats.duplicates += 1
            return
        if not self._admit_load(device, item, sid, seq):
            return
        self._inflight[key] = (device, item, st, msg, start)
        self._load[device] += 1
        future = submit(msg, device)  # the core may batch it with other boards' rounds
        future.add_done_callback(lambda f, key=key: (self._done.append(("round", key, device, f)),
                                                     self.loop.wake()))

    def _finish_round(self, device: str, item: _Inbound, st: _Session, msg: DraftRound,
                      result: Feedback | ErrorReply, start: float) -> None:
        done = self.clock()
        if isinstance(result, Feedback):
            result = dataclasses.replace(result, queue_us=int((start - item.received) * 1e6),
                                         verify_us=int((done - start) * 1e6))
            self.stats.rounds += 1
        else:
            self.stats.errors += 1
        payload = encode(result)
        if isinstance(result, Feedback) and msg.round_seq > st.last_seq:
            st.last_seq, st.last_reply = msg.round_seq, payload
        self._reply(device, payload, item.correlation)

    def _collect_done(self) -> None:
        while self._done:
            kind, key, owner, future = self._done.popleft()
            self._load[owner] -= 1
            if self._load[owner] <= 0:
                del self._load[owner]
            if kind == "open":
                opening = self._opening.get(key)
                if opening is None or opening.future is not future:
                    continue  # superseded by a newer open, or closed: nobody waits for this answer
                del self._opening[key]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - reported to the board
                    log.exception("worker %s: open failed", self.config.worker_id)
                    result = ErrorReply(ErrorCode.INTERNAL, f"open failed: {exc}", key)
                self._open_done(opening.device, opening.msg, opening.item, result)
                continue
            device, item, st, msg, start = self._inflight.pop(key)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - reported to the board
                log.exception("worker %s: verification failed", self.config.worker_id)
                result = ErrorReply(ErrorCode.INTERNAL, f"verification failed: {exc}", msg.session_id,
                                    msg.round_seq)
            self._finish_round(device, item, st, msg, result, start)


# ---------------------------------------------------------------------------------------------------------- CLI


BROKER_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


def broker_url(text: str) -> tuple[str, str, int]:
    """argparse type of ``--broker``: ``mqtt://HOST[:PORT]`` (plain, 1883) or ``mqtts://HOST[:PORT]`` (TLS, 8883)
    → (scheme, host, port)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad broker URL {text!r}: {exc}") from None
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"bad broker URL {text!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    return parts.scheme, parts.hostname, port or BROKER_SCHEMES[parts.scheme]


def _endpoint_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BrokerEndpoint:
    """The broker endpoint of ``--broker`` and the credential flags; contradictions end the command (exit 2)."""
    scheme, host, port = args.broker
    if scheme == "mqtts" and args.ca is None:
        parser.error("--broker mqtts://… needs --ca (the CA certificate that signed the broker's)")
    if scheme == "mqtt" and (args.ca or args.cert or args.key):
        parser.error("--ca/--cert/--key need a TLS broker URL (mqtts://HOST[:PORT])")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.password and args.password_file:
        parser.error("give --password or --password-file, not both")
    for flag in ("ca", "cert", "key"):  # checked here, after the contradictions, so those are reported first
        if getattr(args, flag) is not None:
            try:
                cliargs.readable_file(str(getattr(args, flag)))
            except cliargs.Error as exc:
                parser.error(f"--{flag}: {exc}")
    try:
        password = Path(args.password_file).read_text().strip() if args.password_file else args.password
    except OSError as exc:
        parser.error(f"--password-file: cannot read {args.password_file}: {exc.strerror}")
    return BrokerEndpoint(host, port, args.username, password, args.ca, args.cert, args.key)


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", type=broker_url, default=broker_url("mqtt://127.0.0.1:1883"), metavar="URL",
                   help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS; needs --ca) (default mqtt://127.0.0.1:1883)")
    p.add_argument("--username", type=cliargs.non_empty)
    p.add_argument("--password", help="prefer --password-file")
    p.add_argument("--password-file", type=Path)
    p.add_argument("--ca", type=Path, help="CA certificate (with mqtts://)")
    p.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--key", type=Path, help="client key")


def _torch_handler(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> tuple[VerifierHandler, str, tuple[int, ...]]:
    """The batching PyTorch VerifierService (cloud_verifier.service), started; with the precision the target runs
    in and its measured pass costs (µs for n = 1, 2, … tokens) for the OPEN replies."""
    from cloud_verifier.cli import random_target
    from cloud_verifier.service import ServiceConfig, VerifierService

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.model:
        from cloud_verifier.loading import load_target_from_args

        loaded = load_target_from_args(parser, args, say=lambda line: print(line, file=sys.stderr, flush=True))
        target, vocab_hash = loaded.target, loaded.vocab_hash
        precision, pass_us = loaded.precision, tuple(int(round(c * 1000)) for c in loaded.curve.pass_ms)
        summary = {"precision": loaded.precision, "reason": loaded.describe(), "pass_ms": loaded.curve.pass_ms,
                   "rows": loaded.choice.rows if loaded.choice else [], "timings": loaded.timings,
                   "weights_from_cache": loaded.from_cache}
        print("PRECISION " + json.dumps(summary), flush=True)  # noqa: T201 - read by the demo before READY
    else:
        dtype = "fp32" if args.dtype == "auto" else args.dtype
        target, vocab_hash = random_target(args.random_model, args.device, dtype), None
        precision, pass_us = target.precision, ()
    core = ServiceConfig(idle_timeout_s=max(args.idle_timeout * 2, 1.0), max_batch=args.max_batch,
                         vocab_hash=vocab_hash, worker_id=args.worker_id)
    return VerifierService(target, core).start(), precision, pass_us


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv verifier",
                                description="QSV verifier worker on MQTT (one process of a shared-subscription group)")
    add_endpoint_args(p)
    p.add_argument("--worker-id", required=True, type=cliargs.client_id)
    p.add_argument("--group", default=topics.DEFAULT_SHARE_GROUP, type=cliargs.client_id)
    p.add_argument("--idle-timeout", type=cliargs.positive_float, default=60.0,
                   help="seconds before an idle session is dropped")
    p.add_argument("--rate", type=cliargs.positive_float, default=None,
                   help=f"messages/s per device (token bucket; default {Limits().device_rate_per_s:g}, the protocol's "
                        "limits table)")
    p.add_argument("--burst", type=cliargs.positive_float, default=None, help=f"(default {Limits().device_burst:g})")
    p.add_argument("--echo", action="store_true", help="serve the zero-compute echo verifier (transport benchmark)")
    p.add_argument("--model", type=model_ref,
                   help="serve the PyTorch verifier: registry name, .gguf file or HF model folder")
    p.add_argument("--random-model", choices=["tiny", "smollm2-135m"], help="PyTorch verifier with random weights")
    p.add_argument("--device", default="auto", type=cliargs.torch_device)
    add_precision_args(p)
    p.add_argument("--max-batch", type=cliargs.positive_int, default=16)
    p.add_argument("--threads", type=cliargs.non_negative_int, default=0,
                   help="torch intra-op threads per compute thread (0: torch default; the verifier runs two compute "
                        "threads, rounds and prefill, so 1 avoids oversubscribing a small CPU)")
    add_logging_args(p, default="INFO", json_lines=True)
    return p


def main(argv: list[str] | None = None, handler: VerifierHandler | None = None) -> int:
    """``handler``: serve this one instead of the one the options choose (the tests serve their doubles this way)."""
    p = build_parser()
    args = p.parse_args(argv)
    if handler is None and not (args.echo or args.model or args.random_model):
        p.error("choose a verifier: --model / --random-model (PyTorch) or --echo")
    endpoint = _endpoint_from_args(p, args)  # checked before any model is loaded
    setup_logging(args)
    precision, pass_us = "", ()
    if handler is None and args.echo:
        from cloud_verifier.echo import EchoVerifier

        handler = EchoVerifier()
    elif handler is None:
        handler, precision, pass_us = _torch_handler(p, args)
    cfg = WorkerConfig(args.worker_id, args.group, args.idle_timeout, args.rate, args.burst, precision=precision,
                       pass_us=pass_us)
    service = MqttVerifierService(handler, endpoint, cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        service.start()
    except OSError as exc:  # broker unreachable / refused: a runtime failure, one line, exit 1
        log.error("cannot connect to the broker %s:%d: %s", endpoint.host, endpoint.port, exc.strerror or exc)
        return 1
    print(f"READY {args.worker_id}", flush=True)  # noqa: T201 - readiness line for supervisors and tests
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
