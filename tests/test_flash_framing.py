"""Frame format: COBS, CRC32, header checks, incremental decoding with resynchronisation, bulk serial reads."""

from __future__ import annotations

import random
import struct
import time
import zlib

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.flashing.flasher import Flasher, FlashError
from edge_runtime.flashing.framing import (
    HEADER,
    MAX_BODY,
    SEQ_UNKNOWN,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    NackCode,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
    read_available,
)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_cobs_round_trip_and_no_zeros(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"\x01" * 254, b"\x01" * 255, b"\x01" * 253 + b"\x00"])
def test_cobs_edge_cases(data: bytes) -> None:
    assert cobs_decode(cobs_encode(data)) == data


def test_cobs_rejects_truncated_block() -> None:
    with pytest.raises(FrameError) as info:
        cobs_decode(b"\x05ab")
    assert info.value.code == NackCode.BAD_FRAME


@given(st.sampled_from(list(FrameType)), st.integers(0, 0xFFFF), st.binary(max_size=600))
@settings(max_examples=200, deadline=None)
def test_frame_round_trip(ftype: FrameType, seq: int, body: bytes) -> None:
    wire = encode_frame(Frame(ftype, seq, body))
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode_frame(wire[1:-1]) == Frame(ftype, seq, body)


@given(st.binary(min_size=1, max_size=300), st.data())
@settings(max_examples=300, deadline=None)
def test_any_single_byte_corruption_is_detected(body: bytes, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(Frame(FrameType.DATA, 7, body)))
    pos = data.draw(st.integers(1, len(wire) - 2))
    wire[pos] ^= data.draw(st.integers(1, 255))
    results = list(FrameDecoder().feed(bytes(wire)))
    assert results, "a damaged frame must produce an error, not silence"
    assert all(isinstance(r, FrameError) for r in results)


def test_wrong_crc_and_bad_header() -> None:
    payload = HEADER.pack(1, FrameType.DATA, 5, 3) + b"abc"
    bad_crc = payload + struct.pack(">I", zlib.crc32(payload) ^ 1)
    with pytest.raises(FrameError) as info:
        decode_frame(cobs_encode(bad_crc))
    assert info.value.code == NackCode.BAD_CRC and info.value.seq == SEQ_UNKNOWN
    wrong_len = HEADER.pack(1, FrameType.DATA, 5, 9) + b"abc"
    with pytest.raises(FrameError, match="length field"):
        decode_frame(cobs_encode(wrong_len + struct.pack(">I", zlib.crc32(wrong_len))))
    wrong_version = HEADER.pack(9, FrameType.DATA, 5, 3) + b"abc"
    with pytest.raises(FrameError, match="protocol version"):
        decode_frame(cobs_encode(wrong_version + struct.pack(">I", zlib.crc32(wrong_version))))
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(cobs_encode(b"\x01\x02"))


def test_encode_refuses_oversized_body() -> None:
    with pytest.raises(ValueError):
        encode_frame(Frame(FrameType.DATA, 1, b"x" * (MAX_BODY + 1)))


def test_decoder_handles_arbitrary_splits_and_resyncs_after_garbage() -> None:
    rng = random.Random(1)
    frames = [Frame(FrameType.DATA, i, rng.randbytes(rng.randrange(0, 900))) for i in range(20)]
    stream = bytearray()
    for i, f in enumerate(frames):
        if i % 5 == 2:
            stream += bytes(rng.randrange(1, 256) for _ in range(40))  # line noise, then the frame's own 0x00 syncs
        stream += encode_frame(f)
    dec = FrameDecoder()
    out = []
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 97)
        out += list(dec.feed(bytes(stream[pos : pos + step])))
        pos += step
    good = [r for r in out if isinstance(r, Frame)]
    assert good == frames
    assert sum(isinstance(r, FrameError) for r in out) == 4  # one per noise burst


def test_decoder_drops_oversized_frames_with_bounded_memory() -> None:
    dec = FrameDecoder(max_encoded=1000)
    out = list(dec.feed(b"\x01" * 50_000))
    assert out == [] and dec.pending <= 1000
    out = list(dec.feed(b"\x00" + encode_frame(Frame(FrameType.HELLO, 3))))
    assert isinstance(out[0], FrameError) and out[0].code == NackCode.BAD_FRAME
    assert out[1] == Frame(FrameType.HELLO, 3)


def test_truncated_frame_followed_by_a_full_one() -> None:
    full = encode_frame(Frame(FrameType.DATA, 9, b"payload" * 20))
    out = list(FrameDecoder().feed(full[: len(full) // 2] + full))
    # the fragment is reported (ended by the next frame's leading 0x00), the full frame decodes intact
    assert isinstance(out[0], FrameError) and out[0].code == NackCode.BAD_FRAME
    assert out[1:] == [Frame(FrameType.DATA, 9, b"payload" * 20)]
    # a fragment then silence: nothing yet; the next frame flushes it
    dec = FrameDecoder()
    assert list(dec.feed(full[: len(full) // 2])) == []
    assert list(dec.feed(full))[-1] == Frame(FrameType.DATA, 9, b"payload" * 20)


def test_bulk_read_over_loop_url() -> None:
    port = serial.serial_for_url("loop://", timeout=0.2)
    try:
        frame = Frame(FrameType.DATA, 1, bytes(range(256)) * 12)  # loop:// buffers at most 4096 bytes
        wire = encode_frame(frame)
        port.write(wire)
        time.sleep(0.05)
        got = read_available(port)
        assert got == wire  # one call, the whole queue
        assert list(FrameDecoder().feed(got)) == [frame]
        assert read_available(port) == b""  # times out empty
    finally:
        port.close()


def test_flasher_reports_no_board_over_loopback() -> None:
    """loop:// echoes our own requests: never an ACK, so the flasher retries, then reports what happened."""
    port = serial.serial_for_url("loop://", timeout=0.02)
    try:
        flasher = Flasher(port, timeout=0.1, retries=2)
        start = time.monotonic()
        with pytest.raises(FlashError, match="no usable answer after 3 attempts") as info:
            flasher.read_hash()
        assert info.value.code is None
        assert flasher.stats.timeouts == 3 and flasher.stats.retransmissions == 2
        assert time.monotonic() - start < 2.0
    finally:
        port.close()
