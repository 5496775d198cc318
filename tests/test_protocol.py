"""Wire protocol v1: exact byte layout, round trips, limits, and error codes for bad input."""

from __future__ import annotations

import struct

import pytest

from qsv_wire import codec
from qsv_wire.protocol import (
    HEADER_SIZE,
    CloseSession,
    DraftRound,
    ErrorCode,
    ErrorReply,
    Feedback,
    Limits,
    OpenAck,
    OpenSession,
    ProtocolError,
    SamplingParams,
    decode,
    encode,
    error_reply_for,
    pack_ids,
    unpack_ids,
)

SAMPLING = SamplingParams(temperature=0.5, top_k=40, top_p=0.75, seed=2**63 + 5)  # all exactly representable in f32


def open_msg(**kw) -> OpenSession:
    args = dict(device_id="board-01", session_id=0xDEADBEEF01, history=(1, 2, 3, 50271), sampling=SAMPLING,
                vocab_size=50272, vocab_hash=bytes(range(32)), next_round_seq=0, resync=False)
    args.update(kw)
    return OpenSession(**args)


def draft_msg(**kw) -> DraftRound:
    args = dict(session_id=7, round_seq=3, position=400, vocab_size=50272, ell=240, codec_mode=0,
                tokens=(5, 50271, 0), lattice=(b"\x01\x02", b"\x03", b"\x04\x05\x06"))
    args.update(kw)
    return DraftRound(**args)


ALL_MESSAGES = [
    open_msg(),
    open_msg(resync=True, next_round_seq=17, history=tuple(range(5000))),
    OpenAck(7, "worker-1", 404, 17),
    OpenAck(7, "worker-1", 404, 17, "int8", (83271, 88622, 90100, 93400, 98371)),
    draft_msg(),
    Feedback(7, 3, 400, 2, 99, (1.0, 0.5, 0.0), 12, 3456),
    Feedback(7, 3, 400, 0, 0, (), 0, 0),
    ErrorReply(ErrorCode.DESYNC, "round 4 after 2", 7, 4),
    CloseSession(7, 1),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg) -> None:
    data = encode(msg)
    out = decode(data)
    if isinstance(msg, Feedback):  # probabilities travel as uint16 fixed point
        assert out.accept_probs == pytest.approx(msg.accept_probs, abs=0.5 / 65535 + 1e-12)
        out = Feedback(**{**out.__dict__, "accept_probs": msg.accept_probs})
    assert out == msg


def test_header_and_close_bytes_exactly() -> None:
    data = encode(CloseSession(0x0102030405060708, 2))
    assert data == b"QS" + bytes([1, 6]) + b"\x00\x00" + b"\x00\x00" + (9).to_bytes(4, "little") + \
        bytes([8, 7, 6, 5, 4, 3, 2, 1]) + b"\x02"
    assert HEADER_SIZE == 12


def test_draft_layout_matches_documentation() -> None:
    msg = draft_msg(session_id=1, round_seq=2, position=3, vocab_size=64, ell=16, codec_mode=255, tokens=(1, 2),
                    lattice=(b"\xaa", b"\xbb\xcc"))
    data = encode(msg)
    payload = data[HEADER_SIZE:]
    assert payload[:24] == struct.pack("<QIIIHBB", 1, 2, 3, 64, 16, 2, 255)
    assert payload[24:26] == bytes([0b00000100, 0b00100000])  # two 6-bit ids, MSB first: 000001 000010 0000
    assert payload[26:] == b"\x01\x00\x00\x00\xaa" + b"\x02\x00\x00\x00\xbb\xcc"


def test_feedback_fixed_point_layout() -> None:
    data = encode(Feedback(1, 2, 3, 1, 9, (1.0, 0.25), 10, 20))
    payload = data[HEADER_SIZE:]
    assert payload == struct.pack("<QIIBIIIB", 1, 2, 3, 1, 9, 10, 20, 2) + struct.pack("<2H", 65535, 16384)


@pytest.mark.parametrize("vocab", [2, 3, 64, 50272, 151936, 1 << 24])
@pytest.mark.parametrize("count", [1, 7, 64, 65, 1000])
def test_token_packing_round_trip(vocab: int, count: int) -> None:
    import random

    rng = random.Random(vocab * 1000 + count)
    ids = [rng.randrange(vocab) for _ in range(count)]
    ids[0] = vocab - 1
    data = pack_ids(ids, vocab)
    assert len(data) == codec.token_bytes(count, vocab) == (count * codec.token_bits(vocab) + 7) // 8
    assert unpack_ids(data, count, vocab) == tuple(ids)


def test_nonzero_padding_bits_are_malformed() -> None:
    with pytest.raises(ValueError):
        unpack_ids(bytes([0b00000100, 0b00100001]), 2, 64)
    with pytest.raises(ValueError):
        unpack_ids(bytes(48) + b"\x01", 65, 64)  # 390 bits, 2 padding bits


def test_token_bits() -> None:
    assert [codec.token_bits(v) for v in (2, 3, 4, 5, 50272, 65536, 65537, 151936)] == [1, 2, 2, 3, 16, 16, 17, 18]


def test_packing_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError):
        pack_ids([64], 64)
    with pytest.raises(ValueError):
        unpack_ids(b"\x3f", 1, 63)  # 6 bits hold 63, not < 63


def _reject(data: bytes, code: ErrorCode, limits: Limits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, limits) if limits else decode(data)
    assert info.value.code == code, info.value
    return info.value


def test_unknown_version_is_reported_as_such() -> None:
    data = bytearray(encode(draft_msg()))
    data[2] = 2
    _reject(bytes(data), ErrorCode.BAD_VERSION)


