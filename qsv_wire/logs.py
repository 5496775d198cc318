"""One logging setup for every QSV command (``qsv <command>``, the benchmarks and the experiment scripts).

    parser = argparse.ArgumentParser(prog="qsv flash")
    add_logging_args(parser)                  # -v/--verbose, --log-level LEVEL (+ --log-json for services)
    args = parser.parse_args(argv)
    setup_logging(args)

Level: ``--log-level LEVEL`` when given, else the command's default (WARNING for tools, INFO for services) lowered
one step per ``-v`` (``-v`` INFO, ``-vv`` DEBUG for a tool). Records go to stderr as
``time LEVEL logger: message``, or with ``--log-json`` as one JSON object per line with the keys ``time`` (ISO 8601,
UTC), ``level``, ``logger``, ``message`` (and ``exc`` when an exception is attached).

Imports only the standard library, so ``edge_runtime`` and ``cloud_verifier`` commands can use it before (and
without) loading torch or a model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ exc when present)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test capture replaces it between calls)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def _level(text: str) -> str:
    name = text.upper()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(f"invalid level {text!r} (choose from {', '.join(LEVELS)})")
    return name


def add_logging_args(parser: argparse.ArgumentParser, *, default: str = "WARNING", json_lines: bool = False) -> None:
    """``-v/--verbose`` (repeatable), ``--log-level LEVEL`` and, for services, ``--log-json``."""
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help=f"more log output, one level below {default} per -v")
    group.add_argument("--log-level", type=_level, metavar="LEVEL",
                       help=f"log level ({', '.join(LEVELS)}; default {default}); overrides -v")
    if json_lines:
        group.add_argument("--log-json", action="store_true", help="logs as one JSON object per line")
    parser.set_defaults(log_default=default)


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "log_level", None):
        return logging.getLevelName(args.log_level)
    default = logging.getLevelName(getattr(args, "log_default", "WARNING"))
    return max(logging.DEBUG, default - 10 * int(getattr(args, "verbose", 0) or 0))


def setup_logging(args: argparse.Namespace | None = None, *, level: int | str | None = None,
                  json_lines: bool | None = None) -> None:
    """Route the root logger to stderr at the level ``args`` asks for (or ``level``); idempotent. Handlers that
    others installed (a test harness) are left alone; the one this function installed before is replaced."""
    if level is None:
        level = log_level(args) if args is not None else logging.WARNING
    if json_lines is None:
        json_lines = bool(getattr(args, "log_json", False))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JsonLineFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
