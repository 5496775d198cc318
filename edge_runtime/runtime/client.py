"""A client of the board runtime's request socket (edge_runtime.runtime.api): what a local application, the demo
and the tests use to ask ``qsv edge`` for a generation."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.engine import Generation
from edge_runtime.runtime.board import round_stat_from_event


class EdgeClientError(RuntimeError):
    """The runtime answered with an error event (``code`` as it sent it) or closed the connection."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class EdgeClient:
    """One connection to a running ``qsv edge``; requests are answered in order."""

    def __init__(self, path: str | Path, timeout_s: float | None = 600.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: dict[str, Any]) -> None:
        self._file.write(json.dumps(request).encode() + b"\n")
        self._file.flush()

    def _receive(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise EdgeClientError("the runtime closed the connection")
        event = json.loads(line)
        if event.get("event") == "error":
            raise EdgeClientError(f"{event.get('code')}: {event.get('message')}", str(event.get("code", "")))
        return event

    def health(self) -> dict[str, Any]:
        self._send({"op": "health"})
        return self._receive()

    def stream(self, prompt: str | None = None, prompt_ids: Sequence[int] | None = None, max_new_tokens: int = 64,
               seed: int | None = None, pipeline: str | None = None, request_id: str = "") -> Iterator[dict]:
        """The runtime's events for one generation: ``round`` events, then the ``done`` event."""
        request: dict[str, Any] = {"op": "generate", "id": request_id, "max_new_tokens": max_new_tokens}
        if prompt is not None:
            request["prompt"] = prompt
        if prompt_ids is not None:
            request["prompt_ids"] = [int(t) for t in prompt_ids]
        if seed is not None:
            request["seed"] = seed
        if pipeline is not None:
            request["pipeline"] = pipeline
        self._send(request)
        while True:
            event = self._receive()
            yield event
            if event.get("event") == "done":
                return


def generation_of(prompt_ids: Sequence[int], events: Sequence[dict]) -> Generation:
    """The board's Generation rebuilt from its streamed events (rounds and the closing ``done``)."""
    done = events[-1]
    if done.get("event") != "done":
        raise EdgeClientError("the event stream did not end with 'done'")
    run = Generation([int(t) for t in prompt_ids], list(done["tokens"]),
                     [round_stat_from_event(e) for e in events if e.get("event") == "round"],
                     done["prefill_ms"] / 1e3, done["decode_ms"] / 1e3, done.get("precision", ""),
                     bool(done.get("stopped_by_eos")))
    return run
