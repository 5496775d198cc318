"""Serial framing for board flashing: COBS-delimited frames with type, sequence number, length and CRC32.

Wire format of one frame (see docs/BOARDS.md)::

    0x00 | COBS( version:u8 | type:u8 | seq:u16 | length:u16 | body[length] | crc32:u32 ) | 0x00

All integers big-endian; crc32 is ``zlib.crc32`` over version..body. COBS removes every zero byte from the encoded
payload, so 0x00 only ever delimits frames: a receiver resynchronises at the next 0x00 after any corruption. The
leading 0x00 flushes whatever partial frame a receiver may hold from an earlier interrupted transfer.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">BBHH")  # version, type, seq, body length
CRC = struct.Struct(">I")
MIN_PAYLOAD = HEADER.size + CRC.size
MAX_BODY = 8192  # bytes of body per frame (chunk data, NACK messages)
SEQ_UNKNOWN = 0xFFFF  # seq of a NACK answering a frame whose header could not be trusted
DELIMITER = b"\x00"


class FrameType(IntEnum):
    HELLO = 0x01  # -> ACK body: JSON agent info
    BEGIN = 0x10  # body: BEGIN_BODY; starts a transfer (apply or validate-only)
    DATA = 0x11  # body: offset:u32 | chunk
    COMMIT = 0x12  # ends a transfer: validate, then write atomically (or only validate) -> ACK body: RESULT_BODY
    ABORT = 0x13  # drops a transfer in progress
    READ_HASH = 0x20  # -> ACK body: HASH_BODY of the active config
    ROLLBACK = 0x21  # previous config becomes active -> ACK body: HASH_BODY of the now active config
    ACK = 0x80  # seq echoes the request
    NACK = 0x81  # seq echoes the request (SEQ_UNKNOWN if unreadable); body: code:u8 | UTF-8 message


class NackCode(IntEnum):
    BAD_CRC = 1  # frame damaged in transit: retransmit
    BAD_FRAME = 2  # undecodable / truncated / oversized frame: retransmit
    UNKNOWN_TYPE = 3
    NO_TRANSFER = 4  # DATA/COMMIT without BEGIN
    OUT_OF_ORDER = 5  # DATA at the wrong offset, COMMIT before all bytes arrived
    TOO_LARGE = 6  # config larger than the board accepts
    HASH_MISMATCH = 7  # received bytes do not hash to what BEGIN announced
    INVALID_CONFIG = 8  # schema / semantic validation failed on the board (message lists the issues)
    WRITE_FAILED = 9  # storage error; the previous config stays active
    NO_PREVIOUS = 10  # rollback without a previous config
    NO_CONFIG = 11  # no active config on the board
    BAD_REQUEST = 12  # malformed body


RETRYABLE_NACKS = frozenset({NackCode.BAD_CRC, NackCode.BAD_FRAME})

FLAG_VALIDATE_ONLY = 0x01
BEGIN_BODY = struct.Struct(">IB32s")  # total size, flags, sha256 digest of the whole config
DATA_OFFSET = struct.Struct(">I")
HASH_BODY = struct.Struct(">32sI")  # sha256 digest, size in bytes
RESULT_BODY = struct.Struct(">32sIB")  # sha256 digest, size, outcome (RESULT_*)
RESULT_VALIDATED, RESULT_APPLIED, RESULT_UNCHANGED = 0, 1, 2


class FrameError(ValueError):
    """A received frame that cannot be used; ``code`` is the NACK code to answer with."""

    def __init__(self, code: NackCode, message: str, seq: int = SEQ_UNKNOWN):
        super().__init__(message)
        self.code = code
        self.seq = seq


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    body: bytes = b""

    def type_name(self) -> str:
        try:
            return FrameType(self.type).name
        except ValueError:
            return f"0x{self.type:02x}"


# ----------------------------------------------------------------------------------------------------------------- COBS
def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: output has no zero bytes, overhead ≤ 1 + len/254."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(NackCode.BAD_FRAME, "zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError(NackCode.BAD_FRAME, "truncated COBS block")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError(NackCode.BAD_FRAME, "zero byte inside a COBS frame")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# --------------------------------------------------------------------------------------------------------------- frames
def max_encoded_size(max_body: int = MAX_BODY) -> int:
    payload = MIN_PAYLOAD + max_body
    return payload + payload // 254 + 2


def encode_frame(frame: Frame) -> bytes:
    if len(frame.body) > MAX_BODY:
        raise ValueError(f"frame body of {len(frame.body)} bytes exceeds {MAX_BODY}")
    if not 0 <= frame.seq <= 0xFFFF or not 0 <= frame.type <= 0xFF:
        raise ValueError("frame seq must fit u16 and type u8")
    payload = HEADER.pack(PROTOCOL_VERSION, frame.type, frame.seq, len(frame.body)) + frame.body
    payload += CRC.pack(zlib.crc32(payload))
    return DELIMITER + cobs_encode(payload) + DELIMITER


def decode_frame(encoded: bytes) -> Frame:
    """Decode the bytes between two delimiters; raises FrameError (with the NACK code to send)."""
    payload = cobs_decode(encoded)
    if len(payload) < MIN_PAYLOAD:
        raise FrameError(NackCode.BAD_FRAME, f"frame of {len(payload)} bytes is shorter than {MIN_PAYLOAD}")
    (crc,) = CRC.unpack_from(payload, len(payload) - CRC.size)
    if zlib.crc32(payload[: -CRC.size]) != crc:
        raise FrameError(NackCode.BAD_CRC, "CRC32 mismatch")
    version, ftype, seq, length = HEADER.unpack_from(payload)
    if version != PROTOCOL_VERSION:
        raise FrameError(NackCode.BAD_FRAME, f"protocol version {version}, expected {PROTOCOL_VERSION}", seq)
    if length != len(payload) - MIN_PAYLOAD:
        raise FrameError(NackCode.BAD_FRAME, f"length field {length} != body of {len(payload) - MIN_PAYLOAD}", seq)
    return Frame(ftype, seq, bytes(payload[HEADER.size : -CRC.size]))


class FrameDecoder:
    """Incremental decoder: feed raw bytes, get complete frames or FrameErrors (never raises on bad input).

    Frames longer than ``max_encoded`` are dropped up to the next delimiter (one BAD_FRAME error) so a flood of
    garbage cannot grow memory without bound.
    """

    def __init__(self, max_encoded: int | None = None):
        self.max_encoded = max_encoded or max_encoded_size()
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> Iterator[Frame | FrameError]:
        start = 0
        while start < len(data):
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > self.max_encoded:
                    self._overflow = True
                    self._buf.clear()
            if end < 0:
                return
            start = end + 1
            if self._overflow:
                self._overflow = False
                yield FrameError(NackCode.BAD_FRAME, f"frame longer than {self.max_encoded} bytes dropped")
            elif self._buf:
                raw = bytes(self._buf)
                self._buf.clear()
                try:
                    yield decode_frame(raw)
                except FrameError as exc:
                    yield exc

    @property
    def pending(self) -> int:
        return len(self._buf)


# ------------------------------------------------------------------------------------------------------------ serial IO
class SerialLike(Protocol):
    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def flush(self) -> None: ...


def read_available(ser: SerialLike) -> bytes:
    """Whatever has arrived, in bulk: waits up to ``ser.timeout`` for the first byte, then takes all that is queued.

    (pyserial's read_until reads one byte per call; this does one or two reads.)
    """
    waiting = ser.in_waiting
    if waiting:
        return ser.read(waiting)
    data = ser.read(1)
    if data:
        waiting = ser.in_waiting
        if waiting:
            data += ser.read(waiting)
    return data


def nack_body(code: NackCode, message: str) -> bytes:
    encoded = message.encode("utf-8", "replace")[: MAX_BODY - 1]
    return bytes([int(code)]) + encoded


def parse_nack(body: bytes) -> tuple[NackCode | int, str]:
    if not body:
        return 0, "empty NACK"
    try:
        code: NackCode | int = NackCode(body[0])
    except ValueError:
        code = body[0]
    return code, body[1:].decode("utf-8", "replace")
