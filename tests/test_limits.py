"""Cost limits and reserved values (issue "Hardening", items 2 and 3).

One table, ``qsv_wire.protocol.Limits``: every limit is refused with its error code on decode and on encode,
reserved codec modes / close reasons / codec fields are refused on both sides, the edge never drafts beyond the
table, the verifier's scheduler is fair per device (devices in turn, an expensive one isolated; queues bounded), opens
are prefilled in chunks off the caller's thread, and over MQTT every refused message leaves the worker serving the
other devices (real mosquitto, tiny PyTorch verifier)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import struct
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from qsv_wire import codec
from qsv_wire.lattice import LatticePoint
from qsv_wire.protocol import (
    CLOSE_REASONS,
    CODEC_MODE_QSV1,
    CODEC_MODE_TOY,
    CODEC_MODES,
    DEFAULT_LIMITS,
    HEADER_SIZE,
    CloseSession,
    DraftRound,
    ErrorCode,
    ErrorReply,
    Limits,
    OpenSession,
    ProtocolError,
    SamplingParams,
    decode,
    encode,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (tests/conftest.py)

LOOSE = Limits(max_message_bytes=4 << 20, max_draft_len=255, max_ell=65535, max_history=1 << 20)


def draft(**kw) -> DraftRound:
    args = dict(session_id=7, round_seq=3, position=40, vocab_size=96, ell=240, codec_mode=CODEC_MODE_QSV1,
                tokens=(5, 6), lattice=(b"\x01", b"\x02"))
    args.update(kw)
    return DraftRound(**args)


def refused(fn, code: ErrorCode) -> ProtocolError:  # noqa: ANN001
    with pytest.raises(ProtocolError) as info:
        fn()
    assert info.value.code == code, info.value
    return info.value


# ------------------------------------------------------------------------------------------------------ protocol
def test_limits_table_is_frozen_and_documented_values() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_ell = 4  # type: ignore[misc]
    assert (DEFAULT_LIMITS.max_draft_len, DEFAULT_LIMITS.max_ell, DEFAULT_LIMITS.max_history) == (32, 1024, 32768)
    assert DEFAULT_LIMITS.max_message_bytes == 128 << 10 and DEFAULT_LIMITS.device_inflight == 2
    # the largest legal messages fit: an OPEN of max_history ids at the largest V, a DRAFT of max L points at max ℓ
    vmax = DEFAULT_LIMITS.max_vocab_size
    big_open = OpenSession("d", 1, (1,) * DEFAULT_LIMITS.max_history, SamplingParams(), vmax, bytes(32))
    assert len(encode(big_open)) <= DEFAULT_LIMITS.max_message_bytes
    point_bytes = (codec.bound_bits(vmax, DEFAULT_LIMITS.max_ell) + 1 + 7) // 8
    L = DEFAULT_LIMITS.max_draft_len
    assert len(encode(draft(vocab_size=vmax, ell=DEFAULT_LIMITS.max_ell, tokens=(1,) * L,
                            lattice=(b"\x01" * point_bytes,) * L))) <= DEFAULT_LIMITS.max_message_bytes


@pytest.mark.parametrize("case", ["L", "ell", "size", "history"])
def test_each_size_limit_is_too_large_on_decode_and_encode(case: str) -> None:
    msg = {
        "L": draft(tokens=(1,) * 33, lattice=(b"\x01",) * 33),
        "ell": draft(ell=DEFAULT_LIMITS.max_ell + 1),
        "size": draft(lattice=(b"\x01" * (64 << 10), b"\x02" * (64 << 10))),
        "history": OpenSession("d", 9, (1,) * (DEFAULT_LIMITS.max_history + 1), SamplingParams(), 96, bytes(32)),
    }[case]
    data = encode(msg, LOOSE)  # what a sender ignoring the table would put on the wire
    err = refused(lambda: decode(data), ErrorCode.TOO_LARGE)
    if case in ("L", "ell"):
        assert (err.session_id, err.round_seq) == (7, 3)  # the reply names the round
    refused(lambda: encode(msg), ErrorCode.TOO_LARGE)


@pytest.mark.parametrize("mode", [1, 2, 7, 128, 254])
def test_reserved_codec_modes_are_refused_on_both_sides(mode: int) -> None:
    assert mode not in CODEC_MODES
    refused(lambda: encode(draft(codec_mode=mode)), ErrorCode.BAD_PARAMS)
    data = bytearray(encode(draft(codec_mode=CODEC_MODE_QSV1)))
    data[HEADER_SIZE + 23] = mode  # the codec mode byte
    err = refused(lambda: decode(bytes(data)), ErrorCode.BAD_PARAMS)
    assert (err.session_id, err.round_seq) == (7, 3)
    for defined in sorted(CODEC_MODES):
        data[HEADER_SIZE + 23] = defined
        assert decode(bytes(data)).codec_mode == defined


@pytest.mark.parametrize("reason", [3, 7, 255])
def test_reserved_close_reasons_are_refused(reason: int) -> None:
    assert reason not in CLOSE_REASONS
    refused(lambda: encode(CloseSession(5, reason)), ErrorCode.MALFORMED)
    data = bytearray(encode(CloseSession(5, 0)))
    data[-1] = reason
    assert refused(lambda: decode(bytes(data)), ErrorCode.MALFORMED).session_id == 5


def test_unknown_error_codes_are_malformed_so_v1_adds_none() -> None:
    """A v1 decoder refuses an unknown error code: the limits therefore reuse TOO_LARGE and RATE_LIMITED."""
    data = bytearray(encode(ErrorReply(ErrorCode.TOO_LARGE, "x", 1, 2)))
    data[HEADER_SIZE + 12 : HEADER_SIZE + 14] = struct.pack("<H", max(ErrorCode) + 1)
    refused(lambda: decode(bytes(data)), ErrorCode.MALFORMED)


# ---------------------------------------------------------------------------------------------------------- codec
def _bits(text: str) -> bytes:
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i : i + 8], 2) for i in range(0, len(text), 8))


# V = 10, ℓ = 5, the sparse example of docs/CODEC.md with one field changed (also seeds of csrc/fuzz/corpus)
SPARSE_OK = "1" "001" "0" "00001" "00" "0000" "011" "0011" "01"
RESERVED_FIELDS = {
    "gap k 25": "1" "001" "0" "11001" "00" "0000" "011" "0011" "01",
    "gap k 31": "1" "001" "1" "11111" "00" "0000" "011" "0011" "01",
    "count family 3": "1" "001" "0" "00001" "11" "0000" "011" "0011" "01",
    "nnz above min(V, ell)": "1" "101" "0" "00001" "00" "0000" "011" "0011" "01",
}


@pytest.mark.parametrize("name", sorted(RESERVED_FIELDS))
def test_reserved_codec_fields_are_refused(name: str) -> None:
    assert codec.decode(_bits(SPARSE_OK), 10, 5) == LatticePoint.trusted(
        np.array([3, 9], np.uint32), np.array([2, 3], np.uint32), 5, 10)
    from qsv_wire._qsv_core import lib

    with pytest.raises(codec.CodecError, match=f"error {lib.QSV_ERR_MALFORMED}"):
        codec.decode(_bits(RESERVED_FIELDS[name]), 10, 5)


@pytest.mark.parametrize("mode", [3, 7, 255, -1])
def test_reserved_encoder_modes_are_refused_by_the_c_core(mode: int) -> None:
    from qsv_wire._qsv_core import ffi, lib

    idx, cnt = np.array([3, 9], np.uint32), np.array([2, 3], np.uint32)
    bits = ffi.new("uint64_t *")
    params = codec._get(10, 5).params
    point = ffi.new("qsv_point *", (ffi.from_buffer("uint32_t[]", idx), ffi.from_buffer("uint32_t[]", cnt), 2, 2))
    rc = lib.qsv_codec_encoded_bits(params, point, mode, bits, ffi.NULL)
    assert rc == lib.QSV_ERR_ARG
    with pytest.raises(codec.CodecError):
        codec.encode(LatticePoint.trusted(idx, cnt, 5, 10), 10, 5, mode=str(mode))


# ----------------------------------------------------------------------------------------------------------- edge
def test_board_config_cannot_exceed_the_table() -> None:
    from pathlib import Path

    from edge_runtime.config import validate_config_text

    text = (Path(__file__).resolve().parents[1] / "firmware_configs" / "x86-dev.yaml").read_text()
    assert validate_config_text(text)[0] == []
    issues, _ = validate_config_text(text.replace("L_max: 12", "L_max: 40").replace("[240, 720]", "[240, 2000]"))
    assert sorted(i.path for i in issues) == ["controller.L_max", "controller.ell_set[1]"]
    assert "max draft length 32" in issues[0].message or "max draft length 32" in issues[1].message


def test_engine_clamps_L_and_refuses_ell_on_a_wire_link() -> None:
    from edge_runtime.controller.types import Decision
    from edge_runtime.engine import EngineError, RoundEngine
    from edge_runtime.transport.remote import MqttLink

    engine = RoundEngine.__new__(RoundEngine)
    engine.link = MqttLink.__new__(MqttLink)
    assert engine._within_limits(Decision(64, 240)) == Decision(32, 240)
    assert engine._within_limits(Decision(4, 1024)) == Decision(4, 1024)
    with pytest.raises(EngineError, match="max ell 1024"):
        engine._within_limits(Decision(4, 1025))
    engine.link = object()  # a local link (no wire): no protocol limits
    assert engine._within_limits(Decision(64, 4096)) == Decision(64, 4096)


# ------------------------------------------------------------------------------------------------ fair scheduler
@dataclasses.dataclass
class _Item:
    name: str
    future: Future = dataclasses.field(default_factory=Future)


def test_scheduler_isolates_an_expensive_device_and_bounds_queues() -> None:
    from cloud_verifier.batching import BatchScheduler, QueueFull

    batches: list[list[str]] = []
    gate = threading.Event()

    def process(items: list[_Item]) -> None:
        batches.append([it.name for it in items])
        if items[0].name == "f1":
            gate.wait(5)  # hold the first batch while the others queue
        for it in items:
            it.admit_s = 0.05 if it.name.startswith("f") else 0.0001  # the flooder's rounds are costly to decode
            it.future.set_result(None)

    sched = BatchScheduler(process, max_batch=8, max_wait_s=0.0, max_queued_per_key=2, isolate_admit_s=0.01)
    sched.start()
    try:
        sched.submit(_Item("f1"), "flood")
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.001)
        sched.submit(_Item("f2"), "flood")
        sched.submit(_Item("f3"), "flood")
        with pytest.raises(QueueFull):
            sched.submit(_Item("f4"), "flood")  # bounded per device
        light = [sched.submit(_Item("a1"), "a"), sched.submit(_Item("b1"), "b")]
        gate.set()
        for f in light:
            f.result(5)
        sched.submit(_Item("f5"), "flood").result(5)
        sched.submit(_Item("a2"), "a").result(5)
    finally:
        sched.stop()
    assert batches[0] == ["f1"]
    # the cheap devices share a batch and the flooder's rounds come one per batch, alone, in turn with them
    assert batches[1] == ["a1", "b1"], batches
    assert batches[2:4] == [["f2"], ["f3"]] and sched.isolated_batches >= 2
    assert ["a2"] in batches


def test_an_isolated_devices_round_yields_between_slices() -> None:
    from cloud_verifier.batching import BatchScheduler

    order: list[str] = []
    slices = {"f": 0}

    def process(items: list[_Item]) -> None:
        for it in items:
            order.append(it.name)
            if it.name == "f" and slices["f"] < 3:  # a long admission: three more slices to go
                slices["f"] += 1
                assert it.isolated
                it.requeue = True
                time.sleep(0.01)
                continue
            it.admit_s = 0.05 if it.name == "f" else 0.0
            it.future.set_result(it.name)

    sched = BatchScheduler(process, max_batch=8, max_wait_s=0.0, isolate_admit_s=0.01)
    sched._admit_cost["flood"] = 0.05  # known to be expensive
    sched.start()
    try:
        f = sched.submit(_Item("f"), "flood")
        while not order:
            time.sleep(0.001)
        a = sched.submit(_Item("a"), "a")
        assert a.result(5) == "a" and f.result(5) == "f"
    finally:
        sched.stop()
    assert order.index("a") < len(order) - 1 and order.count("f") == 4  # a was served between f's slices
    assert sched.items == 2


# ---------------------------------------------------------------------------------------------- verifier service
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cloud_verifier.service import (  # noqa: E402
    ServiceConfig,  # noqa: E402
    ServiceErrorCode,
    VerifierService,
)
from cloud_verifier.target import TargetModel  # noqa: E402

VOCAB = 96
HASH = hashlib.sha256(b"tiny-vocab").digest()


@pytest.fixture(scope="module")
def target() -> TargetModel:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)
    return TargetModel(transformers.LlamaForCausalLM(cfg).eval(), "cpu")



def open_msg(sid: int, history, device: str = "dev-a", seq: int = 0) -> OpenSession:  # noqa: ANN001
    return OpenSession(device, sid, tuple(int(t) for t in history), SamplingParams(seed=sid), VOCAB, HASH, seq)


def one_point_round(sid: int, position: int, seq: int = 0, ell: int = 240, mode: int = CODEC_MODE_QSV1,
                    L: int = 1) -> DraftRound:
    """L drafts of token 3, each from a point with all mass on token 3 (always in its support)."""
    blob = codec.encode(LatticePoint.trusted(np.array([3], np.uint32), np.array([ell], np.uint32), ell, VOCAB),
                        VOCAB, ell)
    return DraftRound(sid, seq, position, VOCAB, ell, mode, (3,) * L, (blob,) * L)


def test_service_refuses_unsupported_codec_modes_and_ell_above_the_limit(target) -> None:
    service = VerifierService(target, ServiceConfig(vocab_hash=HASH))
    assert service.open(open_msg(1, [1, 2, 3])) == 3
    for mode, reason in ((CODEC_MODE_TOY, ServiceErrorCode.UNSUPPORTED_CODEC), (7, ServiceErrorCode.UNSUPPORTED_CODEC)):
        reply = service.verify(one_point_round(1, 3, mode=mode))
        assert reply.reason is reason and reply.code == ErrorCode.BAD_PARAMS
    reply = service.verify(one_point_round(1, 3, ell=2000))
    assert reply.reason is ServiceErrorCode.ROUND_TOO_LARGE and reply.code == ErrorCode.TOO_LARGE
    reply = service.verify(one_point_round(1, 3, L=33))
    assert reply.code == ErrorCode.TOO_LARGE
    assert service.verify(one_point_round(1, 3)).round_seq == 0  # the session is untouched by the refusals


def test_sliced_admission_gives_the_same_feedback(target) -> None:
    """An isolated device's rounds are decoded one point per slice here: the feedback is that of a plain service."""
    cfg = dict(vocab_hash=HASH, max_wait_s=0.0)
    sliced = VerifierService(target, ServiceConfig(isolate_admit_s=0.0, admit_slice_s=0.0, **cfg)).start()
    plain = VerifierService(target, ServiceConfig(**cfg))
    try:
        replies = []
        for service in (sliced, plain):
            service.open(open_msg(1, [1, 2, 3], device="f"))
            first = service.verify(one_point_round(1, 3, L=1))  # makes "f" known (and, at threshold 0, isolated)
            second = service.verify(one_point_round(1, 3 + first.accepted + 1, seq=1, L=8))
            replies.append((first, second))
        assert [dataclasses.replace(r, queue_us=0, verify_us=0) for r in replies[0]] == \
            [dataclasses.replace(r, queue_us=0, verify_us=0) for r in replies[1]]
        deadline = time.monotonic() + 5.0  # the scheduler counts a batch just after its futures are resolved
        while sliced.scheduler.items < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sliced.scheduler.isolated_batches >= 8 and sliced.scheduler.items == 2
    finally:
        sliced.stop()


