"""Fault tolerance against a real mosquitto: in every case the board's final token stream has no gap and no
duplicate and equals the fault-free stream of the same seed (the toy models draw every random number from
(seed, absolute position), so any divergence — a lost, repeated or reordered round — changes the stream)."""

from __future__ import annotations

import collections
import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from doubles.toy import (
    TOY_VOCAB_HASH,
    ToyVerifier,
    continue_remote,
    generate_remote,
    reference_generation,
)

from cloud_verifier.mqtt_service import MqttVerifierService, ServiceConfig
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier, RemoteVerifierError
from qsv_wire.mqtt_common import LoopDriver, make_client
from qsv_wire.protocol import SamplingParams

PROMPT = [2, 7, 1, 8, 2, 8]
N_TOKENS, L, ELL = 120, 3, 240
FAULTY = EdgeTransportConfig(feedback_timeout_s=0.4, open_timeout_s=0.6, max_resends=1, max_resyncs=12)
PATIENT = EdgeTransportConfig(feedback_timeout_s=0.4, open_timeout_s=0.6, max_resends=1, recovery_deadline_s=90.0)


def expected(seed: int) -> list[int]:
    return reference_generation(PROMPT, N_TOKENS, L, ELL, seed)


def when_rounds(remote: RemoteVerifier, n: int, action, timeout_s: float = 20.0) -> threading.Thread:  # noqa: ANN001
    """Run ``action`` on a side thread once the board has completed ``n`` rounds (mid-generation)."""

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while remote.stats.rounds < n and time.monotonic() < deadline:
            time.sleep(0.002)
        action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_kill9_worker_board_resyncs_on_the_other_worker(mosquitto_broker, spawn_verifier) -> None:
    workers = dict(zip(("w1", "w2"), spawn_verifier(mosquitto_broker, "w1", "w2"), strict=True))
    with RemoteVerifier("dev-a", mosquitto_broker.endpoint("dev-a"), FAULTY) as remote:
        remote.open(PROMPT, SamplingParams(seed=21), 64, TOY_VOCAB_HASH)
        first = remote.worker_id
        killer = when_rounds(remote, 8, lambda: workers[first].send_signal(signal.SIGKILL))
        out = continue_remote(remote, N_TOKENS, L, ELL, 21)
        killer.join()
        assert remote.worker_id != first  # the session moved to the surviving worker
        assert remote.stats.resyncs >= 1
    assert workers[first].wait(timeout=5) == -signal.SIGKILL
    assert out == expected(21)


def test_kill9_worker_replaced_by_a_new_process(mosquitto_broker, spawn_verifier) -> None:
    """The only worker dies; a new process with the same worker id starts; it does not know the session
    (UNKNOWN_SESSION) and the board reopens it there with its full history."""
    (w1,) = spawn_verifier(mosquitto_broker, "w-solo")
    replaced: list = []

    def kill_and_replace() -> None:
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        replaced.extend(spawn_verifier(mosquitto_broker, "w-solo"))

    with RemoteVerifier("dev-b", mosquitto_broker.endpoint("dev-b"), FAULTY) as remote:
        remote.open(PROMPT, SamplingParams(seed=22), 64, TOY_VOCAB_HASH)
        killer = when_rounds(remote, 6, kill_and_replace)
        out = continue_remote(remote, N_TOKENS, L, ELL, 22)
        killer.join()
        assert replaced and replaced[0].poll() is None
        assert remote.stats.resyncs >= 1 and remote.worker_id == "w-solo"
    assert out == expected(22)


@pytest.mark.timeout(180)
def test_the_only_worker_comes_back_after_30_s_and_the_board_resumes(mosquitto_broker, spawn_verifier) -> None:
    """The only worker is killed and its replacement starts 30 s later: the board keeps retrying (backoff, no
    give-up inside its recovery deadline) and finishes with the fault-free tokens."""
    (w1,) = spawn_verifier(mosquitto_broker, "w-late")
    replaced: list = []

    def kill_and_replace_later() -> None:
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        time.sleep(30.0)
        replaced.extend(spawn_verifier(mosquitto_broker, "w-late"))

    with RemoteVerifier("dev-c", mosquitto_broker.endpoint("dev-c"), PATIENT) as remote:
        remote.open(PROMPT, SamplingParams(seed=26), 64, TOY_VOCAB_HASH)
        killer = when_rounds(remote, 5, kill_and_replace_later)
        t0 = time.monotonic()
        out = continue_remote(remote, N_TOKENS, L, ELL, 26)
        waited = time.monotonic() - t0
        killer.join()
        assert replaced and remote.stats.resyncs >= 1 and waited > 30.0
    assert out == expected(26)


def test_no_verifier_at_all_fails_clearly_at_the_deadline(mosquitto_broker) -> None:
    config = EdgeTransportConfig(feedback_timeout_s=0.3, open_timeout_s=0.3, recovery_deadline_s=3.0)
    with RemoteVerifier("dev-c", mosquitto_broker.endpoint("dev-c"), config) as remote:
        t0 = time.monotonic()
        with pytest.raises(RemoteVerifierError, match=r"no verifier accepted the session in \d+ s"):
            remote.open(PROMPT, SamplingParams(seed=1), 64, TOY_VOCAB_HASH)
        assert 2.0 < time.monotonic() - t0 < 6.0


