"""Host flasher ↔ board agent over a real socat pty pair: round trip, damaged/truncated/garbage traffic, refusals.

In every failure case the board keeps a valid config (the previous one stays active and readable) and the host
reports what happened.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from edge_runtime.config import board_config_path, validate_config_bytes
from edge_runtime.flashing.agent import BoardAgent
from edge_runtime.flashing.flasher import Flasher, FlashError, main
from edge_runtime.flashing.framing import (
    BEGIN_BODY,
    DATA_OFFSET,
    RESULT_APPLIED,
    RESULT_BODY,
    SEQ_UNKNOWN,
    Frame,
    FrameDecoder,
    FrameType,
    NackCode,
    encode_frame,
    parse_nack,
    read_available,
)
from edge_runtime.flashing.ptypair import PtyPair
from edge_runtime.flashing.store import ConfigStore

CONFIG_A = board_config_path("x86-dev").read_bytes()
CONFIG_B = board_config_path("raspberry-pi-4").read_bytes()
MAX_CONFIG = 4096


@dataclass
class Link:
    host: serial.Serial
    host_port: str
    agent: BoardAgent
    store: ConfigStore

    def flasher(self, **kw: object) -> Flasher:
        opts: dict = {"timeout": 1.0, "retries": 4, "chunk_size": 256} | kw
        return Flasher(self.host, **opts)

    def raw_exchange(self, wire: bytes, expect: int | None = None, quiet: float = 0.4) -> list:
        """Write raw bytes from the host side; return the agent's answers, decoded: the first ``expect`` of them
        (waiting up to 10 s), or, without ``expect``, all that arrive until the line has been quiet for ``quiet``."""
        self.host.reset_input_buffer()
        self.host.write(wire)
        self.host.flush()
        out: list = []
        dec = FrameDecoder()
        self.host.timeout = 0.05
        deadline = time.monotonic() + 10.0
        last = time.monotonic()
        while time.monotonic() < deadline:
            data = read_available(self.host)
            if data:
                last = time.monotonic()
                out += list(dec.feed(data))
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() - last > quiet:
                break
        self.host.timeout = 0.02
        return out


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    with PtyPair() as (board_port, host_port):
        board = serial.Serial(board_port, timeout=0.02)
        host = serial.Serial(host_port, timeout=0.02)
        store = ConfigStore(tmp_path / "board" / "board.yaml")
        agent = BoardAgent(board, store, max_config_bytes=MAX_CONFIG)
        stop = threading.Event()
        thread = threading.Thread(target=agent.serve, args=(stop,), daemon=True)
        thread.start()
        try:
            yield Link(host, host_port, agent, store)
        finally:
            stop.set()
            thread.join(2)
            board.close()
            host.close()


def assert_board_holds(link: Link, raw: bytes) -> None:
    """The active config is exactly ``raw``, valid, and the board reports its hash."""
    assert link.store.active() == raw
    assert validate_config_bytes(raw) == []
    digest, size = link.flasher().read_hash()
    assert (digest, size) == (hashlib.sha256(raw).hexdigest(), len(raw))


def test_round_trip_with_read_back(link: Link) -> None:
    res = link.flasher().flash(CONFIG_A)
    assert res.outcome == "applied" and res.verified
    assert res.sha256 == hashlib.sha256(CONFIG_A).hexdigest() and res.chunks == -(-len(CONFIG_A) // 256)
    assert_board_holds(link, CONFIG_A)
    res = link.flasher().flash(CONFIG_B)
    assert res.outcome == "applied" and link.store.previous() == CONFIG_A
    assert link.flasher().flash(CONFIG_B).outcome == "unchanged"
    assert_board_holds(link, CONFIG_B)
    info = link.flasher().hello()
    assert info["protocol"] == 1 and info["max_config_bytes"] == MAX_CONFIG


def test_garbage_bytes_are_nacked_and_do_not_disturb(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    rng = random.Random(3)
    noise = bytes(rng.randrange(0, 256) for _ in range(3000))
    answers = link.raw_exchange(noise)
    assert answers and all(isinstance(a, Frame) and a.type == FrameType.NACK for a in answers)
    assert {parse_nack(a.body)[0] for a in answers} <= {NackCode.BAD_CRC, NackCode.BAD_FRAME}
    assert all(a.seq == SEQ_UNKNOWN for a in answers)
    assert_board_holds(link, CONFIG_A)
    assert link.flasher().flash(CONFIG_B).verified


def test_wrong_crc_frame_gets_bad_crc_nack(link: Link) -> None:
    wire = bytearray(encode_frame(Frame(FrameType.READ_HASH, 42)))
    wire[-2] ^= 0x10  # damage the CRC (last COBS byte before the delimiter); may also break COBS: both are refusals
    answers = link.raw_exchange(bytes(wire), expect=1)
    assert len(answers) == 1 and answers[0].type == FrameType.NACK
    assert parse_nack(answers[0].body)[0] in (NackCode.BAD_CRC, NackCode.BAD_FRAME)


def test_truncated_frame_then_recovery(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    data = encode_frame(Frame(FrameType.DATA, 5, DATA_OFFSET.pack(0) + b"x" * 200))
    assert link.raw_exchange(data[: len(data) // 2]) == []  # a fragment alone: the agent waits for more
    assert_board_holds(link, CONFIG_A)  # the next frame's leading delimiter flushed the fragment
    res = link.flasher().flash(CONFIG_B)
    assert res.verified


class LossyLink:
    """Host-side wrapper damaging chosen writes: flips a byte, or sends only the first half of the frame."""

    def __init__(self, ser: serial.Serial, plan: dict[int, str]):
        self.ser = ser
        self.plan = plan
        self.writes = 0

    @property
    def timeout(self) -> float | None:
        return self.ser.timeout

    @property
    def in_waiting(self) -> int:
        return self.ser.in_waiting

    def read(self, size: int = 1) -> bytes:
        return self.ser.read(size)

    def flush(self) -> None:
        self.ser.flush()

    def write(self, data: bytes) -> int:
        action = self.plan.get(self.writes)
        self.writes += 1
        if action == "flip":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x5A
            data = bytes(data)
        elif action == "truncate":
            data = data[: len(data) // 2]
        elif action == "drop":
            return len(data)
        return self.ser.write(data)


def test_damaged_and_lost_frames_are_retransmitted(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    lossy = LossyLink(link.host, {0: "flip", 2: "truncate", 3: "truncate", 5: "drop", 7: "flip"})
    flasher = Flasher(lossy, timeout=0.6, retries=4, chunk_size=128)
    res = flasher.flash(CONFIG_B)
    assert res.verified and res.outcome == "applied"
    assert res.stats.retransmissions >= 5  # one per damaged write (more only if an answer was late)
    assert res.stats.retry_nacks >= 2 and res.stats.timeouts >= 1
    assert_board_holds(link, CONFIG_B)


def test_too_many_failures_are_reported_and_board_keeps_previous(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    lossy = LossyLink(link.host, {i: "flip" for i in range(2, 100)})  # BEGIN and one DATA pass, then all damaged
    with pytest.raises(FlashError, match="no usable answer after 3 attempts") as info:
        Flasher(lossy, timeout=0.2, retries=2, damage_retries=2, chunk_size=128).flash(CONFIG_B)
    assert "0 unanswered, 3 damaged" in str(info.value) and "board keeps its config" in str(info.value)
    assert info.value.board_changed is False
    assert_board_holds(link, CONFIG_A)


def test_oversized_config_is_refused(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    big = CONFIG_A + b"\n# " + b"x" * MAX_CONFIG + b"\n"
    assert validate_config_bytes(big) == []  # valid, only too large for this board
    with pytest.raises(FlashError, match="TOO_LARGE") as info:
        link.flasher().flash(big)
    assert info.value.code == NackCode.TOO_LARGE
    assert_board_holds(link, CONFIG_A)


def test_data_beyond_announced_size_is_refused(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    fl = link.flasher()
    fl.request(FrameType.BEGIN, BEGIN_BODY.pack(10, 0, hashlib.sha256(b"0123456789").digest()))
    with pytest.raises(FlashError) as info:
        fl.request(FrameType.DATA, DATA_OFFSET.pack(0) + b"x" * 11)
    assert info.value.code == NackCode.TOO_LARGE
    assert_board_holds(link, CONFIG_A)


def test_schema_violation_is_refused_with_line_and_field(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    bad = CONFIG_A.replace(b"mode: static", b"mode: warp")
    line = CONFIG_A[: CONFIG_A.index(b"mode: static")].count(b"\n") + 1
    with pytest.raises(FlashError) as info:
        link.flasher().flash(bad)
    assert info.value.code == NackCode.INVALID_CONFIG
    assert f"board.yaml:{line}:" in str(info.value) and "controller.mode" in str(info.value)
    assert_board_holds(link, CONFIG_A)
    assert link.agent.stats["rejected"] == 1


def test_not_yaml_is_refused(link: Link) -> None:
    with pytest.raises(FlashError, match="INVALID_CONFIG"):
        link.flasher().flash(b"\x00\x01\x02binary\xff")
    assert link.store.active() is None
    with pytest.raises(FlashError) as info:
        link.flasher().read_hash()
    assert info.value.code == NackCode.NO_CONFIG


def test_hash_mismatch_and_protocol_misuse(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    fl = link.flasher()
    with pytest.raises(FlashError) as info:
        fl.request(FrameType.DATA, DATA_OFFSET.pack(0) + b"abc")
    assert info.value.code == NackCode.NO_TRANSFER
    with pytest.raises(FlashError) as info:
        fl.request(FrameType.COMMIT)
    assert info.value.code == NackCode.NO_TRANSFER
    fl.request(FrameType.BEGIN, BEGIN_BODY.pack(len(CONFIG_B), 0, b"\x11" * 32))
    with pytest.raises(FlashError) as info:
        fl.request(FrameType.DATA, DATA_OFFSET.pack(100) + CONFIG_B[100:200])
    assert info.value.code == NackCode.OUT_OF_ORDER
    fl.request(FrameType.DATA, DATA_OFFSET.pack(0) + CONFIG_B[:2000])
    with pytest.raises(FlashError) as info:
        fl.request(FrameType.COMMIT)
    assert info.value.code == NackCode.HASH_MISMATCH
    with pytest.raises(FlashError) as info:
        fl.request(0x55)  # type: ignore[arg-type]
    assert info.value.code == NackCode.UNKNOWN_TYPE
    assert_board_holds(link, CONFIG_A)


def test_repeated_commit_is_answered_not_executed_twice(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    seq = 1000
    begin = BEGIN_BODY.pack(len(CONFIG_B), 0, hashlib.sha256(CONFIG_B).digest())
    assert link.raw_exchange(encode_frame(Frame(FrameType.BEGIN, seq, begin)), expect=1)[0].type == FrameType.ACK
    data = encode_frame(Frame(FrameType.DATA, seq + 1, DATA_OFFSET.pack(0) + CONFIG_B))
    assert link.raw_exchange(data, expect=1)[0].type == FrameType.ACK
    commit = encode_frame(Frame(FrameType.COMMIT, seq + 2))
    first = link.raw_exchange(commit, expect=1)
    again = link.raw_exchange(commit, expect=1)  # as if the first ACK was lost
    assert first == again and first[0].type == FrameType.ACK
    assert RESULT_BODY.unpack(first[0].body)[2] == RESULT_APPLIED
    assert link.agent.stats["applied"] == 2  # CONFIG_A once, CONFIG_B once
    assert link.store.previous() == CONFIG_A


def test_board_side_dry_run_writes_nothing(link: Link) -> None:
    link.flasher().flash(CONFIG_A)
    res = link.flasher().flash(CONFIG_B, validate_only=True)
    assert res.outcome == "validated" and res.sha256 == hashlib.sha256(CONFIG_B).hexdigest()
    assert_board_holds(link, CONFIG_A)
    with pytest.raises(FlashError, match="INVALID_CONFIG"):
        link.flasher().flash(CONFIG_B.replace(b"L_max: 12", b"L_max: 0"), validate_only=True)


def test_rollback_swaps_and_refuses_without_previous(link: Link) -> None:
    with pytest.raises(FlashError) as info:
        link.flasher().rollback()
    assert info.value.code == NackCode.NO_PREVIOUS
    link.flasher().flash(CONFIG_A)
    link.flasher().flash(CONFIG_B)
    digest, _ = link.flasher().rollback()
    assert digest == hashlib.sha256(CONFIG_A).hexdigest()
    assert_board_holds(link, CONFIG_A)
    assert link.store.previous() == CONFIG_B
    link.flasher().rollback()
    assert_board_holds(link, CONFIG_B)


def test_cli_flash_dry_run_and_read_hash(link: Link, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(CONFIG_A)
    port = link.host_port
    link.host.close()  # the CLI opens the port itself
    try:
        assert main([port, str(cfg), "--dry-run", "--timeout", "0.5"]) == 0
        assert "validated: sha256" in capsys.readouterr().out and link.store.active() is None
        assert main([port, str(cfg), "--timeout", "0.5"]) == 0
        out = capsys.readouterr().out
        assert "applied: sha256" in out and "read-back: board's active config matches" in out
        assert main([port, "--read-hash"]) == 0
        assert hashlib.sha256(CONFIG_A).hexdigest() in capsys.readouterr().out
        cfg.write_bytes(CONFIG_A.replace(b"L_max: 12", b"L_max: 99"))
        assert main([port, str(cfg)]) == 1
        err = capsys.readouterr().err
        assert f"{cfg}:" in err and "controller.L_max" in err and "nothing sent" in err
        assert main(["/dev/nonexistent-port", str(cfg), "--dry-run", "--local-only"]) == 1
        assert main(["/dev/nonexistent-port", "--read-hash"]) == 2
        assert link.store.active() == CONFIG_A
    finally:
        link.host.open()