def test_malformed_inputs() -> None:
    good = encode(draft_msg())
    _reject(b"", ErrorCode.MALFORMED)
    _reject(b"XX" + good[2:], ErrorCode.MALFORMED)
    _reject(good[:-1], ErrorCode.MALFORMED)  # header length disagrees
    _reject(good + b"\x00", ErrorCode.MALFORMED)
    bad_type = bytearray(good)
    bad_type[3] = 99
    _reject(bytes(bad_type), ErrorCode.MALFORMED)
    bad_flags = bytearray(good)
    bad_flags[4] = 0x80
    _reject(bytes(bad_flags), ErrorCode.MALFORMED)
    resync_on_draft = bytearray(good)
    resync_on_draft[4] = 0x01
    _reject(bytes(resync_on_draft), ErrorCode.MALFORMED)
    # lattice length pointing past the end, consistent header length
    payload = bytearray(good[HEADER_SIZE:])
    off = 24 + codec.token_bytes(3, 50272)
    payload[off : off + 4] = struct.pack("<I", 1 << 30)
    _reject(good[:8] + struct.pack("<I", len(payload)) + bytes(payload), ErrorCode.MALFORMED)


def test_token_id_beyond_vocab_is_malformed() -> None:
    data = bytearray(encode(draft_msg(vocab_size=50000, tokens=(49999, 1, 2))))
    data[HEADER_SIZE + 24] = 0xFF
    data[HEADER_SIZE + 25] = 0xFF  # id 65535 >= 50000
    _reject(bytes(data), ErrorCode.MALFORMED)


def test_limits_enforced_on_decode_and_encode() -> None:
    small = Limits(max_message_bytes=4096, max_draft_len=4, max_history=100)
    _reject(encode(draft_msg(tokens=(1,) * 5, lattice=(b"x",) * 5)), ErrorCode.TOO_LARGE, small)
    _reject(encode(open_msg(history=tuple(range(101)))), ErrorCode.TOO_LARGE, small)
    _reject(encode(open_msg(history=tuple(range(3000)))), ErrorCode.TOO_LARGE, small)  # > 4096 bytes
    with pytest.raises(ProtocolError) as info:
        encode(draft_msg(tokens=(1,) * 5, lattice=(b"x",) * 5), small)
    assert info.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(ProtocolError):
        encode(draft_msg(tokens=(1,) * 33, lattice=(b"x",) * 33))  # default max L is 32


def test_bad_sampling_parameters() -> None:
    for bad in ({"temperature": float("nan")}, {"top_p": 0.0}, {"top_p": 1.5}, {"temperature": -1.0},
                {"temperature": 1e4}, {"top_k": -1}, {"top_k": 2**32}, {"seed": 2**64}, {"top_k": 1.5}):
        with pytest.raises(ProtocolError) as info:  # refused where it is made, before any encoding
            SamplingParams(**bad)
        assert info.value.code == ErrorCode.BAD_PARAMS
    # a NaN written straight into the bytes is caught on decode, with the session id for the reply
    data = bytearray(encode(open_msg(session_id=99)))
    data[HEADER_SIZE + 16 : HEADER_SIZE + 20] = struct.pack("<f", float("nan"))
    err = _reject(bytes(data), ErrorCode.BAD_PARAMS)
    assert err.session_id == 99


def test_ids_must_be_topic_safe() -> None:
    for bad in ("", "a/b", "a+b", "#", "x" * 65, "bö"):
        with pytest.raises(ProtocolError):
            encode(open_msg(device_id=bad))


def test_inconsistent_draft_and_feedback_rejected_on_encode() -> None:
    with pytest.raises(ProtocolError):
        encode(draft_msg(lattice=(b"x",)))  # 3 tokens, 1 lattice point
    with pytest.raises(ProtocolError):
        encode(draft_msg(lattice=(b"x", b"", b"y")))
    with pytest.raises(ProtocolError):
        encode(Feedback(1, 1, 1, 3, 0, (1.0, 1.0)))  # accepted > positions
    with pytest.raises(ProtocolError):
        encode(Feedback(1, 1, 1, 0, 0, (1.5,)))


def test_error_reply_for_a_rejection_decodes() -> None:
    data = bytearray(encode(draft_msg(session_id=5, round_seq=6)))
    data[2] = 9
    with pytest.raises(ProtocolError) as info:
        decode(bytes(data))
    reply = decode(error_reply_for(info.value))
    assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.BAD_VERSION


def test_open_ack_cost_trailer_layout_and_legacy_ack() -> None:
    ack = OpenAck(7, "w", 404, 17, "bf16", (300_000, 310_000))
    data = encode(ack)
    trailer = data[HEADER_SIZE + 16 + 1 + 1:]  # after session, position, seq, worker id length and "w"
    assert trailer == b"\x04bf16\x02" + (300_000).to_bytes(4, "little") + (310_000).to_bytes(4, "little")
    legacy = data[: len(data) - len(trailer)]  # an ack of a worker that sends no trailer
    legacy = legacy[:8] + (len(legacy) - HEADER_SIZE).to_bytes(4, "little") + legacy[12:]
    assert decode(legacy) == OpenAck(7, "w", 404, 17)
    bad = bytearray(data)
    bad[HEADER_SIZE + 18] = 0x00  # a non-printable character in the precision name
    with pytest.raises(ProtocolError):
        decode(bytes(bad))
    with pytest.raises(ProtocolError):
        encode(OpenAck(7, "w", 404, 17, "x" * 17))
    with pytest.raises(ProtocolError):
        encode(OpenAck(7, "w", 404, 17, "int8", tuple(range(1, 100))))
    truncated = data[:-2]
    truncated = truncated[:8] + (len(truncated) - HEADER_SIZE).to_bytes(4, "little") + truncated[12:]
    with pytest.raises(ProtocolError):
        decode(truncated)
