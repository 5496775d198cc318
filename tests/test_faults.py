"""Fault tolerance of the real stack: the board runtime ``qsv edge`` drafting with SmolLM2-135M on onnxruntime (int8
export, the C core quantizer and Q-S sampler), ``qsv verifier`` worker processes running SmolLM2-135M on PyTorch as
the target, and a real mosquitto with mutual TLS between them. Every fault is injected after the board has streamed
the verdict of round ``FAULT_AFTER`` of a generation (watched on its request socket, not timed) and its result is
compared with a fault-free run of the same seed on the same stack: the same tokens, round by round (the drafter
draws from (seed, round, position), the verifier from (seed, position), so a lost, repeated or reordered round
changes the stream). The board runs with ``--pipeline off`` (the tokens do not depend on it, the round timing does)
and a short feedback timeout, so that recovery takes seconds.

The stack (broker, board, the pool of workers) is shared by the module's tests to keep the model loads few; each
test asks for the number of workers it needs. The last tests keep the toy doubles of ``tests/doubles/toy.py`` where
they need what a real model cannot give: an in-process verifier whose counters (duplicates, stale rounds, idle
sessions) the test reads, traffic injected on an unauthenticated listener, and a reference computed in-process from
a saved history (``RemoteVerifier.resume``, which the board runtime does not expose)."""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from doubles.toy import (
    TOY_VOCAB_HASH,
    ToyVerifier,
    continue_remote,
    generate_remote,
    reference_generation,
)
from edge_stack import SMALL_VERIFIER, EdgeProcess, VerifierSpawner, board_config, dev_broker, stop_cleanly

from cloud_verifier.mqtt_service import MqttVerifierService, WorkerConfig
from edge_runtime.runtime.client import EdgeClient, EdgeClientError
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
from qsv_wire.mqtt_common import LoopDriver, make_client
from qsv_wire.protocol import SamplingParams

pytestmark = pytest.mark.timeout(300)

PROMPT_TEXT = "Once upon a time, in a small village by the sea,"
MAX_NEW = 48  # about 16 rounds of L = 3 with the small pair
FAULT_AFTER = 4  # the fault is injected once the board has streamed this many rounds' verdicts
FEEDBACK_TIMEOUT_S = 1.5  # the board resends a round after this, and resyncs after one more
REPLACEMENT_DELAY_S = 30.0  # kill -9 → the replacement worker starts this much later (the issue: a restart of ≥ 30 s)
DEADLINE_S = 4.0  # the recovery deadline of the board that no verifier ever comes back to


@dataclass
class Run:
    """One generation as a client of ``qsv edge`` saw it."""

    rounds: list[dict] = field(default_factory=list)  # the streamed round events
    done: dict | None = None
    error: EdgeClientError | None = None
    started: float = 0.0
    fault_at: float | None = None  # when the fault was injected (monotonic)
    ended: float = 0.0

    @property
    def tokens(self) -> list[int]:
        assert self.done is not None, f"the generation failed: {self.error}"
        return self.done["tokens"]

    @property
    def per_round(self) -> list[tuple[int, int, list[int]]]:
        return [(r["drafted"], r["accepted"], r["tokens"]) for r in self.rounds]

    def slow_rounds(self, at_least_s: float) -> list[int]:
        """Indices of the rounds whose submit → verdict wait was at least ``at_least_s``."""
        return [r["index"] for r in self.rounds if r["wait_ms"] >= 1e3 * at_least_s]

    def waited_after_the_fault(self, at_least_s: float, only_then: bool = True) -> bool:
        """A round after the fault point (index ``FAULT_AFTER`` on: the fault came after the verdict of round
        ``FAULT_AFTER - 1``) waited at least ``at_least_s`` for its verdict; ``only_then``: and none before it."""
        slow = self.slow_rounds(at_least_s)
        late = [i for i in slow if i >= FAULT_AFTER]
        return bool(late) and (not only_then or late == slow)


def generate(socket_path: Path, seed: int, fault: Callable[[], None] | None = None) -> Run:
    """One generation through the board's request socket; ``fault`` runs on a side thread as soon as the verdict of
    round ``FAULT_AFTER`` has been streamed (the generation goes on meanwhile)."""
    run, failures = Run(started=time.monotonic()), []
    injector = None

    def inject() -> None:
        try:
            assert fault is not None
            fault()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            failures.append(exc)

    with EdgeClient(socket_path, timeout_s=180) as client:
        try:
            for event in client.stream(prompt=PROMPT_TEXT, max_new_tokens=MAX_NEW, seed=seed):
                if event["event"] == "done":
                    run.done = event
                    continue
                run.rounds.append(event)
                if fault is not None and len(run.rounds) == FAULT_AFTER:
                    run.fault_at = time.monotonic()
                    injector = threading.Thread(target=inject, daemon=True)
                    injector.start()
        except EdgeClientError as exc:
            run.error = exc
    run.ended = time.monotonic()
    if injector is not None:
        injector.join(120)
        assert not injector.is_alive(), "the fault injector did not finish"
    if failures:
        raise failures[0]
    return run


