"""Host side of board flashing (``qsv flash``).

``qsv flash PORT CONFIG`` validates CONFIG locally, sends it in chunks (BEGIN / DATA… / COMMIT, each answered by an
ACK or NACK; retransmission on timeout or a damaged frame), then reads back the SHA-256 of the config active on the
board and compares it with the local file. ``--dry-run`` stops after local validation plus validation on the board
(nothing is written there; ``--local-only`` skips the board). ``--read-hash`` and ``--rollback`` need no config file.
PORT is a device (/dev/ttyUSB0) or any pyserial URL (socket://host:port, rfc2217://…, loop://).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from edge_runtime.config import validate_config_bytes
from edge_runtime.flashing.framing import (
    BEGIN_BODY,
    DATA_OFFSET,
    FLAG_VALIDATE_ONLY,
    HASH_BODY,
    MAX_BODY,
    RESULT_APPLIED,
    RESULT_BODY,
    RESULT_UNCHANGED,
    RESULT_VALIDATED,
    RETRYABLE_NACKS,
    SEQ_UNKNOWN,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    NackCode,
    SerialLike,
    encode_frame,
    parse_nack,
    read_available,
)
from edge_runtime.logs import add_logging_args, setup_logging

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024
DAMAGED_GRACE_S = 0.1  # wait this long for a real answer after a NACK for an unreadable frame
OUTCOMES = {RESULT_VALIDATED: "validated", RESULT_APPLIED: "applied", RESULT_UNCHANGED: "unchanged"}


class FlashError(RuntimeError):
    """A flashing step that failed; ``code`` is the board's NACK code (None for timeouts / local problems)."""

    def __init__(self, message: str, code: NackCode | int | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class LinkStats:
    requests: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    damaged_answers: int = 0
    retry_nacks: int = 0


@dataclass
class FlashResult:
    sha256: str  # what the board reports as active (or validated, for a dry run)
    size: int
    outcome: str  # applied | unchanged | validated
    verified: bool  # read-back hash equals the local file's hash
    chunks: int
    seconds: float
    stats: LinkStats = field(default_factory=LinkStats)


class Flasher:
    def __init__(self, ser: SerialLike, timeout: float = 2.0, retries: int = 5, chunk_size: int = DEFAULT_CHUNK):
        if not 1 <= chunk_size <= MAX_BODY - DATA_OFFSET.size:
            raise ValueError(f"chunk size must be in 1..{MAX_BODY - DATA_OFFSET.size}")
        self.ser = ser
        self.timeout = timeout
        self.retries = retries
        self.chunk_size = chunk_size
        self.decoder = FrameDecoder()
        self.stats = LinkStats()
        self._seq = random.randrange(0, SEQ_UNKNOWN)  # fresh per session: the agent's repeat cache never matches

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_UNKNOWN
        return self._seq

    def request(self, ftype: FrameType, body: bytes = b"") -> bytes:
        """Send one request and return the ACK body; retransmits on timeout / damage; raises FlashError."""
        seq = self._next_seq()
        what = Frame(ftype, seq).type_name()
        wire = encode_frame(Frame(ftype, seq, body))
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retransmissions += 1
                log.info("%s seq %d: retransmission %d/%d", what, seq, attempt, self.retries)
            self.ser.write(wire)
            self.ser.flush()
            answer = self._await(seq)
            if answer is None:
                continue
            if answer.type == FrameType.ACK:
                return answer.body
            code, message = parse_nack(answer.body)
            if code in RETRYABLE_NACKS:
                self.stats.retry_nacks += 1
                continue
            name = code.name if isinstance(code, NackCode) else str(code)
            raise FlashError(f"board refused {what}: {name}: {message}", code)
        raise FlashError(
            f"{what}: no usable answer after {self.retries + 1} attempts "
            f"(timeouts {self.stats.timeouts}, damaged answers {self.stats.damaged_answers}, "
            f"retry NACKs {self.stats.retry_nacks}); is the board agent running on this port?"
        )

    def _await(self, seq: int) -> Frame | None:
        """The answer to ``seq``; None on timeout or on a retry NACK for an unreadable frame."""
        deadline = time.monotonic() + self.timeout
        damaged_seen = False
        while time.monotonic() < deadline:
            for item in self.decoder.feed(read_available(self.ser)):
                if isinstance(item, FrameError):
                    self.stats.damaged_answers += 1
                    log.debug("damaged answer: %s", item)
                    continue
                if item.type not in (FrameType.ACK, FrameType.NACK):
                    continue  # e.g. our own frames on a loopback
                if item.seq == seq:
                    return item
                if item.seq == SEQ_UNKNOWN and item.type == FrameType.NACK:
                    code, message = parse_nack(item.body)
                    if code in RETRYABLE_NACKS and not damaged_seen:
                        # the board saw a damaged frame: ours, or a fragment of older traffic that our frame's leading
                        # delimiter flushed. Give a real answer a short grace period, then retransmit.
                        log.debug("board reports a damaged frame (%s)", message)
                        self.stats.retry_nacks += 1
                        damaged_seen = True
                        deadline = min(deadline, time.monotonic() + min(self.timeout, DAMAGED_GRACE_S))
                    continue
                log.debug("ignoring stale answer seq %d (waiting for %d)", item.seq, seq)
        if not damaged_seen:
            self.stats.timeouts += 1
        return None

    # -------------------------------------------------------------------------------------------------- operations
    def hello(self) -> dict:
        return json.loads(self.request(FrameType.HELLO).decode("utf-8"))

    def read_hash(self) -> tuple[str, int]:
        digest, size = HASH_BODY.unpack(self.request(FrameType.READ_HASH))
        return digest.hex(), size

    def rollback(self) -> tuple[str, int]:
        digest, size = HASH_BODY.unpack(self.request(FrameType.ROLLBACK))
        return digest.hex(), size

    def flash(self, raw: bytes, validate_only: bool = False, progress: bool = False) -> FlashResult:
        """Transfer ``raw`` and commit it (or have the board only validate it); verifies by read-back."""
        start = time.monotonic()
        digest = hashlib.sha256(raw).digest()
        flags = FLAG_VALIDATE_ONLY if validate_only else 0
        self.request(FrameType.BEGIN, BEGIN_BODY.pack(len(raw), flags, digest))
        chunks = range(0, len(raw), self.chunk_size)
        try:
            for offset in tqdm(chunks, desc="flash", unit="chunk", disable=not progress, leave=False):
                chunk = raw[offset : offset + self.chunk_size]
                (received,) = DATA_OFFSET.unpack(self.request(FrameType.DATA, DATA_OFFSET.pack(offset) + chunk))
                if received != offset + len(chunk):
                    raise FlashError(f"board holds {received} bytes after chunk at {offset}, expected "
                                     f"{offset + len(chunk)}")
            board_digest, size, outcome = RESULT_BODY.unpack(self.request(FrameType.COMMIT))
        except FlashError:
            self._abort_quietly()
            raise
        if board_digest != digest or size != len(raw):
            raise FlashError(f"board reports sha256 {board_digest.hex()} ({size} B) for what it received, "
                             f"local file is {digest.hex()} ({len(raw)} B)")
        if validate_only:
            verified = True
        else:
            active_hex, _ = self.read_hash()
            verified = active_hex == digest.hex()
            if not verified:
                raise FlashError(f"read-back mismatch: board's active config is {active_hex}, sent {digest.hex()}")
        return FlashResult(digest.hex(), size, OUTCOMES.get(outcome, str(outcome)), verified, len(chunks),
                           time.monotonic() - start, self.stats)

    def _abort_quietly(self) -> None:
        try:
            saved, self.retries = self.retries, 0
            self.request(FrameType.ABORT)
        except FlashError:
            pass
        finally:
            self.retries = saved


# ------------------------------------------------------------------------------------------------------------------ CLI
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qsv flash", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", help="serial device or pyserial URL")
    p.add_argument("config", nargs="?", type=Path, help="board config YAML to flash")
    p.add_argument("--dry-run", action="store_true", help="validate locally and on the board; write nothing")
    p.add_argument("--local-only", action="store_true", help="with --dry-run: validate locally, do not open PORT")
    p.add_argument("--read-hash", action="store_true", help="print the SHA-256 of the config active on the board")
    p.add_argument("--rollback", action="store_true", help="make the board's previous config active again")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    p.add_argument("--retries", type=int, default=5, help="retransmissions per frame")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    add_logging_args(p)
    args = p.parse_args(argv)
    if not (args.config or args.read_hash or args.rollback):
        p.error("give a config file, --read-hash or --rollback")
    if args.local_only and not args.dry_run:
        p.error("--local-only goes with --dry-run")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args)
    out = sys.stdout.write
    raw = None
    if args.config:
        try:
            raw = args.config.read_bytes()
        except OSError as exc:
            sys.stderr.write(f"qsv flash: cannot read {args.config}: {exc.strerror}\n")
            return 2
        issues = validate_config_bytes(raw, str(args.config))
        if issues:
            sys.stderr.write("".join(f"{i}\n" for i in issues))
            sys.stderr.write(f"qsv flash: {args.config} is invalid ({len(issues)} issues); nothing sent\n")
            return 1
        out(f"local validation ok: {args.config} ({len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()})\n")
        if args.dry_run and args.local_only:
            return 0
    import serial  # pyserial

    try:
        ser = serial.serial_for_url(args.port, baudrate=args.baud, timeout=min(0.05, args.timeout))
    except (serial.SerialException, ValueError) as exc:
        sys.stderr.write(f"qsv flash: cannot open {args.port}: {exc}\n")
        return 2
    flasher = Flasher(ser, timeout=args.timeout, retries=args.retries, chunk_size=args.chunk_size)
    try:
        if args.rollback:
            digest, size = flasher.rollback()
            out(f"rolled back: active sha256 {digest} ({size} bytes)\n")
        if raw is not None:
            res = flasher.flash(raw, validate_only=args.dry_run, progress=sys.stderr.isatty())
            out(f"{res.outcome}: sha256 {res.sha256} ({res.size} bytes, {res.chunks} chunks, {res.seconds:.2f}s, "
                f"retransmissions {res.stats.retransmissions})\n")
            if not args.dry_run:
                out(f"read-back: board's active config matches ({res.sha256})\n")
        if args.read_hash:
            digest, size = flasher.read_hash()
            out(f"active sha256 {digest} ({size} bytes)\n")
    except FlashError as exc:
        sys.stderr.write(f"qsv flash: {exc}\n")
        return 1
    finally:
        ser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
