"""The paho Properties speedups behave exactly like paho's originals."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from edge_runtime.transport import paho_speedups


def exercise() -> list:
    """A transcript of Properties behaviour: packed bytes, attributes, errors."""
    out: list = []
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = "qsv/v1/dev/feedback"
    p.CorrelationData = b"\x00\x01"
    p.MessageExpiryInterval = 10
    p.UserProperty = ("a", "b")
    p.UserProperty = [("c", "d")]
    p.SubscriptionIdentifier = 7
    raw = p.pack()
    out += [raw, str(p), p.json(), p.isEmpty(), p.getIdentFromName("ResponseTopic"), p.getIdentFromName("Nope"),
            p.getNameFromIdent(9), p.getNameFromIdent(99), p.allowsMultiple("UserProperty")]
    q, n = Properties(PacketTypes.PUBLISH).unpack(raw)
    out += [n, q.json(), q.pack() == raw]
    q.clear()
    out += [q.isEmpty(), q.pack()]
    cases = [(PacketTypes.PUBLISH, "NotAProperty", 1), (PacketTypes.PUBLISH, "ReceiveMaximum", 5),
             (PacketTypes.CONNECT, "ReceiveMaximum", 0), (PacketTypes.CONNECT, "MaximumPacketSize", 0),
             (PacketTypes.CONNECT, "RequestProblemInformation", 2), (PacketTypes.CONNACK, "TopicAliasMaximum", 70000)]
    for packet, name, value in cases:
        try:
            setattr(Properties(packet), name, value)
            out.append("ok")
        except MQTTException as exc:
            out.append(str(exc))
    c = Properties(PacketTypes.CONNECT)
    c.SessionExpiryInterval = 60
    c.ReceiveMaximum = 10
    out.append(c.pack())
    return out


def test_speedups_match_the_originals() -> None:
    paho_speedups.uninstall()
    try:
        reference = exercise()
        paho_speedups.install()
        fast = exercise()
    finally:
        paho_speedups.install()  # the transport modules expect it installed
    assert fast == reference
    assert reference[0][:1] != b""  # the transcript is not empty


def test_duplicate_property_is_still_rejected() -> None:
    paho_speedups.install()
    once = bytes([5, 2, 0, 0, 0, 1])  # message expiry 1 s
    twice = bytes([10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 2])  # the same property twice: a protocol error
    assert Properties(PacketTypes.PUBLISH).unpack(once)[0].MessageExpiryInterval == 1
    with pytest.raises(MQTTException):
        Properties(PacketTypes.PUBLISH).unpack(twice)
