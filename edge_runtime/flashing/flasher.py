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

from tqdm import tqdm

from edge_runtime.config import validate_config_bytes
from edge_runtime.flashing.framing import (
    BEGIN_BODY,
    DATA_OFFSET,
    DELIMITER,
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
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1024
MIN_CHUNK = 16  # the smallest DATA chunk the host falls back to on a noisy line
DEFAULT_DAMAGE_RETRIES = 40  # retransmissions per frame after evidence of line noise (damaged frames, retry NACKs)
SHRINK_AFTER = 3  # damaged attempts of one DATA frame before it is re-sent as a chunk half the size
GROW_AFTER = 16  # DATA frames in a row without a retransmission before the chunk doubles again (up to chunk_size)
DAMAGED_GRACE_S = 0.1  # at most this long a real answer is awaited after a damaged frame / a retry NACK ...
MIN_GRACE_S = 0.01  # ... and at least this long; in between: GRACE_RTTS x the smoothed round-trip time
GRACE_RTTS = 4.0
OUTCOMES = {RESULT_VALIDATED: "validated", RESULT_APPLIED: "applied", RESULT_UNCHANGED: "unchanged"}


class FlashError(RuntimeError):
    """A flashing step that failed; ``code`` is the board's NACK code (None for timeouts / local problems).

    ``board_changed``: False = this call left the board's config as it was; None = unknown (COMMIT / ROLLBACK was
    sent, no answer came back); True = the config was changed (applied) but the read-back failed.
    """

    def __init__(self, message: str, code: NackCode | int | None = None, board_changed: bool | None = False):
        super().__init__(message)
        self.code = code
        self.board_changed = board_changed


class _TooDamaged(Exception):
    """Internal: a DATA frame was damaged ``SHRINK_AFTER`` times; the caller re-sends its bytes in smaller chunks."""


@dataclass
class LinkStats:
    requests: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    damaged_answers: int = 0
    retry_nacks: int = 0
    chunk_shrinks: int = 0
    min_chunk_used: int = 0


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
    """Stop-and-wait requests with retransmission. Two retry budgets per frame: ``retries`` for silence (no answer
    within ``timeout``: the board may be gone, so give up soon) and ``damage_retries`` for evidence of line noise (a
    damaged answer, a BAD_CRC / BAD_FRAME NACK: the board is there, try again at once). DATA chunks adapt to the
    noise: a chunk damaged ``SHRINK_AFTER`` times is re-sent at half the size (down to ``min_chunk``), and the size
    grows back after ``GROW_AFTER`` clean frames."""

    def __init__(self, ser: SerialLike, timeout: float = 2.0, retries: int = 5, chunk_size: int = DEFAULT_CHUNK,
                 damage_retries: int = DEFAULT_DAMAGE_RETRIES, min_chunk: int = MIN_CHUNK,
                 grace_s: float = DAMAGED_GRACE_S):
        if not 1 <= chunk_size <= MAX_BODY - DATA_OFFSET.size:
            raise ValueError(f"chunk size must be in 1..{MAX_BODY - DATA_OFFSET.size}")
        if timeout <= 0 or retries < 0 or damage_retries < 0 or grace_s < 0 or min_chunk < 1:
            raise ValueError("timeout must be > 0; retries, damage_retries and grace_s >= 0; min_chunk >= 1")
        self.ser = ser
        self.timeout = timeout
        self.retries = retries
        self.damage_retries = damage_retries
        self.chunk_size = chunk_size
        self.min_chunk = min(min_chunk, chunk_size)
        self.grace_s = grace_s
        self._rtt_s: float | None = None  # smoothed round-trip time of answered requests
        self.decoder = FrameDecoder()
        self.stats = LinkStats()
        self._seq = random.randrange(0, SEQ_UNKNOWN)  # fresh per session: the agent's repeat cache never matches

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_UNKNOWN
        return self._seq

    def request(self, ftype: FrameType, body: bytes = b"", shrink_after: int | None = None) -> bytes:
        """Send one request and return the ACK body; retransmits on timeout / damage; raises FlashError."""
        seq = self._next_seq()
        what = Frame(ftype, seq).type_name()
        # a second trailing delimiter ends the frame even if noise damages the first (the board answers BAD_FRAME at
        # once instead of holding the fragment until our retransmission)
        wire = encode_frame(Frame(ftype, seq, body)) + DELIMITER
        self.stats.requests += 1
        silent = damaged = 0
        while True:
            if silent or damaged:
                self.stats.retransmissions += 1
                log.debug("%s seq %d: retransmission (%d unanswered, %d damaged)", what, seq, silent, damaged)
            sent = time.monotonic()
            self.ser.write(wire)
            self.ser.flush()
            answer, noise = self._await(seq)
            if answer is not None:
                rtt = time.monotonic() - sent
                self._rtt_s = rtt if self._rtt_s is None else 0.8 * self._rtt_s + 0.2 * rtt
            if answer is not None and answer.type == FrameType.ACK:
                return answer.body
            if answer is not None:
                code, message = parse_nack(answer.body)
                if code not in RETRYABLE_NACKS:
                    name = code.name if isinstance(code, NackCode) else str(code)
                    raise FlashError(f"board refused {what}: {name}: {message}", code)
                self.stats.retry_nacks += 1
                damaged += 1
            elif noise:
                damaged += 1
            else:
                silent += 1
            if silent > self.retries or damaged > self.damage_retries:
                hint = ("is the board agent running on this port?" if not damaged else
                        "the line is too noisy (try a lower --baud, or more --damage-retries)")
                raise FlashError(f"{what}: no usable answer after {silent + damaged} attempts "
                                 f"({silent} unanswered, {damaged} damaged by line noise); {hint}")
            if shrink_after is not None and damaged >= shrink_after:
                raise _TooDamaged

    def grace(self) -> float:
        """How long to wait for a real answer once line noise was seen: a few smoothed round-trip times (a slow
        UART needs longer than a pty), between MIN_GRACE_S and ``grace_s``."""
        if self._rtt_s is None:
            return min(self.timeout, self.grace_s)
        return min(self.timeout, self.grace_s, max(MIN_GRACE_S, GRACE_RTTS * self._rtt_s))

    def _await(self, seq: int) -> tuple[Frame | None, bool]:
        """The answer to ``seq`` (or None on timeout), and whether line noise was seen meanwhile (damaged frames,
        NACKs for unreadable frames): then only a short grace period is waited for a real answer."""
        deadline = time.monotonic() + self.timeout
        noise = False

        def saw_noise() -> None:
            nonlocal noise, deadline
            if not noise:  # the first sign of noise shortens the wait once; more noise does not extend it
                noise = True
                deadline = min(deadline, time.monotonic() + self.grace())

        while time.monotonic() < deadline:
            for item in self.decoder.feed(read_available(self.ser)):
                if isinstance(item, FrameError):
                    # most likely our answer, damaged (the board answers each frame once): retransmit soon
                    self.stats.damaged_answers += 1
                    log.debug("damaged answer: %s", item)
                    saw_noise()
                    continue
                if item.type not in (FrameType.ACK, FrameType.NACK):
                    continue  # e.g. our own frames on a loopback
                if item.seq == seq:
                    return item, noise
                if item.seq == SEQ_UNKNOWN and item.type == FrameType.NACK:
                    code, message = parse_nack(item.body)
                    if code in RETRYABLE_NACKS:
                        # the board saw a damaged frame: ours, or a fragment of older traffic that our frame's leading
                        # delimiter flushed. Give a real answer a short grace period, then retransmit.
                        log.debug("board reports a damaged frame (%s)", message)
                        self.stats.retry_nacks += 1
                        saw_noise()
                    continue
                log.debug("ignoring stale answer seq %d (waiting for %d)", item.seq, seq)
        if not noise:
            self.stats.timeouts += 1
        return None, noise

    # -------------------------------------------------------------------------------------------------- operations
    def hello(self) -> dict:
        return json.loads(self.request(FrameType.HELLO).decode("utf-8"))

    def read_hash(self) -> tuple[str, int]:
        digest, size = HASH_BODY.unpack(self.request(FrameType.READ_HASH))
        return digest.hex(), size

    def rollback(self) -> tuple[str, int]:
        try:
            body = self.request(FrameType.ROLLBACK)
        except FlashError as exc:
            if exc.code is None:  # no answer: the board may have rolled back
                exc.board_changed = None
                exc.args = (f"{exc}; the board may or may not have rolled back: check with --read-hash",)
            raise
        digest, size = HASH_BODY.unpack(body)
        return digest.hex(), size

    def _send_data(self, raw: bytes, progress: bool) -> int:
        """DATA frames until the board holds all of ``raw``; returns the number of frames that got through."""
        size, clean, offset, frames = self.chunk_size, 0, 0, 0
        self.stats.min_chunk_used = size
        with tqdm(total=len(raw), desc="flash", unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
            while offset < len(raw):
                chunk = raw[offset : offset + size]
                before = self.stats.retransmissions
                try:
                    answer = self.request(FrameType.DATA, DATA_OFFSET.pack(offset) + chunk,
                                          shrink_after=SHRINK_AFTER if size > self.min_chunk else None)
                except _TooDamaged:
                    size = max(self.min_chunk, size // 2)
                    clean = 0
                    self.stats.chunk_shrinks += 1
                    self.stats.min_chunk_used = min(self.stats.min_chunk_used, size)
                    log.info("line noise: DATA chunks shrink to %d bytes", size)
                    continue
                frames += 1
                (received,) = DATA_OFFSET.unpack(answer)
                # more than this chunk: an earlier, larger chunk at this offset had landed (its ACK was lost)
                if not offset + len(chunk) <= received <= len(raw):
                    raise FlashError(f"board holds {received} bytes after chunk at {offset}, expected "
                                     f"{offset + len(chunk)}")
                bar.update(received - offset)
                offset = received
                clean = clean + 1 if self.stats.retransmissions == before else 0
                if clean >= GROW_AFTER and size < self.chunk_size:
                    size, clean = min(self.chunk_size, size * 2), 0
        return frames

    def flash(self, raw: bytes, validate_only: bool = False, progress: bool = False) -> FlashResult:
        """Transfer ``raw`` and commit it (or have the board only validate it); verifies by read-back.

        On a FlashError, ``board_changed`` says whether the board's config may have changed (see FlashError)."""
        start = time.monotonic()
        digest = hashlib.sha256(raw).digest()
        flags = FLAG_VALIDATE_ONLY if validate_only else 0
        try:
            self.request(FrameType.BEGIN, BEGIN_BODY.pack(len(raw), flags, digest))
            frames = self._send_data(raw, progress)
        except FlashError as exc:
            self._abort_quietly()
            exc.args = (f"{exc}; nothing was committed, the board keeps its config",)
            raise
        try:
            board_digest, size, outcome = RESULT_BODY.unpack(self.request(FrameType.COMMIT))
        except FlashError as exc:
            self._abort_quietly()
            if exc.code is None and not validate_only:  # the COMMIT may have been executed, its answer lost
                exc.board_changed = None
                exc.args = (f"{exc}; the board may or may not have applied the config: check with --read-hash",)
            raise
        if board_digest != digest or size != len(raw):
            raise FlashError(f"board reports sha256 {board_digest.hex()} ({size} B) for what it received, "
                             f"local file is {digest.hex()} ({len(raw)} B)", board_changed=None)
        if validate_only:
            verified = True
        else:
            changed = outcome == RESULT_APPLIED
            try:
                active_hex, _ = self.read_hash()
            except FlashError as exc:
                exc.board_changed = changed
                exc.args = (f"read-back failed after the board reported the config {OUTCOMES.get(outcome, outcome)} "
                            f"(sha256 {digest.hex()}): {exc}",)
                raise
            verified = active_hex == digest.hex()
            if not verified:
                raise FlashError(f"read-back mismatch: board's active config is {active_hex}, sent {digest.hex()}",
                                 board_changed=None)
        return FlashResult(digest.hex(), size, OUTCOMES.get(outcome, str(outcome)), verified, frames,
                           time.monotonic() - start, self.stats)

    def _abort_quietly(self) -> None:
        saved = self.retries, self.damage_retries
        try:
            self.retries, self.damage_retries = 0, 2
            self.request(FrameType.ABORT)
        except FlashError:
            pass
        finally:
            self.retries, self.damage_retries = saved


# ------------------------------------------------------------------------------------------------------------------ CLI
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qsv flash", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=cliargs.non_empty, help="serial device or pyserial URL")
    p.add_argument("config", nargs="?", type=cliargs.readable_file, help="board config YAML to flash")
    p.add_argument("--dry-run", action="store_true", help="validate locally and on the board; write nothing")
    p.add_argument("--local-only", action="store_true", help="with --dry-run: validate locally, do not open PORT")
    p.add_argument("--read-hash", action="store_true", help="print the SHA-256 of the config active on the board")
    p.add_argument("--rollback", action="store_true", help="make the board's previous config active again")
    p.add_argument("--baud", type=cliargs.positive_int, default=115200)
    p.add_argument("--timeout", type=cliargs.float_range(0.0, 3600.0, low_open=True), default=2.0,
                   help="seconds to wait for each answer")
    p.add_argument("--retries", type=cliargs.non_negative_int, default=5,
                   help="retransmissions per frame when the board does not answer")
    p.add_argument("--damage-retries", type=cliargs.non_negative_int, default=DEFAULT_DAMAGE_RETRIES,
                   help="retransmissions per frame when line noise damages frames (DATA chunks also shrink)")
    p.add_argument("--chunk-size", type=cliargs.int_range(1, MAX_BODY - DATA_OFFSET.size), default=DEFAULT_CHUNK,
                   help="bytes per DATA frame (the largest; smaller on a noisy line)")
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
    except (serial.SerialException, ValueError, OSError) as exc:
        sys.stderr.write(f"qsv flash: cannot open {args.port}: {exc}\n")
        return 2
    flasher = Flasher(ser, timeout=args.timeout, retries=args.retries, chunk_size=args.chunk_size,
                      damage_retries=args.damage_retries)
    try:
        if args.rollback:
            digest, size = flasher.rollback()
            out(f"rolled back: active sha256 {digest} ({size} bytes)\n")
        if raw is not None:
            res = flasher.flash(raw, validate_only=args.dry_run, progress=sys.stderr.isatty())
            out(f"{res.outcome}: sha256 {res.sha256} ({res.size} bytes, {res.chunks} chunks, {res.seconds:.2f}s, "
                f"retransmissions {res.stats.retransmissions}"
                + (f", line noise: chunks down to {res.stats.min_chunk_used} B" if res.stats.chunk_shrinks else "")
                + ")\n")
            if not args.dry_run:
                out(f"read-back: board's active config matches ({res.sha256})\n")
        if args.read_hash:
            digest, size = flasher.read_hash()
            out(f"active sha256 {digest} ({size} bytes)\n")
    except FlashError as exc:
        sys.stderr.write(f"qsv flash: {exc}\n")
        return 1
    except (serial.SerialException, OSError) as exc:  # the port went away mid-transfer
        sys.stderr.write(f"qsv flash: serial port {args.port} failed: {exc}\n")
        return 1
    finally:
        ser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
