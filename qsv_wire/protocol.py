"""QSV wire protocol v1: the one definition of the bytes exchanged between a board and the cloud verifier.

Imported by both sides (edge transport and ``cloud_verifier.mqtt_service``). docs/PROTOCOL.md documents every byte.

Every message is a 12-byte little-endian header followed by a type-specific payload::

    magic  b"QS" | version u8 | type u8 | flags u16 | reserved u16 (0) | payload length u32

Decoding never trusts the input: every length is bounded (``Limits``) before anything is allocated, and every
failure is a ``ProtocolError`` carrying the error code the receiver should reply with.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import numpy as np

from qsv_wire import codec
from qsv_wire.lattice import MAX_ELL, MAX_VOCAB

PROTOCOL_VERSION = 1
MAGIC = b"QS"
HEADER = struct.Struct("<2sBBHHI")
HEADER_SIZE = HEADER.size  # 12


class MsgType(IntEnum):
    OPEN = 1
    OPEN_ACK = 2
    DRAFT = 3
    FEEDBACK = 4
    ERROR = 5
    CLOSE = 6


class Flags(IntFlag):
    NONE = 0
    RESYNC = 0x0001  # OPEN: the board reopens an existing generation with its full token history


KNOWN_FLAGS = int(Flags.RESYNC)


class ErrorCode(IntEnum):
    BAD_VERSION = 1  # header version is not one this receiver speaks
    MALFORMED = 2  # bad magic, truncated, inconsistent lengths, out-of-range field
    TOO_LARGE = 3  # a size limit was exceeded
    UNKNOWN_SESSION = 4  # no such session on this worker: reopen (resync) with the full history
    NOT_OWNER = 5  # the session belongs to another device than the topic's
    RATE_LIMITED = 6  # the device exceeded its message budget; retry later
    DESYNC = 7  # round position / sequence does not match the verifier's session state: resync
    VOCAB_MISMATCH = 8  # vocab size or vocab hash differs from the verifier's model
    BAD_PARAMS = 9  # sampling parameters or round parameters (L, ell, codec mode) not acceptable
    INTERNAL = 10  # verifier-side failure; the board may retry or resync
    UNEXPECTED = 11  # a message type the receiver does not accept on this topic


@dataclass(frozen=True)
class Limits:
    """The one table of protocol and cost limits, imported by the board and by the verifier (docs/PROTOCOL.md,
    "Limits"). Size limits are enforced on decode (and on encode, so a sender cannot produce what a receiver
    rejects) before anything is allocated or computed; the per-device limits by the verifier's MQTT service before a
    request is queued. The board's drafting respects ``max_draft_len`` and ``max_ell`` (``edge_runtime.config``
    validation, ``RoundEngine``). Exceeding a size limit is TOO_LARGE, a per-device limit RATE_LIMITED."""

    max_message_bytes: int = 128 << 10  # any message; the largest legal one (OPEN, max_history ids at 21 bits) ≈ 84 KiB
    max_draft_len: int = 32  # L: draft tokens (and lattice points) per DRAFT
    max_ell: int = 1024  # ℓ: worst enumerative decode ∝ ℓ²·log V: ≈ 60 ms per maximal DRAFT at V = 49,152
    max_history: int = 32768  # OPEN history (prompt + committed tokens on RESYNC) = the session's token limit
    max_vocab_size: int = MAX_VOCAB  # the C quantizer's QSV_MAX_VOCAB: every draft comes from it (codec: up to 2^24)
    max_id_chars: int = 64
    max_error_chars: int = 1024
    device_rate_per_s: float = 200.0  # messages per second per device (token bucket on each worker)
    device_burst: float = 50.0
    device_inflight: int = 2  # OPENs being prefilled + DRAFTs being verified per device per worker


DEFAULT_LIMITS = Limits()
MAX_TEMPERATURE = 1000.0  # SamplingParams.temperature: 0 (greedy) .. this
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``code`` is what the error reply carries."""

    def __init__(self, code: ErrorCode, message: str, session_id: int = 0, round_seq: int = 0) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.detail = message
        self.session_id = session_id
        self.round_seq = round_seq


