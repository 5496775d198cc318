"""The decoder never crashes: any input either decodes to a message or raises ProtocolError (which the receiver
turns into an error reply). Hypothesis for structure-aware inputs, plus seeded random bytes and mutations."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from qsv_wire.protocol import (
    CODEC_MODES,
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    CloseSession,
    DraftRound,
    ErrorCode,
    Feedback,
    Message,
    OpenSession,
    ProtocolError,
    SamplingParams,
    decode,
    encode,
    error_reply_for,
)

SEEDS = [encode(OpenSession("dev-a", 5, (1, 2, 3), SamplingParams(0.5, 3, 0.5, 9), 64, bytes(32), 2, True)),
         encode(DraftRound(5, 2, 3, 50272, 240, 0, (1, 2, 50000), (b"\x01" * 30, b"\x02", b"\x03" * 7))),
         encode(Feedback(5, 2, 3, 1, 7, (1.0, 0.5), 3, 4)),
         encode(CloseSession(5, 0))]


def check_total(data: bytes) -> Message | None:
    try:
        msg = decode(data)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        decode(error_reply_for(exc))  # the reply itself is always well formed
        return None
    assert encode(msg) is not None  # anything accepted re-encodes
    return msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    check_total(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_valid_header_arbitrary_payload(msg_type: int, flags: int, reserved: int, payload: bytes) -> None:
    check_total(HEADER.pack(MAGIC, PROTOCOL_VERSION, msg_type, flags, reserved, len(payload)) + payload)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 10_000))
def test_mutated_valid_messages(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    check_total(bytes(data[: max(0, len(data) - cut % 8)]))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 2**63 - 1), st.integers(0, 2**32 - 1), st.integers(2, 1 << 20), st.data())
def test_generated_drafts_round_trip(session: int, seq: int, vocab: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 32))
    tokens = tuple(data.draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n)))
    blobs = tuple(data.draw(st.lists(st.binary(min_size=1, max_size=40), min_size=n, max_size=n)))
    msg = DraftRound(session, seq, data.draw(st.integers(0, 2**32 - 1)), vocab, data.draw(st.integers(1, 1024)),
                     data.draw(st.sampled_from(sorted(CODEC_MODES))), tokens, blobs)
    assert decode(encode(msg)) == msg


def test_seeded_random_bytes_and_mutations() -> None:
    rng = random.Random(20260)
    accepted = 0
    for i in range(8_000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:
            buf = bytearray(rng.choice(SEEDS))
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf[: len(buf) - rng.randrange(3)])
        accepted += check_total(data) is not None
    assert accepted > 0  # some single-byte mutations keep a valid message (e.g. in a lattice blob)
