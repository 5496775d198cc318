"""argparse ``type=`` validators shared by the ``qsv`` commands: bad input ends in one ``usage`` + ``error:`` line and
exit status 2 before anything is loaded, never in a traceback.

    p.add_argument("--max-new-tokens", type=positive_int)
    p.add_argument("--timeout", type=positive_float)
    p.add_argument("--port", type=port)
    p.add_argument("--config", type=readable_file)
    p.add_argument("--out", type=output_dir)

Each validator raises ``argparse.ArgumentTypeError`` (argparse turns it into ``argument --x: message``).
``check(parser, condition, message)`` is the same for checks that span several arguments.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

Error = argparse.ArgumentTypeError


def _int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except (ValueError, AttributeError):
        raise Error(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (ValueError, TypeError):
        raise Error(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise Error(f"not a finite number: {text!r}")
    return value


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in [low, high] (either bound optional)."""

    def parse(text: str) -> int:
        value = _int(text)
        if low is not None and value < low or high is not None and value > high:
            if high is None:
                raise Error(f"must be >= {low}, got {value}")
            if low is None:
                raise Error(f"must be <= {high}, got {value}")
            raise Error(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high] ((low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        value = _float(text)
        if low is not None and (value <= low if low_open else value < low):
            raise Error(f"must be {'>' if low_open else '>='} {low:g}, got {text}")
        if high is not None and value > high:
            raise Error(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0.0, low_open=True)
non_negative_float = float_range(0.0)
seed = int_range(0, 2**63 - 1)
port = int_range(1, 65535)  # a TCP port to listen on / connect to
port_or_zero = int_range(0, 65535)  # 0: any free port


def non_empty(text: str) -> str:
    if not text.strip():
        raise Error("must not be empty")
    return text


def _path(text: str) -> Path:
    if not text.strip():
        raise Error("empty path")
    if "\0" in text:
        raise Error("path contains a NUL byte")
    return Path(text)


def readable_file(text: str) -> Path:
    """An existing, readable regular file (or device / FIFO: anything that is not a directory)."""
    path = _path(text)
    if not path.exists():
        raise Error(f"no such file: {text}")
    if path.is_dir():
        raise Error(f"is a directory, expected a file: {text}")
    if not os.access(path, os.R_OK):
        raise Error(f"cannot read {text}: permission denied")
    return path


def existing_dir(text: str) -> Path:
    path = _path(text)
    if not path.exists():
        raise Error(f"no such directory: {text}")
    if not path.is_dir():
        raise Error(f"not a directory: {text}")
    return path


def _creatable(path: Path, text: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable directory."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Error(f"cannot create {text}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Error(f"cannot create {text}: {parent} is not writable")


def output_dir(text: str) -> Path:
    """A directory to write into: existing and writable, or creatable."""
    path = _path(text)
    if path.exists():
        if not path.is_dir():
            raise Error(f"not a directory: {text}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise Error(f"directory not writable: {text}")
    else:
        _creatable(path, text)
    return path


def output_file(text: str) -> Path:
    """A file to (over)write: not a directory; its directory exists or can be created."""
    path = _path(text)
    if path.is_dir():
        raise Error(f"is a directory, expected a file: {text}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise Error(f"file not writable: {text}")
    else:
        _creatable(path, text)
    return path


def comma_list(choices: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    """A non-empty comma-separated list; with ``choices``, every item must be one of them."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise Error("expected a comma-separated list, got nothing")
        if choices is not None:
            unknown = [item for item in items if item not in choices]
            if unknown:
                raise Error(f"unknown {', '.join(map(repr, unknown))}; choose from {', '.join(choices)}")
        return items

    parse.__name__ = "list"
    return parse


def check(parser: argparse.ArgumentParser, ok: object, message: str) -> None:
    """``parser.error(message)`` (usage, one error line, exit 2) unless ``ok``."""
    if not ok:
        fail(parser, message)


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)


def client_id(text: str) -> str:
    """A device / worker / verifier id (an MQTT topic level and username): 1..64 chars of [A-Za-z0-9_.-]."""
    from qsv_wire.topics import check_client_id

    try:
        return check_client_id(text)
    except ValueError as exc:
        raise Error(str(exc)) from None


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def torch_device(text: str) -> str:
    """A torch device as the loaders take it: auto, cpu, mps, cuda or cuda:N (availability is checked on load)."""
    if not _DEVICE.fullmatch(text):
        raise Error(f"unknown device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    return text


_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def host(text: str) -> str:
    """A host name or an IPv4 / IPv6 address (no scheme, no port)."""
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise Error(f"not a host name or IP address: {text!r}")
    return text