def test_broker_restart_mid_generation(mosquitto_broker_fresh) -> None:
    broker = mosquitto_broker_fresh
    service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"), ServiceConfig("w-br")).start()
    try:
        with RemoteVerifier("dev-a", broker.endpoint("dev-a"), FAULTY) as remote:
            remote.open(PROMPT, SamplingParams(seed=23), 64, TOY_VOCAB_HASH)

            def restart() -> None:
                broker.process.kill()  # kill -9: no clean shutdown, every connection drops
                time.sleep(0.3)
                broker.process.start()

            restarter = when_rounds(remote, 8, restart)
            out = continue_remote(remote, N_TOKENS, L, ELL, 23)
            restarter.join()
            assert remote.loop.reconnects >= 1 and service.loop.reconnects >= 1
            assert max(remote.stats.round_trip_us) >= 250_000  # a round waited through the outage and completed
    finally:
        service.stop()
    assert out == expected(23)


class Duplicator:
    """A third client on the (unauthenticated) broker that re-publishes every draft twice — once at once, once
    ``delay_s`` later — and every feedback once more, late; MQTT properties (response topic, correlation) kept."""

    def __init__(self, broker, device: str, delay_s: float = 0.15) -> None:  # noqa: ANN001
        self.delay_s = delay_s
        self.client = make_client("duplicator", broker.endpoint(device, tls=False))
        self.loop = LoopDriver(self.client, broker.endpoint(device, tls=False))
        self.pending: collections.deque[tuple[float, str, bytes, object]] = collections.deque()
        self.copies = 0
        self.ready = threading.Event()
        self.stop = threading.Event()
        opts = mqtt.SubscribeOptions(qos=1, noLocal=True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"qsv/v1/{device}/draft/#", opts), (f"qsv/v1/{device}/feedback", opts)])
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if msg.topic.endswith("feedback"):
            self.pending.append((now + self.delay_s, msg.topic, bytes(msg.payload), msg.properties))
        else:
            self.pending.append((now, msg.topic, bytes(msg.payload), msg.properties))
            self.pending.append((now + self.delay_s, msg.topic, bytes(msg.payload), msg.properties))

    def _run(self) -> None:
        self.loop.connect()
        while not self.stop.is_set():
            self.loop.pump(0.005)
            now = time.monotonic()
            while self.pending and self.pending[0][0] <= now:
                _, topic, payload, props = self.pending.popleft()
                self.client.publish(topic, payload, qos=1, properties=props)
                self.copies += 1
            if self.pending:  # keep order by due time
                self.pending = collections.deque(sorted(self.pending, key=lambda x: x[0]))
        self.loop.close()

    def __enter__(self) -> Duplicator:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_duplicate_and_delayed_deliveries(mosquitto_open_broker) -> None:
    broker = mosquitto_open_broker
    service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier", tls=False),
                                  ServiceConfig("w-dup")).start()
    try:
        with Duplicator(broker, "dev-c") as dup, \
                RemoteVerifier("dev-c", broker.endpoint("dev-c", tls=False), FAULTY) as remote:
            out = generate_remote(remote, PROMPT, N_TOKENS, L, ELL, seed=24)
            time.sleep(0.3)  # let the last delayed copies arrive
            assert dup.copies > 2 * remote.stats.rounds
            assert remote.stats.dropped_replies > 0  # duplicate feedback ignored by correlation
    finally:
        service.stop()
    assert service.stats.duplicates > 0  # same round twice: cached feedback, not a second verification
    assert service.stats.stale_dropped > 0  # a late copy of an older round: dropped
    assert service.stats.rounds == remote.stats.rounds
    assert out == expected(24)


def test_board_disappears_session_idles_out_then_resumes(mosquitto_broker) -> None:
    service = MqttVerifierService(ToyVerifier(), mosquitto_broker.endpoint("verifier"),
                                  ServiceConfig("w-idle", group="g-idle", idle_timeout_s=0.4)).start()
    try:
        remote = RemoteVerifier("dev-b", mosquitto_broker.endpoint("dev-b"), FAULTY).connect()
        generate_remote(remote, PROMPT, 30, L, ELL, seed=25)
        saved = (remote.session_id, list(remote.history), remote.next_seq)
        remote.disconnect(send_close=False)  # vanishes without a CLOSE
        deadline = time.monotonic() + 5
        while service.sessions and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not service.sessions and service.stats.idle_closed == 1
        assert not service.handler.sessions  # the verifier core released it too
        back = RemoteVerifier("dev-b", mosquitto_broker.endpoint("dev-b"), FAULTY, session_id=saved[0]).connect()
        back.resume(len(PROMPT), saved[1], saved[2], SamplingParams(seed=25), 64, TOY_VOCAB_HASH)
        out = continue_remote(back, N_TOKENS, L, ELL, 25)
        back.disconnect()
    finally:
        service.stop()
    assert out == expected(25)
