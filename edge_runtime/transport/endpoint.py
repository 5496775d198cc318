"""The broker a board config names, as a :class:`~qsv_wire.mqtt_common.BrokerEndpoint`."""

from __future__ import annotations

from edge_runtime.config import BoardConfig
from qsv_wire.mqtt_common import BrokerEndpoint


class EndpointError(ValueError):
    """The config's broker cannot be used from here (unsupported transport, unreadable credentials)."""


def _read_secret(cfg: BoardConfig, ref: str, what: str) -> str:
    path = cfg.resolve_path(ref)
    assert path is not None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise EndpointError(f"cannot read the broker {what} from {path}: {exc.strerror or exc}") from None


def endpoint_from_config(cfg: BoardConfig) -> BrokerEndpoint:
    """Host, port, credentials (read from their files) and TLS material of ``cfg.broker``."""
    broker = cfg.broker
    if broker.transport != "tcp":
        raise EndpointError(f"{broker.scheme}:// (MQTT over websockets) is not supported by the board runtime")
    username = password = None
    if broker.credentials is not None:
        username = _read_secret(cfg, broker.credentials.username_file, "username")
        password = _read_secret(cfg, broker.credentials.password_file, "password")
    tls = broker.tls
    if broker.use_tls and not tls.ca_file:
        raise EndpointError(f"{broker.url} uses TLS: set broker.tls.ca_file (the CA that signed the broker)")
    return BrokerEndpoint(
        host=broker.host, port=broker.port, username=username, password=password,
        ca_file=cfg.resolve_path(tls.ca_file) if broker.use_tls else None,
        cert_file=cfg.resolve_path(tls.cert_file) if broker.use_tls else None,
        key_file=cfg.resolve_path(tls.key_file) if broker.use_tls else None,
    )
