"""Flashing throughput over a socat pty pair (board agent in a thread), per chunk size, plus the wire efficiency of
the frame format on a real UART. ``python -m edge_runtime.bench.flash_speed [--repeats 3]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.config import board_config_path
from edge_runtime.flashing.framing import DATA_OFFSET, Frame, FrameType, encode_frame

CHUNKS = (256, 1024, 4096)


def padded_config(lines: int) -> bytes:
    base = board_config_path("raspberry-pi-4").read_bytes()
    pad = b"".join(b"# padding line %05d to make a large but valid config file\n" % i for i in range(lines))
    return base + b"\n" + pad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baud", type=int, default=115200, help="UART rate for the wire-efficiency estimate")
    args = parser.parse_args(argv)
    import serial

    from edge_runtime.flashing.agent import BoardAgent
    from edge_runtime.flashing.flasher import Flasher
    from edge_runtime.flashing.ptypair import PtyPair
    from edge_runtime.flashing.store import ConfigStore

    out = sys.stdout.write
    configs = [board_config_path("raspberry-pi-4").read_bytes(), padded_config(1000)]
    with PtyPair() as (board_port, host_port), tempfile.TemporaryDirectory() as tmp:
        board = serial.Serial(board_port, timeout=0.02)
        host = serial.Serial(host_port, timeout=0.02)
        agent = BoardAgent(board, ConfigStore(Path(tmp) / "board.yaml"), max_config_bytes=128 * 1024)
        stop = threading.Event()
        thread = threading.Thread(target=agent.serve, args=(stop,), daemon=True)
        thread.start()
        for raw in configs:
            for chunk in CHUNKS:
                times = []
                for i in range(args.repeats):
                    data = raw + b"# run %d %d\n" % (chunk, i)  # always a change: full validate + write + fsync
                    t0 = time.perf_counter()
                    result = Flasher(host, timeout=2.0, retries=3, chunk_size=chunk).flash(data)
                    times.append(time.perf_counter() - t0)
                    if not result.verified:
                        raise RuntimeError("read-back mismatch")
                best = min(times)
                out(f"{len(raw):6d} B, chunk {chunk:4d}: {best * 1e3:7.1f} ms (best of {args.repeats}), "
                    f"{len(raw) / best / 1024:6.1f} KiB/s over the pty\n")
        stop.set()
        thread.join(2)
        board.close()
        host.close()
    raw_rate = args.baud / 10  # 8N1: 10 bits per byte
    for chunk in CHUNKS:
        frame = len(encode_frame(Frame(FrameType.DATA, 1, DATA_OFFSET.pack(0) + bytes(range(1, 256)) * (chunk // 255)
                                       + bytes(range(1, 1 + chunk % 255)))))
        ack = len(encode_frame(Frame(FrameType.ACK, 1, DATA_OFFSET.pack(0))))
        eff = chunk / (frame + ack)
        out(f"chunk {chunk:4d}: {frame} B frame + {ack} B ACK -> efficiency {eff:.3f}, "
            f"{raw_rate * eff / 1024:.2f} KiB/s at {args.baud} baud 8N1 (stop-and-wait)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