def health(socket_path: Path) -> dict:
    with EdgeClient(socket_path, timeout_s=30) as client:
        return client.health()


class Stack:
    """A broker, a board (``qsv edge`` as dev-a) and a pool of real verifier workers (worker id → process)."""

    def __init__(self, workdir: Path) -> None:
        from qsv_tools.export.onnx_export import export_model

        self.workdir = workdir
        self.broker = dev_broker(workdir / "mosquitto")
        self.export = export_model("smollm2", int8=True)  # cached after the first time
        self.spawner = VerifierSpawner(workdir)
        self.workers: dict[str, subprocess.Popen] = {}
        self._next_id = 0
        self.socket = workdir / "edge.sock"
        self.edge = self.board("dev-a", self.socket, recovery_deadline_s=60.0)

    def board(self, device: str, socket_path: Path, recovery_deadline_s: float) -> EdgeProcess:
        config = board_config(socket_path.parent / f"{device}.yaml", self.broker, self.export, device=device,
                              variant="model.int8.onnx")
        return EdgeProcess(config, socket_path, "--pipeline", "off", "--recovery-deadline", str(recovery_deadline_s),
                           feedback_timeout=FEEDBACK_TIMEOUT_S)

    def spawn(self, *worker_ids: str) -> None:
        procs = self.spawner.spawn(self.broker, *worker_ids, verifier=SMALL_VERIFIER)
        self.workers.update(zip(worker_ids, procs, strict=True))

    def use_workers(self, n: int) -> list[str]:
        """Exactly ``n`` live workers: extra ones are stopped (SIGTERM: a clean exit), missing ones started."""
        self.workers = {w: p for w, p in self.workers.items() if p.poll() is None}
        for worker_id in list(self.workers)[n:]:
            assert stop_cleanly(self.workers.pop(worker_id)) == 0
        missing = n - len(self.workers)
        if missing > 0:
            ids = [f"w{self._next_id + i}" for i in range(missing)]
            self._next_id += missing
            self.spawn(*ids)
        return list(self.workers)

    def kill9(self, worker_id: str) -> None:
        proc = self.workers.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

    def close(self) -> list[tuple[str, int]]:
        """Stop everything that still runs; the exit status of each (the board, the workers, mosquitto)."""
        status = [("qsv edge", self.edge.terminate())]
        status += [(w, stop_cleanly(p)) for w, p in self.workers.items()]
        self.spawner.close()
        mosquitto = self.broker.process.proc
        self.broker.stop()
        return status + [("mosquitto", mosquitto.returncode if mosquitto is not None else 0)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("faults"))
    try:
        stack.edge.wait_line("serving on", timeout_s=120)
        yield stack
        assert stack.edge.proc.poll() is None, "the board runtime died"
    finally:
        status = stack.close()
    assert status == [(name, 0) for name, _ in status], status  # every process still running exits cleanly


def check_same_generation(run: Run, reference: Run) -> None:
    assert reference.error is None and (len(reference.tokens) == MAX_NEW or reference.done["stopped_by_eos"])
    assert len(reference.rounds) > FAULT_AFTER + 2  # the fault point is well inside the generation
    assert run.error is None, run.error
    assert run.fault_at is not None and len(run.rounds) > FAULT_AFTER
    assert run.tokens == reference.tokens
    assert run.per_round == reference.per_round  # no round lost, repeated or split differently


def log_since(edge: EdgeProcess, mark: int) -> str:
    return "\n".join(edge.err_lines[mark:])


# --------------------------------------------------------------------------------------- the real stack, faulted
def test_kill9_of_the_worker_holding_the_session_the_board_moves_to_the_other(stack: Stack) -> None:
    stack.use_workers(2)
    reference = generate(stack.socket, seed=11)
    killed: list[str] = []

    def kill_the_holder() -> None:
        killed.append(health(stack.socket)["worker"])
        stack.kill9(killed[0])

    mark = len(stack.edge.err_lines)
    run = generate(stack.socket, seed=11, fault=kill_the_holder)
    check_same_generation(run, reference)
    (survivor,) = stack.workers
    assert survivor != killed[0] and stack.workers[survivor].poll() is None
    # the board noticed mid-generation: a round after the fault waited for the resend and the resync ...
    assert run.waited_after_the_fault(FEEDBACK_TIMEOUT_S), [r["wait_ms"] for r in run.rounds]
    # ... and moved the session to the surviving worker
    assert f"resynced on worker {survivor}" in log_since(stack.edge, mark)
    assert health(stack.socket)["worker"] == survivor


