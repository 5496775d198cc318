"""Board agent (``qsv board-agent``): receives configs over a serial line and applies them safely.

Per request frame it answers exactly one ACK or NACK carrying the request's sequence number. A transfer is
BEGIN (size, flags, sha256) → DATA chunks at increasing offsets → COMMIT; the agent checks size and hash, validates
against the schema, writes atomically (ConfigStore), answers with the hash of what it applied, then restarts the edge
runtime. Damaged frames get NACK BAD_CRC / BAD_FRAME so the host retransmits; retransmitted DATA is recognised by
its offset, and a retransmitted COMMIT/ROLLBACK gets the cached answer instead of being executed twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime import __version__
from edge_runtime.config import validate_config_bytes
from edge_runtime.flashing.framing import (
    BEGIN_BODY,
    DATA_OFFSET,
    DELIMITER,
    FLAG_VALIDATE_ONLY,
    HASH_BODY,
    MAX_BODY,
    PROTOCOL_VERSION,
    RESULT_APPLIED,
    RESULT_BODY,
    RESULT_UNCHANGED,
    RESULT_VALIDATED,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    NackCode,
    SerialLike,
    encode_frame,
    nack_body,
    read_available,
)
from edge_runtime.flashing.store import FAULT_STEPS, ConfigStore, StoreError
from edge_runtime.flashing.supervisor import RuntimeSupervisor, build_command
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger(__name__)

DEFAULT_MAX_CONFIG_BYTES = 64 * 1024


@dataclass
class _Transfer:
    total: int
    digest: bytes
    validate_only: bool
    data: bytearray


class BoardAgent:
    def __init__(
        self,
        ser: SerialLike,
        store: ConfigStore,
        supervisor: RuntimeSupervisor | None = None,
        max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    ):
        self.ser = ser
        self.store = store
        self.supervisor = supervisor or RuntimeSupervisor(None)
        self.max_config_bytes = max_config_bytes
        self.decoder = FrameDecoder()
        self.transfer: _Transfer | None = None
        self._answered: tuple[bytes, Frame] | None = None  # (request key, answer) of the last COMMIT/ROLLBACK
        self.stats = {"frames": 0, "bad_frames": 0, "applied": 0, "rejected": 0}

    # ----------------------------------------------------------------------------------------------------- handlers
    def _ack(self, req: Frame, body: bytes = b"") -> Frame:
        return Frame(FrameType.ACK, req.seq, body)

    def _nack(self, req: Frame, code: NackCode, message: str) -> Frame:
        log.warning("NACK %s seq %d: %s: %s", req.type_name(), req.seq, code.name, message)
        return Frame(FrameType.NACK, req.seq, nack_body(code, message))

    def _hello(self, req: Frame) -> Frame:
        info = {
            "agent": "qsv board-agent",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "max_config_bytes": self.max_config_bytes,
            "max_chunk": MAX_BODY - DATA_OFFSET.size,
            "config_path": str(self.store.path),
        }
        return self._ack(req, json.dumps(info).encode())

    def _begin(self, req: Frame) -> Frame:
        if len(req.body) != BEGIN_BODY.size:
            return self._nack(req, NackCode.BAD_REQUEST, f"BEGIN body must be {BEGIN_BODY.size} bytes")
        total, flags, digest = BEGIN_BODY.unpack(req.body)
        self.transfer = None
        if total > self.max_config_bytes:
            return self._nack(req, NackCode.TOO_LARGE, f"config of {total} bytes exceeds {self.max_config_bytes}")
        if total == 0:
            return self._nack(req, NackCode.BAD_REQUEST, "empty config")
        self.transfer = _Transfer(total, digest, bool(flags & FLAG_VALIDATE_ONLY), bytearray())
        log.info("transfer begins: %d bytes, sha256 %s%s", total, digest.hex()[:16],
                 " (validate only)" if flags & FLAG_VALIDATE_ONLY else "")
        return self._ack(req)

    def _data(self, req: Frame) -> Frame:
        t = self.transfer
        if t is None:
            return self._nack(req, NackCode.NO_TRANSFER, "DATA without BEGIN")
        if len(req.body) < DATA_OFFSET.size:
            return self._nack(req, NackCode.BAD_REQUEST, "DATA body shorter than its offset field")
        (offset,) = DATA_OFFSET.unpack_from(req.body)
        chunk = req.body[DATA_OFFSET.size :]
        received = len(t.data)
        if offset > received:
            return self._nack(req, NackCode.OUT_OF_ORDER, f"DATA at offset {offset}, expected {received}")
        # offset < received: a retransmission (the ACK was lost), possibly re-chunked smaller by a host that adapts
        # to line noise; the bytes it repeats must equal those held, only the part beyond them is appended
        overlap = min(received - offset, len(chunk))
        if t.data[offset : offset + overlap] != chunk[:overlap]:
            return self._nack(req, NackCode.OUT_OF_ORDER,
                              f"DATA at offset {offset} differs from the bytes already received (expected {received})")
        new = chunk[overlap:]
        if received + len(new) > t.total:
            self.transfer = None
            return self._nack(req, NackCode.TOO_LARGE, f"DATA beyond the announced size of {t.total} bytes")
        t.data += new
        return self._ack(req, DATA_OFFSET.pack(len(t.data)))

    def _commit(self, req: Frame) -> Frame:
        t, self.transfer = self.transfer, None
        if t is None:
            return self._nack(req, NackCode.NO_TRANSFER, "COMMIT without BEGIN")
        if len(t.data) != t.total:
            return self._nack(req, NackCode.OUT_OF_ORDER, f"COMMIT after {len(t.data)} of {t.total} bytes")
        raw = bytes(t.data)
        digest = hashlib.sha256(raw).digest()
        if digest != t.digest:
            return self._nack(req, NackCode.HASH_MISMATCH,
                              f"received bytes hash to {digest.hex()}, BEGIN announced {t.digest.hex()}")
        issues = validate_config_bytes(raw, self.store.path.name)
        if issues:
            self.stats["rejected"] += 1
            return self._nack(req, NackCode.INVALID_CONFIG, "\n".join(str(i) for i in issues))
        if t.validate_only:
            log.info("config %s validated (not applied)", digest.hex()[:16])
            return self._ack(req, RESULT_BODY.pack(digest, len(raw), RESULT_VALIDATED))
        if self.store.active() == raw:
            log.info("config %s is already active", digest.hex()[:16])
            return self._ack(req, RESULT_BODY.pack(digest, len(raw), RESULT_UNCHANGED))
        try:
            ident = self.store.write(raw)
        except StoreError as exc:
            return self._nack(req, NackCode.WRITE_FAILED, f"{exc}; previous config stays active")
        self.stats["applied"] += 1
        log.info("config %s applied to %s", ident.hex[:16], self.store.path)
        self.supervisor.request_restart()
        return self._ack(req, RESULT_BODY.pack(ident.digest, ident.size, RESULT_APPLIED))

    def _read_hash(self, req: Frame) -> Frame:
        ident = self.store.active_identity()
        if ident is None:
            return self._nack(req, NackCode.NO_CONFIG, f"no active config at {self.store.path}")
        return self._ack(req, HASH_BODY.pack(ident.digest, ident.size))

    def _rollback(self, req: Frame) -> Frame:
        self.transfer = None
        try:
            ident = self.store.rollback()
        except StoreError as exc:
            code = NackCode.NO_PREVIOUS if self.store.previous() is None else NackCode.WRITE_FAILED
            return self._nack(req, code, str(exc))
        log.info("rolled back to %s", ident.hex[:16])
        self.supervisor.request_restart()
        return self._ack(req, HASH_BODY.pack(ident.digest, ident.size))

    def handle(self, req: Frame) -> Frame:
        """The answer to one well-formed request frame."""
        key = bytes([req.type]) + req.seq.to_bytes(2, "big") + req.body
        if req.type in (FrameType.COMMIT, FrameType.ROLLBACK) and self._answered and self._answered[0] == key:
            log.info("repeated %s seq %d: answering again without executing", req.type_name(), req.seq)
            return self._answered[1]
        handlers = {
            FrameType.HELLO: self._hello,
            FrameType.BEGIN: self._begin,
            FrameType.DATA: self._data,
            FrameType.COMMIT: self._commit,
            FrameType.READ_HASH: self._read_hash,
            FrameType.ROLLBACK: self._rollback,
        }
        if req.type == FrameType.ABORT:
            self.transfer = None
            return self._ack(req)
        handler = handlers.get(req.type)  # type: ignore[call-overload]
        if handler is None:
            return self._nack(req, NackCode.UNKNOWN_TYPE, f"unknown frame type 0x{req.type:02x}")
        answer = handler(req)
        if req.type in (FrameType.COMMIT, FrameType.ROLLBACK):
            self._answered = (key, answer)
        return answer

    # ------------------------------------------------------------------------------------------------------- serving
    def _send(self, frame: Frame) -> None:
        # a second trailing delimiter: if line noise damages the first, the frame still ends here (the host sees a
        # damaged frame at once instead of waiting for its timeout)
        self.ser.write(encode_frame(frame) + DELIMITER)
        self.ser.flush()

    def step(self) -> int:
        """Read what has arrived (waits up to the port timeout), answer every complete frame; returns frames seen."""
        data = read_available(self.ser)
        seen = 0
        for item in self.decoder.feed(data):
            seen += 1
            if isinstance(item, FrameError):
                self.stats["bad_frames"] += 1
                log.warning("bad frame: %s", item)
                self._send(Frame(FrameType.NACK, item.seq, nack_body(item.code, str(item))))
            else:
                self.stats["frames"] += 1
                self._send(self.handle(item))
        self.supervisor.poll()
        return seen

    def serve(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        if self.store.active() is not None:  # without a config the runtime starts with the first applied one
            self.supervisor.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.supervisor.stop()


# ------------------------------------------------------------------------------------------------------------------ CLI
def _runtime_cmd(text: str) -> str:
    """argparse type of ``--runtime-cmd``: a command line whose program exists (checked now, not at the first
    config); ``{config}`` stays a placeholder."""
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise cliargs.Error(f"cannot split {text!r}: {exc}") from None
    if not parts:
        raise cliargs.Error("empty command")
    program = parts[0]
    found = shutil.which(program) if os.sep not in program else (program if os.access(program, os.X_OK) else None)
    if found is None or os.path.isdir(found):
        raise cliargs.Error(f"{program!r} is not an executable program (PATH searched)")
    return text


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qsv board-agent", description=__doc__.splitlines()[0])
    p.add_argument("port", nargs="?", type=cliargs.non_empty,
                   help="serial port or pyserial URL (e.g. /dev/ttyGS0, /dev/ttyAMA0)")
    p.add_argument("--config", type=cliargs.output_file, default=Path("/etc/qsv/board.yaml"), metavar="PATH",
                   help="the active config file (previous one kept as <path>.prev)")
    p.add_argument("--baud", type=cliargs.positive_int, default=115200)
    p.add_argument("--runtime-cmd", type=_runtime_cmd,
                   help="edge runtime command to supervise, e.g. 'qsv edge --config {config}'; "
                        "{config} is replaced by the config path")
    p.add_argument("--stop-timeout", type=cliargs.non_negative_float, default=5.0,
                   help="seconds between SIGTERM and SIGKILL on restart")
    p.add_argument("--max-config-bytes", type=cliargs.int_range(1, 2**32 - 1), default=DEFAULT_MAX_CONFIG_BYTES)
    p.add_argument("--rollback", action="store_true", help="roll back to the previous config locally and exit")
    # tests: pause --fault-delay seconds at one step of a config write / rollback (store.FAULT_STEPS)
    p.add_argument("--fault-delay", type=cliargs.non_negative_float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--fault-step", choices=FAULT_STEPS, default="rotated", help=argparse.SUPPRESS)
    add_logging_args(p, default="INFO", json_lines=True)
    args = p.parse_args(argv)
    if not args.rollback and not args.port:
        p.error("a serial port is required (or --rollback)")
    args.error = p.error
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args)
    try:
        store = ConfigStore(args.config, fault_delay_s=args.fault_delay, fault_step=args.fault_step)
        store.recover()
    except OSError as exc:
        args.error(f"--config {args.config}: {exc.strerror or exc}")
    if args.rollback:
        try:
            ident = store.rollback()
        except StoreError as exc:
            log.error("%s", exc)
            return 1
        sys.stdout.write(f"rolled back: active sha256 {ident.hex} ({ident.size} bytes)\n")
        return 0
    import serial  # pyserial; imported here so the library part has no hard dependency on it

    try:
        ser = serial.serial_for_url(args.port, baudrate=args.baud, timeout=0.05)
    except (serial.SerialException, ValueError, OSError) as exc:
        args.error(f"cannot open {args.port}: {exc}")
    command = build_command(args.runtime_cmd, args.config) if args.runtime_cmd else None
    supervisor = RuntimeSupervisor(command, stop_timeout_s=args.stop_timeout)
    agent = BoardAgent(ser, store, supervisor, max_config_bytes=args.max_config_bytes)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ident = store.active_identity()
    log.info("agent ready on %s; active config %s", args.port, ident.hex if ident else "none")
    try:
        agent.serve(stop)
    except serial.SerialException as exc:  # e.g. the USB gadget port went away; systemd starts the agent again
        log.error("serial port %s failed: %s", args.port, exc)
        return 1
    finally:
        ser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