# ----------------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class SamplingParams:
    """How a session samples, on both sides (the one definition; the OPEN carries it). temperature 0 is greedy (all
    mass on the argmax, lowest id on ties); top_k 0 and top_p 1.0 are off. The order (temperature, then top-k, then
    top-p) and the tie rules are csrc/qsv_quant.h's; the verifier applies the same to the target's logits.
    Invalid values raise ProtocolError(BAD_PARAMS) (a ValueError) on construction."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0  # the board's draws are keyed by (seed, round, position)

    def __post_init__(self) -> None:
        t, p = self.temperature, self.top_p
        if not (isinstance(t, numbers.Real) and math.isfinite(t) and 0.0 <= t <= MAX_TEMPERATURE):
            raise ProtocolError(ErrorCode.BAD_PARAMS, f"temperature must be finite and in [0, {MAX_TEMPERATURE:g}], "
                                f"got {t}")
        if not (isinstance(p, numbers.Real) and math.isfinite(p) and 0.0 < p <= 1.0):
            raise ProtocolError(ErrorCode.BAD_PARAMS, f"top_p must be in (0, 1], got {p}")
        for name, value, bits in (("top_k", self.top_k, 32), ("seed", self.seed, 64)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 1 << bits:
                raise ProtocolError(ErrorCode.BAD_PARAMS, f"{name} must be an integer in 0..2^{bits}-1, got {value!r}")


@dataclass(frozen=True)
class OpenSession:
    device_id: str
    session_id: int
    history: tuple[int, ...]  # prompt (and, on resync, every token committed since) as token ids
    sampling: SamplingParams
    vocab_size: int
    vocab_hash: bytes  # 32 bytes, SHA-256 of the tokenizer vocabulary (see docs/PROTOCOL.md)
    next_round_seq: int = 0  # sequence number the board will use for its next draft round
    resync: bool = False


@dataclass(frozen=True)
class OpenAck:
    session_id: int
    worker_id: str  # the worker holding the session; rounds go to qsv/v1/<device>/draft/<worker_id>
    position: int  # history length the worker holds
    next_round_seq: int
    precision: str = ""  # the precision the target runs in ("fp32", "bf16", "int8", …; "" = not reported)
    pass_us: tuple[int, ...] = ()  # measured cost of one verification pass over n = 1, 2, … tokens (µs)



CODEC_MODE_QSV1 = 0  # DraftRound.codec_mode: lattice points as qsv_wire.codec messages (docs/CODEC.md)
CODEC_MODE_TOY = 255  # the private format of the test doubles (tests/doubles/toy.py); the PyTorch verifier refuses it
CODEC_MODES = frozenset({CODEC_MODE_QSV1, CODEC_MODE_TOY})  # every other value is reserved: BAD_PARAMS both ways
CLOSE_REASONS = frozenset({0, 1, 2})  # CloseSession.reason; every other value is reserved: MALFORMED both ways

@dataclass(frozen=True)
class DraftRound:
    session_id: int
    round_seq: int
    position: int  # number of committed tokens before the first draft token
    vocab_size: int
    ell: int
    codec_mode: int  # one of CODEC_MODES (docs/PROTOCOL.md); the lattice bytes are opaque to the protocol
    tokens: tuple[int, ...]  # L draft token ids
    lattice: tuple[bytes, ...]  # L encoded lattice points q̂_1..q̂_L (docs/CODEC.md), opaque here

    @property
    def draft_len(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Feedback:
    session_id: int
    round_seq: int
    position: int  # the round's position (as in the DraftRound)
    accepted: int  # number of draft tokens accepted, 0..L
    next_token: int  # correction (accepted < L) or bonus token (accepted == L)
    accept_probs: tuple[float, ...] = field(default=())  # α_i per draft position, sent as uint16 fixed point
    queue_us: int = 0
    verify_us: int = 0


@dataclass(frozen=True)
class ErrorReply:
    code: ErrorCode
    message: str
    session_id: int = 0
    round_seq: int = 0


@dataclass(frozen=True)
class CloseSession:
    session_id: int
    reason: int = 0  # 0 done, 1 cancelled by the board, 2 idle timeout (verifier side)


Message = OpenSession | OpenAck | DraftRound | Feedback | ErrorReply | CloseSession

# ------------------------------------------------------------------------------------------------- token packing
# Token ids travel in the codec's packing (qsv_wire.codec.pack_tokens, the C core; docs/CODEC.md): b = ⌈log2 V⌉ bits
# each, MSB first, zero-padded to whole bytes. The protocol's V is at least 2, so b >= 1.


def pack_ids(ids: Sequence[int], vocab_size: int) -> bytes:
    """Token ids packed for the wire; an id outside 0..V-1 is MALFORMED."""
    try:
        return codec.pack_tokens(np.asarray(ids, dtype=np.int64), vocab_size)
    except (codec.CodecError, TypeError, OverflowError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"token ids: {exc}") from None


def unpack_ids(data: bytes | memoryview, count: int, vocab_size: int) -> tuple[int, ...]:
    """``count`` ids from exactly their packed bytes; wrong length, nonzero padding or an id >= V is MALFORMED."""
    try:
        return tuple(codec.unpack_tokens(data, count, vocab_size).tolist())
    except codec.CodecError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"token ids: {exc}") from None


# ----------------------------------------------------------------------------------------------------- encoding

_OPEN_FIXED = struct.Struct("<Q I I f I f Q I 32s")  # session, vocab, next_seq, temp, top_k, top_p, seed, n_hist, hash
_OPEN_ACK_FIXED = struct.Struct("<Q I I")  # session, position, next_round_seq
_DRAFT_FIXED = struct.Struct("<Q I I I H B B")  # session, round_seq, position, vocab, ell, L, codec_mode
_FEEDBACK_FIXED = struct.Struct("<Q I I B I I I B")  # session, seq, position, accepted, next, queue, verify, n_probs
_ERROR_FIXED = struct.Struct("<Q I H H")  # session, round_seq, code, message length
_CLOSE_FIXED = struct.Struct("<Q B")
_U32 = struct.Struct("<I")


def _check_id(value: str, what: str, limits: Limits) -> bytes:
    if not value or len(value) > limits.max_id_chars or not set(value) <= _ID_CHARS:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} must be 1..{limits.max_id_chars} chars of [A-Za-z0-9_.-]")
    return value.encode("ascii")


def _frame(msg_type: MsgType, payload: bytes, flags: int, limits: Limits) -> bytes:
    total = HEADER_SIZE + len(payload)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {total} bytes exceeds {limits.max_message_bytes}")
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(msg_type), flags, 0, len(payload)) + payload


def _check_u(value: int, bits: int, what: str) -> int:
    if not 0 <= int(value) < (1 << bits):
        raise ProtocolError(ErrorCode.MALFORMED, f"{what}={value} does not fit in u{bits}")
    return int(value)


def _check_vocab(vocab_size: int, limits: Limits) -> None:
    if not 2 <= vocab_size <= limits.max_vocab_size:
        raise ProtocolError(ErrorCode.MALFORMED, f"vocab_size must be in 2..{limits.max_vocab_size}, got {vocab_size}")


def _check_round_shape(ell: int, codec_mode: int, limits: Limits, session: int = 0, seq: int = 0) -> None:
    """A DRAFT's ℓ and codec mode: ℓ above the limit is TOO_LARGE (a cost limit), a reserved mode BAD_PARAMS."""
    if not 1 <= ell <= MAX_ELL:
        raise ProtocolError(ErrorCode.BAD_PARAMS, f"ell must be in 1..{MAX_ELL}, got {ell}", session, seq)
    if ell > limits.max_ell:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"ell {ell} exceeds the limit {limits.max_ell}", session, seq)
    if codec_mode not in CODEC_MODES:
        raise ProtocolError(ErrorCode.BAD_PARAMS, f"codec mode {codec_mode} is reserved (defined: "
                            f"{sorted(CODEC_MODES)})", session, seq)