def test_broker_kill9_and_restart_mid_generation(stack: Stack) -> None:
    (worker,) = stack.use_workers(1)
    reference = generate(stack.socket, seed=12)
    outage_s = 0.5

    def restart_the_broker() -> None:
        stack.broker.process.kill()  # kill -9: no clean shutdown, every connection drops
        time.sleep(outage_s)
        stack.broker.process.start()  # same ports, same config

    mark = len(stack.edge.err_lines)
    run = generate(stack.socket, seed=12, fault=restart_the_broker)
    check_same_generation(run, reference)
    log = log_since(stack.edge, mark)
    assert "connection lost" in log and log.count("connected to 127.0.0.1") >= 1  # the board reconnected
    assert run.waited_after_the_fault(outage_s * 0.8, only_then=False)  # a round waited out the outage
    assert stack.workers[worker].poll() is None  # the worker reconnected (it served the rest of the generation)


def test_kill9_of_the_only_worker_replaced_after_a_delay(stack: Stack) -> None:
    """The only worker dies; a new process with the same worker id starts a few seconds later (it does not know the
    session: UNKNOWN_SESSION); meanwhile the board keeps retrying inside its recovery deadline, then reopens the
    session there with its full history and finishes with the fault-free tokens."""
    (worker,) = stack.use_workers(1)
    reference = generate(stack.socket, seed=13)

    def kill_and_replace_later() -> None:
        stack.kill9(worker)
        time.sleep(REPLACEMENT_DELAY_S)
        stack.spawn(worker)

    mark = len(stack.edge.err_lines)
    run = generate(stack.socket, seed=13, fault=kill_and_replace_later)
    check_same_generation(run, reference)
    assert run.waited_after_the_fault(REPLACEMENT_DELAY_S), [r["wait_ms"] for r in run.rounds]  # for the new one
    log = log_since(stack.edge, mark)
    assert "no verifier answered the session resync" in log  # it retried while there was none ...
    assert f"resynced on worker {worker}" in log  # ... and reopened the session on the new process
    assert stack.workers[worker].poll() is None


def test_no_verifier_comes_back_the_request_fails_at_the_recovery_deadline(stack: Stack, tmp_path: Path) -> None:
    """A board with a short recovery deadline (its own ``qsv edge``, device dev-b): the only worker is killed
    mid-generation and none comes back; the request ends with a clear error at the deadline, not a hang; the next
    request (no verifier at all) fails the same way at its open; the runtime stays up and exits cleanly."""
    stack.use_workers(1)
    socket_path = tmp_path / "edge-b.sock"
    edge = stack.board("dev-b", socket_path, recovery_deadline_s=DEADLINE_S)
    try:
        edge.wait_line("serving on", timeout_s=120)
        reference = generate(socket_path, seed=14)
        assert reference.error is None and len(reference.rounds) > FAULT_AFTER + 2
        run = generate(socket_path, seed=14, fault=lambda: stack.kill9(health(socket_path)["worker"]))
        assert run.error is not None and run.error.code == "verifier" and run.done is None
        assert re.search(r"no verifier accepted the session in \d+ s", str(run.error)), run.error
        assert run.fault_at is not None and FAULT_AFTER <= len(run.rounds) < len(reference.rounds)
        assert run.per_round == reference.per_round[:len(run.rounds)]  # what came before the fault was right
        assert DEADLINE_S - 1.0 < run.ended - run.fault_at < DEADLINE_S + FEEDBACK_TIMEOUT_S + 3.0
        assert not stack.workers
        # no verifier at all: the next request fails at its open, at the deadline too
        again = generate(socket_path, seed=14)
        assert again.error is not None and not again.rounds
        assert re.search(r"no verifier accepted the session in \d+ s", str(again.error)), again.error
        assert DEADLINE_S - 1.0 < again.ended - again.started < DEADLINE_S + FEEDBACK_TIMEOUT_S + 3.0
        state = health(socket_path)
        assert state["status"] == "ok" and "no verifier accepted" in state["last_error"]
        assert edge.terminate() == 0
    finally:
        edge.stop()


# ------------------------------------------------------------------- toy doubles: verifier internals, injection
PROMPT = [2, 7, 1, 8, 2, 8]
N_TOKENS, L, ELL = 120, 3, 240
FAULTY = EdgeTransportConfig(feedback_timeout_s=0.4, open_timeout_s=0.6, max_resends=1, max_resyncs=12)


def expected(seed: int) -> list[int]:
    return reference_generation(PROMPT, N_TOKENS, L, ELL, seed)


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
                                  WorkerConfig("w-dup")).start()
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
                                  WorkerConfig("w-idle", group="g-idle", idle_timeout_s=0.4)).start()
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