def test_chunked_prefill_equals_one_pass_and_runs_off_the_callers_thread(target) -> None:
    history = list(np.random.default_rng(1).integers(0, VOCAB, 300))
    whole = target.prefill(history[:-1])
    service = VerifierService(target, ServiceConfig(vocab_hash=HASH, prefill_chunk_tokens=7)).start()
    try:
        future = service.submit_open(open_msg(2, history))
        assert service.open(open_msg(3, [4, 5], device="dev-b")) == 2  # another device's open is not stuck behind
        assert future.result(30) == 300
        kv = service.sessions.get(2).kv
        assert kv.length == whole.length == 299
        for (k1, v1), (k2, v2) in zip(kv.layers, whole.layers, strict=True):
            torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
        # a newer open of the same session supersedes one still being prefilled; a close cancels one
        slow = service.submit_open(open_msg(4, history))
        fresh = service.submit_open(open_msg(4, history[:50]))
        assert slow.result(30).reason is ServiceErrorCode.SUPERSEDED
        assert fresh.result(30) == 50
        doomed = service.submit_open(open_msg(5, history))
        service.close(5)
        assert doomed.result(30).reason is ServiceErrorCode.SUPERSEDED and 5 not in service.sessions
    finally:
        service.stop()


# ----------------------------------------------------------------------------------------------------- over MQTT
paho = pytest.importorskip("paho.mqtt.client")