def _check_close_reason(reason: int, session: int) -> None:
    if reason not in CLOSE_REASONS:
        raise ProtocolError(ErrorCode.MALFORMED, f"close reason {reason} is reserved", session)


def _check_precision(raw: bytes) -> bytes:
    """The OPEN_ACK's precision name: 0..16 printable ASCII characters (docs/PROTOCOL.md)."""
    if len(raw) > 16 or not all(0x21 <= c <= 0x7E for c in raw):
        raise ProtocolError(ErrorCode.MALFORMED, "precision must be 0..16 printable ASCII characters")
    return raw


def encode(msg: Message, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialize one message (header included). Raises ProtocolError on values the decoder would reject."""
    if isinstance(msg, OpenSession):
        device = _check_id(msg.device_id, "device_id", limits)
        _check_vocab(msg.vocab_size, limits)
        if len(msg.vocab_hash) != 32:
            raise ProtocolError(ErrorCode.MALFORMED, "vocab_hash must be 32 bytes")
        if not 1 <= len(msg.history) <= limits.max_history:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"history must hold 1..{limits.max_history} tokens")
        s = msg.sampling
        fixed = _OPEN_FIXED.pack(
            _check_u(msg.session_id, 64, "session_id"), msg.vocab_size, _check_u(msg.next_round_seq, 32, "seq"),
            s.temperature, s.top_k, s.top_p, s.seed, len(msg.history), msg.vocab_hash,
        )
        payload = fixed + bytes([len(device)]) + device + pack_ids(msg.history, msg.vocab_size)
        return _frame(MsgType.OPEN, payload, int(Flags.RESYNC) if msg.resync else 0, limits)
    if isinstance(msg, OpenAck):
        worker = _check_id(msg.worker_id, "worker_id", limits)
        fixed = _OPEN_ACK_FIXED.pack(
            _check_u(msg.session_id, 64, "session_id"), _check_u(msg.position, 32, "position"),
            _check_u(msg.next_round_seq, 32, "next_round_seq"),
        )
        precision = _check_precision(msg.precision.encode("utf-8"))
        if len(msg.pass_us) > limits.max_draft_len + 1:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"at most {limits.max_draft_len + 1} pass costs")
        costs = struct.pack(f"<{len(msg.pass_us)}I", *(_check_u(c, 32, "pass_us") for c in msg.pass_us))
        trailer = bytes([len(precision)]) + precision + bytes([len(msg.pass_us)]) + costs
        return _frame(MsgType.OPEN_ACK, fixed + bytes([len(worker)]) + worker + trailer, 0, limits)
    if isinstance(msg, DraftRound):
        _check_vocab(msg.vocab_size, limits)
        n = len(msg.tokens)
        if not 1 <= n <= limits.max_draft_len:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"draft length must be 1..{limits.max_draft_len}, got {n}")
        if len(msg.lattice) != n:
            raise ProtocolError(ErrorCode.MALFORMED, f"{len(msg.lattice)} lattice points for {n} draft tokens")
        _check_round_shape(msg.ell, msg.codec_mode, limits, msg.session_id, msg.round_seq)
        fixed = _DRAFT_FIXED.pack(
            _check_u(msg.session_id, 64, "session_id"), _check_u(msg.round_seq, 32, "round_seq"),
            _check_u(msg.position, 32, "position"), msg.vocab_size, msg.ell, n, _check_u(msg.codec_mode, 8, "mode"),
        )
        parts = [fixed, pack_ids(msg.tokens, msg.vocab_size)]
        for blob in msg.lattice:
            if not blob:
                raise ProtocolError(ErrorCode.MALFORMED, "empty lattice point")
            parts.append(struct.pack("<I", len(blob)))
            parts.append(bytes(blob))
        return _frame(MsgType.DRAFT, b"".join(parts), 0, limits)
    if isinstance(msg, Feedback):
        n = len(msg.accept_probs)
        if n > limits.max_draft_len or not 0 <= msg.accepted <= limits.max_draft_len:
            raise ProtocolError(ErrorCode.TOO_LARGE, "feedback longer than the maximum draft length")
        if n and msg.accepted > n:
            raise ProtocolError(ErrorCode.MALFORMED, "accepted count exceeds the number of probabilities")
        probs = [float(a) for a in msg.accept_probs]
        if not all(0.0 <= a <= 1.0 for a in probs):  # also rejects NaN
            raise ProtocolError(ErrorCode.MALFORMED, "acceptance probabilities must lie in [0, 1]")
        fixed = _FEEDBACK_FIXED.pack(
            _check_u(msg.session_id, 64, "session_id"), _check_u(msg.round_seq, 32, "round_seq"),
            _check_u(msg.position, 32, "position"), msg.accepted, _check_u(msg.next_token, 32, "next_token"),
            _check_u(msg.queue_us, 32, "queue_us"), _check_u(msg.verify_us, 32, "verify_us"), n,
        )
        fixed_probs = struct.pack(f"<{n}H", *(round(a * 65535.0) for a in probs))
        return _frame(MsgType.FEEDBACK, fixed + fixed_probs, 0, limits)
    if isinstance(msg, ErrorReply):
        text = msg.message[: limits.max_error_chars].encode("utf-8")[: limits.max_error_chars * 4]
        fixed = _ERROR_FIXED.pack(
            _check_u(msg.session_id, 64, "session_id"), _check_u(msg.round_seq, 32, "round_seq"),
            int(msg.code), len(text),
        )
        return _frame(MsgType.ERROR, fixed + text, 0, limits)
    if isinstance(msg, CloseSession):
        _check_close_reason(msg.reason, msg.session_id)
        payload = _CLOSE_FIXED.pack(_check_u(msg.session_id, 64, "session_id"), msg.reason)
        return _frame(MsgType.CLOSE, payload, 0, limits)
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


# ----------------------------------------------------------------------------------------------------- decoding


class _Reader:
    """Bounds-checked cursor over a payload."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(ErrorCode.MALFORMED, f"truncated message while reading {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def ident(self, what: str, limits: Limits) -> str:
        (n,) = self.take(1, what)
        raw = bytes(self.take(n, what))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, f"{what} is not ASCII") from exc
        _check_id(text, what, limits)
        return text

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(ErrorCode.MALFORMED, f"{len(self.data) - self.pos} trailing bytes")


@dataclass(frozen=True)
class Header:
    version: int
    msg_type: int
    flags: int
    length: int


def decode_header(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    if len(data) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.MALFORMED, f"message of {len(data)} bytes is shorter than the header")
    magic, version, msg_type, flags, reserved, length = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "bad magic")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {version} not supported (v{PROTOCOL_VERSION})")
    if msg_type not in MsgType._value2member_map_:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown message type {msg_type}")
    if flags & ~KNOWN_FLAGS or reserved != 0:
        raise ProtocolError(ErrorCode.MALFORMED, "reserved flag bits or reserved field set")
    if HEADER_SIZE + length != len(data):
        raise ProtocolError(ErrorCode.MALFORMED, f"header says {length} payload bytes, got {len(data) - HEADER_SIZE}")
    return Header(version, msg_type, flags, length)


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one message. Raises ProtocolError (never anything else) on any bad input."""
    try:
        return _decode(data, limits)
    except ProtocolError:
        raise
    except (ValueError, struct.error, OverflowError) as exc:  # defensive: report, never crash the receiver
        raise ProtocolError(ErrorCode.MALFORMED, str(exc)) from exc


def _decode(data: bytes | bytearray | memoryview, limits: Limits) -> Message:
    header = decode_header(data, limits)
    r = _Reader(memoryview(data)[HEADER_SIZE:])
    mtype = MsgType(header.msg_type)
    if mtype is MsgType.OPEN:
        session, vocab, next_seq, temp, top_k, top_p, seed, n_hist, vhash = r.unpack(_OPEN_FIXED, "open")
        _check_vocab(vocab, limits)
        if not 1 <= n_hist <= limits.max_history:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"history of {n_hist} tokens (limit {limits.max_history})",
                                session)
        device = r.ident("device_id", limits)
        history = unpack_ids(bytes(r.take(codec.token_bytes(n_hist, vocab), "history")), n_hist, vocab)
        r.done()
        try:
            sampling = SamplingParams(float(temp), int(top_k), float(top_p), int(seed))
        except ProtocolError as exc:
            exc.session_id = session
            raise
        return OpenSession(device, session, history, sampling, vocab, bytes(vhash), next_seq,
                           bool(header.flags & Flags.RESYNC))
    if header.flags:
        raise ProtocolError(ErrorCode.MALFORMED, f"flags 0x{header.flags:x} not valid on {mtype.name}")
    if mtype is MsgType.OPEN_ACK:
        session, position, next_seq = r.unpack(_OPEN_ACK_FIXED, "open ack")
        worker = r.ident("worker_id", limits)
        precision, pass_us = "", ()
        if r.pos < len(r.data):  # the verifier-cost trailer (docs/PROTOCOL.md); absent in acks of older workers
            (n_prec,) = r.take(1, "precision length")
            precision = _check_precision(bytes(r.take(n_prec, "precision"))).decode("ascii")
            (n_cost,) = r.take(1, "pass cost count")
            if n_cost > limits.max_draft_len + 1:
                raise ProtocolError(ErrorCode.MALFORMED, f"{n_cost} pass costs (max {limits.max_draft_len + 1})")
            pass_us = struct.unpack(f"<{n_cost}I", bytes(r.take(4 * n_cost, "pass costs")))
        r.done()
        return OpenAck(session, worker, position, next_seq, precision, tuple(pass_us))
    if mtype is MsgType.DRAFT:
        return _decode_draft(bytes(data), limits)
    if mtype is MsgType.FEEDBACK:
        session, seq, position, accepted, next_token, queue_us, verify_us, n = r.unpack(_FEEDBACK_FIXED, "feedback")
        if n > limits.max_draft_len or accepted > limits.max_draft_len or (n and accepted > n):
            raise ProtocolError(ErrorCode.MALFORMED, "feedback counts out of range", session, seq)
        raw = bytes(r.take(2 * n, "acceptance probabilities"))
        r.done()
        probs = tuple(v / 65535.0 for v in struct.unpack(f"<{n}H", raw))
        return Feedback(session, seq, position, accepted, next_token, probs, queue_us, verify_us)
    if mtype is MsgType.ERROR:
        session, seq, code, n = r.unpack(_ERROR_FIXED, "error")
        if code not in ErrorCode._value2member_map_:
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown error code {code}", session, seq)
        text = bytes(r.take(n, "error message")).decode("utf-8", errors="replace")
        r.done()
        return ErrorReply(ErrorCode(code), text, session, seq)
    session, reason = r.unpack(_CLOSE_FIXED, "close")
    r.done()
    _check_close_reason(reason, session)
    return CloseSession(session, reason)


def _decode_draft(buf: bytes, limits: Limits) -> DraftRound:
    """DRAFT is the hot path of every round: offsets over the bytes, no intermediate views."""
    end = len(buf)
    off = HEADER_SIZE + _DRAFT_FIXED.size
    if off > end:
        raise ProtocolError(ErrorCode.MALFORMED, "truncated message while reading draft")
    session, seq, position, vocab, ell, n, mode = _DRAFT_FIXED.unpack_from(buf, HEADER_SIZE)
    _check_vocab(vocab, limits)
    if not 1 <= n <= limits.max_draft_len:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"draft length {n} (limit {limits.max_draft_len})", session, seq)
    _check_round_shape(ell, mode, limits, session, seq)
    token_end = off + codec.token_bytes(n, vocab)
    if token_end > end:
        raise ProtocolError(ErrorCode.MALFORMED, "truncated message while reading draft tokens", session, seq)
    tokens = unpack_ids(buf[off:token_end], n, vocab)
    off = token_end
    blobs = []
    unpack_u32 = _U32.unpack_from
    for _ in range(n):
        if off + 4 > end:
            raise ProtocolError(ErrorCode.MALFORMED, "truncated message while reading lattice length", session, seq)
        (size,) = unpack_u32(buf, off)
        off += 4
        if size == 0 or off + size > end:
            raise ProtocolError(ErrorCode.MALFORMED, "empty or truncated lattice point", session, seq)
        blobs.append(buf[off : off + size])
        off += size
    if off != end:
        raise ProtocolError(ErrorCode.MALFORMED, f"{end - off} trailing bytes", session, seq)
    return DraftRound(session, seq, position, vocab, ell, mode, tokens, tuple(blobs))


def error_reply_for(exc: ProtocolError) -> bytes:
    """The encoded ERROR message answering a rejected input."""
    return encode(ErrorReply(exc.code, exc.detail, exc.session_id, exc.round_seq))
