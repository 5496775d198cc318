"""MQTT topic names of protocol v1 (see docs/PROTOCOL.md, section Topics)."""

from __future__ import annotations

TOPIC_PREFIX = "qsv/v1"
DEFAULT_SHARE_GROUP = "qsv-verifiers"
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_client_id(name: str) -> str:
    """Device and worker ids are topic levels: 1..64 chars of [A-Za-z0-9_.-] (no '/', '+', '#', '$')."""
    if not name or len(name) > 64 or not set(name) <= _ALLOWED:
        raise ValueError(f"invalid id {name!r}: use 1..64 chars of [A-Za-z0-9_.-]")
    return name


def device_client_id(device: str, role: str) -> str:
    """The MQTT client id of one of a device's connections: ``<device>:<role>`` (role: 1..64 chars of
    [A-Za-z0-9_.-]). The devices' listener admits a client id only when it is the username or starts with
    ``<username>:`` (the auth plugin), so a device may hold several connections at once (its runtime, a bench) and
    no other client can take one of them over. ':' is not allowed in ids, so one device's prefix is never another's."""
    check_client_id(device)
    if not role or len(role) > 64 or not set(role) <= _ALLOWED:
        raise ValueError(f"invalid connection role {role!r}: use 1..64 chars of [A-Za-z0-9_.-]")
    return f"{device}:{role}"


def open_topic(device: str) -> str:
    """Session opens (and resyncs) go here; verifier workers share it (shared subscription)."""
    return f"{TOPIC_PREFIX}/{device}/draft"


def worker_topic(device: str, worker: str) -> str:
    """Draft rounds of a session pinned to ``worker`` (the worker that holds its KV cache)."""
    return f"{TOPIC_PREFIX}/{device}/draft/{worker}"


def feedback_topic(device: str) -> str:
    return f"{TOPIC_PREFIX}/{device}/feedback"


def shared_open_filter(group: str = DEFAULT_SHARE_GROUP) -> str:
    return f"$share/{group}/{TOPIC_PREFIX}/+/draft"


def worker_filter(worker: str) -> str:
    return f"{TOPIC_PREFIX}/+/draft/{worker}"


def parse_draft_topic(topic: str) -> tuple[str, str | None] | None:
    """(device, worker or None) for a draft topic, None for anything else."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[3] != "draft" or len(parts) > 5:
        return None
    return parts[2], (parts[4] if len(parts) == 5 else None)