from cloud_verifier.mqtt_service import MqttVerifierService, WorkerConfig  # noqa: E402
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier  # noqa: E402
from qsv_wire import topics  # noqa: E402
from qsv_wire.mqtt_common import LoopDriver, make_client, publish_properties  # noqa: E402


class Raw:
    """A bare device client: publishes raw payloads, collects its feedback topic."""

    def __init__(self, device: str, endpoint) -> None:  # noqa: ANN001
        self.client = make_client(topics.device_client_id(device, f"raw-{time.monotonic_ns() % 10**9}"), endpoint)
        self.loop = LoopDriver(self.client, endpoint)
        self.replies: collections.deque = collections.deque()
        self.ready = False
        self.device = device
        self.client.on_message = lambda c, u, m: self.replies.append(m)
        self.client.on_subscribe = lambda *a: setattr(self, "ready", True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.feedback_topic(device), qos=1)
        self.loop.connect()
        assert self.loop.pump_until(lambda: self.ready, 5.0)

    def send(self, topic: str, payload: bytes, corr: bytes) -> None:
        self.client.publish(topic, payload, qos=1, properties=publish_properties(None, corr, 10))
        self.loop.pump(0.0)

    def reply(self, corr: bytes, timeout_s: float = 10.0):  # noqa: ANN201
        found: list = []

        def done() -> bool:
            for m in list(self.replies):
                if m.properties.CorrelationData == corr:
                    self.replies.remove(m)
                    found.append(decode(m.payload))
                    return True
            return False

        assert self.loop.pump_until(done, timeout_s), f"no reply to {corr!r}"
        return found[0]

    def close(self) -> None:
        self.loop.close()


