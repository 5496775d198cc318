"""The board runtime's request interface: JSON lines over a local (Unix domain) socket.

A client connects, writes one JSON object per line and reads JSON lines back (docs/EDGE.md has the full reference):

- ``{"op": "generate", "id": "r1", "prompt": "text" | "prompt_ids": [..], "max_new_tokens": 64, "seed": 0,
  "pipeline": "auto" | "off" | "always"}`` (all but the prompt optional)
  → one ``{"event": "round", "id", "text", ...round stats}`` per round (``text`` is the new text of that round),
  then ``{"event": "done", "id", "text", "tokens", ...summary}``; ``"op"`` may be left out when ``prompt`` or
  ``prompt_ids`` is given;
- ``{"op": "health"}`` → ``{"event": "health", "status": "ok", ...}``.

Anything wrong with a request is answered with ``{"event": "error", "id", "code", "message"}`` and the connection
stays open; a line over 1 MiB closes it. Generations run one at a time; other clients wait their turn.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any

from edge_runtime.engine import Generation, RoundStat
from edge_runtime.runtime.board import (
    BoardRuntime,
    GenerationRequest,
    RequestError,
    TextStream,
    round_event,
    summary_event,
)
from edge_runtime.transport.remote import RemoteVerifierError

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
_REQUEST_KEYS = {"op", "id", "prompt", "prompt_ids", "max_new_tokens", "seed", "pipeline"}


def parse_request(line: bytes) -> tuple[str, GenerationRequest | None, str]:
    """(op, request for "generate" else None, id) from one request line; raises RequestError."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError("a request is a JSON object")
    rid = obj.get("id", "")
    if not isinstance(rid, str | int) or isinstance(rid, bool):
        raise RequestError("id must be a string or an integer")
    rid = str(rid)
    unknown = set(obj) - _REQUEST_KEYS
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    op = obj.get("op", "generate" if ("prompt" in obj or "prompt_ids" in obj) else None)
    if op == "health":
        return "health", None, rid
    if op != "generate":
        raise RequestError(f"unknown op {op!r} (generate | health)")
    prompt, ids = obj.get("prompt"), obj.get("prompt_ids")
    if prompt is not None and not isinstance(prompt, str):
        raise RequestError("prompt must be a string")
    if ids is not None and (not isinstance(ids, list) or not all(type(t) is int for t in ids)):
        raise RequestError("prompt_ids must be a list of integers")
    max_new, seed = obj.get("max_new_tokens", 64), obj.get("seed")
    if type(max_new) is not int:
        raise RequestError("max_new_tokens must be an integer")
    if seed is not None and type(seed) is not int:
        raise RequestError("seed must be an integer")
    pipeline = obj.get("pipeline")
    if pipeline is not None and not isinstance(pipeline, str):
        raise RequestError("pipeline must be a string")
    request = GenerationRequest(rid, prompt, tuple(ids) if ids is not None else None, max_new, seed, pipeline)
    return "generate", request, rid


class _Handler(socketserver.StreamRequestHandler):
    server: RuntimeServer

    def _send(self, obj: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        self.wfile.flush()

    def handle(self) -> None:
        while True:
            try:
                line = self.rfile.readline(MAX_LINE + 1)
            except OSError:
                return
            if not line:
                return
            if len(line) > MAX_LINE:
                self._send({"event": "error", "id": "", "code": "too_large", "message": "request over 1 MiB"})
                return
            if not line.strip():
                continue
            try:
                self._serve(line)
            except (BrokenPipeError, ConnectionResetError):
                return

    def _serve(self, line: bytes) -> None:
        rid = ""
        try:
            op, request, rid = parse_request(line)
            runtime = self.server.runtime
            if op == "health":
                self._send({"event": "health", "id": rid, **runtime.health()})
                return
            assert request is not None
            self._generate(runtime, request)
        except RequestError as exc:
            self._send({"event": "error", "id": rid, "code": exc.code, "message": str(exc)})
        except RemoteVerifierError as exc:
            self._send({"event": "error", "id": rid, "code": "verifier", "message": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - one request failing must not take the runtime down
            log.exception("request %s failed", rid)
            self._send({"event": "error", "id": rid, "code": "internal", "message": f"{type(exc).__name__}: {exc}"})

    def _generate(self, runtime: BoardRuntime, request: GenerationRequest) -> None:
        stream = TextStream(runtime.decode)

        def on_round(run: Generation, stat: RoundStat) -> None:
            self._send({"event": "round", "id": request.id, "text": stream.delta(run.tokens), **round_event(stat)})

        run = runtime.generate(request, on_round)
        self._send({"event": "done", "id": request.id, "text": runtime.decode(run.tokens), **summary_event(run)})


class RuntimeServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves a BoardRuntime on a Unix socket; ``runtime`` may be swapped (config reload) between requests."""

    daemon_threads = True

    def __init__(self, path: Path, runtime: BoardRuntime) -> None:
        self.path = Path(path)
        self.runtime = runtime
        _claim_socket_path(self.path)
        super().__init__(str(self.path), _Handler)
        os.chmod(self.path, 0o660)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="qsv-edge-api", daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        super().server_close()
        try:
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        except OSError:
            pass


class SocketInUseError(OSError):
    """Another runtime is listening on the socket path."""


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a killed runtime; refuse a live one or a path that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUseError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another runtime is listening on {path}")
