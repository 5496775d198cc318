"""A bare MQTT 5 client for probing a broker from tests (the broker's refusals, ACLs, raw payloads)."""

from __future__ import annotations

import collections
import time

import paho.mqtt.client as mqtt

from qsv_wire import topics
from qsv_wire.mqtt_common import BrokerEndpoint, LoopDriver, make_client, publish_properties


class Probe:
    """A bare MQTT 5 client: records SUBACKs, PUBACKs, messages and disconnect reasons. Its client id is
    ``<username>:<role>`` (a device's connection), or ``client_id`` when given."""

    def __init__(self, role: str, endpoint: BrokerEndpoint, client_id: str | None = None) -> None:
        client_id = client_id or (topics.device_client_id(endpoint.username, role) if endpoint.username else role)
        self.client = make_client(client_id, endpoint)
        self.loop = LoopDriver(self.client, endpoint)
        self.messages: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self.subacks: list[list[mqtt.ReasonCode]] = []
        self.pubacks: dict[int, mqtt.ReasonCode] = {}
        self.disconnects: list[mqtt.ReasonCode] = []
        self.connected = False
        self.refused: mqtt.ReasonCode | None = None
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.append(rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)

        def on_connect(c, u, f, rc, p) -> None:  # noqa: ANN001
            self.connected = not rc.is_failure
            self.refused = rc if rc.is_failure else None

        self.client.on_connect = on_connect
        self.loop.connect()
        settled = lambda: self.connected or self.refused is not None or self.loop.connection_losses > 0  # noqa: E731
        if not self.loop.pump_until(settled, 5.0) or not self.connected:
            self.close()
            raise ConnectionError(f"{client_id}: not connected ({self.refused})")

    def subscribe(self, topic: str) -> mqtt.ReasonCode:
        n = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        assert self.loop.pump_until(lambda: len(self.subacks) > n, 5.0)
        return self.subacks[-1][0]

    def publish(self, topic: str, payload: bytes, corr: bytes | None = b"c") -> mqtt.ReasonCode:
        info = self.client.publish(topic, payload, qos=1, properties=publish_properties(None, corr, 10))
        assert self.loop.pump_until(lambda: info.mid in self.pubacks, 5.0)
        return self.pubacks[info.mid]

    def wait_message(self, timeout_s: float = 3.0) -> mqtt.MQTTMessage | None:
        self.loop.pump_until(lambda: bool(self.messages), timeout_s)
        return self.messages.popleft() if self.messages else None

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.loop.pump(0.02)

    def close(self) -> None:
        self.loop.close()
