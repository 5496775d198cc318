"""paho-mqtt 2.x client construction shared by the board and the verifier: MQTT 5, TLS, credentials,
TCP_NODELAY on connect, reconnect with exponential backoff."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where and how to connect. TLS is on when ``ca_file`` is set; ``cert_file``/``key_file`` add a client
    certificate (mutual TLS)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.ca_file is not None


def set_nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if sock is None:
        return
    try:
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_sock", sock)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # a non-TCP socket (websocket proxy): nothing to tune
        log.debug("TCP_NODELAY not set: %s", exc)


def make_client(
    client_id: str,
    endpoint: BrokerEndpoint,
    on_connect: Callable[[mqtt.Client], None] | None = None,
    reconnect_min_s: float = 0.05,
    reconnect_max_s: float = 5.0,
) -> mqtt.Client:
    """An MQTT 5 client; ``on_connect(client)`` runs (on the network thread) after every successful (re)connect,
    after TCP_NODELAY is set; use it to (re)subscribe."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=True
    )
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(
            ca_certs=str(endpoint.ca_file),
            certfile=str(endpoint.cert_file) if endpoint.cert_file else None,
            keyfile=str(endpoint.key_file) if endpoint.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(100)

    def _on_connect(c: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode, props: object) -> None:
        if reason.is_failure:
            log.warning("%s: connect refused: %s", client_id, reason)
            return
        set_nodelay(c)
        log.info("%s: connected to %s:%d", client_id, endpoint.host, endpoint.port)
        if on_connect is not None:
            on_connect(c)

    client.on_connect = _on_connect
    return client


def connect_and_start(client: mqtt.Client, endpoint: BrokerEndpoint, keepalive: int = 30) -> None:
    """Connect (clean start) and run the network loop on its own thread; reconnects happen in that thread."""
    client.connect(endpoint.host, endpoint.port, keepalive=keepalive, clean_start=True)
    client.loop_start()