def with_byte(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


def test_every_limit_is_refused_over_mqtt_and_the_worker_keeps_serving(mosquitto_broker, target) -> None:
    core = VerifierService(target, ServiceConfig(vocab_hash=HASH, max_wait_s=0.0005, prefill_chunk_tokens=8)).start()
    worker = MqttVerifierService(core, mosquitto_broker.endpoint("verifier"), WorkerConfig("w-lim", group="g-lim"))
    worker.start()
    good = RemoteVerifier("dev-a", mosquitto_broker.endpoint("dev-a"),
                          EdgeTransportConfig(feedback_timeout_s=5.0, open_timeout_s=5.0)).connect()
    bad = Raw("dev-b", mosquitto_broker.endpoint("dev-b"))
    try:
        good.open([1, 2, 3], SamplingParams(seed=1), VOCAB, HASH)

        def good_round() -> None:
            rnd = one_point_round(0, len(good.history))
            fb = good.verify(rnd.tokens, rnd.lattice, 240, CODEC_MODE_QSV1)
            assert fb.position == len(good.history) - fb.accepted - 1

        bad.send(topics.open_topic("dev-b"), encode(open_msg(77, [1, 2, 3], device="dev-b")), b"o77")
        assert bad.reply(b"o77").position == 3
        wt = topics.worker_topic("dev-b", "w-lim")
        cases = {
            b"L": (wt, encode(one_point_round(77, 3, L=33), LOOSE), ErrorCode.TOO_LARGE),
            b"ell": (wt, encode(one_point_round(77, 3, ell=1100), LOOSE), ErrorCode.TOO_LARGE),
            b"size": (wt, encode(draft(session_id=77, position=3, lattice=(b"\x01" * 70000,) * 2), LOOSE),
                      ErrorCode.TOO_LARGE),
            b"history": (topics.open_topic("dev-b"),
                         encode(open_msg(78, [1] * (DEFAULT_LIMITS.max_history + 1), device="dev-b"), LOOSE),
                         ErrorCode.TOO_LARGE),
            b"model-context": (topics.open_topic("dev-b"), encode(open_msg(79, [1] * 8193, device="dev-b")),
                               ErrorCode.TOO_LARGE),  # within the table, beyond the model's 8,192 positions
            b"mode7": (wt, with_byte(encode(one_point_round(77, 3)), HEADER_SIZE + 23, 7), ErrorCode.BAD_PARAMS),
            b"mode255": (wt, encode(one_point_round(77, 3, mode=CODEC_MODE_TOY)), ErrorCode.BAD_PARAMS),
        }
        for corr, (topic, payload, code) in cases.items():
            bad.send(topic, payload, corr)
            reply = bad.reply(corr)
            assert isinstance(reply, ErrorReply) and reply.code == code, (corr, reply)
            good_round()  # the other device is served after every refusal
        # in-flight limit: two long opens are being prefilled, a third request of the device is RATE_LIMITED
        long_history = [1 + i % 90 for i in range(6000)]
        for sid in (80, 81, 82):
            bad.send(topics.open_topic("dev-b"), encode(open_msg(sid, long_history, device="dev-b")), b"L%d" % sid)
        limited = bad.reply(b"L82")
        assert isinstance(limited, ErrorReply) and limited.code == ErrorCode.RATE_LIMITED
        t0 = time.monotonic()
        good_round()  # prefills run off the MQTT thread: dev-a's round does not wait for them
        assert time.monotonic() - t0 < 5.0
        assert not [m for m in bad.replies if m.properties.CorrelationData in (b"L80", b"L81")], \
            "the long opens should still be prefilling"
        assert bad.reply(b"L80", 60).position == 6000 and bad.reply(b"L81", 60).position == 6000
        assert worker.stats.rate_limited >= 1
    finally:
        bad.close()
        good.disconnect()
        worker.stop()
        core.stop()
