"""Faster drop-in methods for ``paho.mqtt.properties.Properties`` (paho-mqtt 2.x).

paho looks property names up by scanning all 27 names and calling ``str.replace`` on each, for every attribute set,
and builds three dictionaries per instance: receiving one PUBLISH with response topic, correlation data and expiry
costs ~100–180 µs of pure Python, a large share of QSV's ~1 ms per-round transport budget (measured:
benchmarks/bench_transport.py). ``install()`` replaces ``__init__``, ``__setattr__``, ``getIdentFromName``,
``getNameFromIdent`` and ``clear`` with dictionary-based versions of identical behaviour (same attributes, same
exceptions; checked against the originals in tests/test_mqtt_paho_speedups.py). Idempotent; touches nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

log = logging.getLogger(__name__)

TESTED_PAHO_VERSIONS = frozenset({"2.2.0"})  # the releases whose Properties these replacements were checked against

ORIGINAL = {name: Properties.__dict__[name] for name in
            ("__init__", "__setattr__", "getIdentFromName", "getNameFromIdent", "clear")}
_template = Properties(PacketTypes.PUBLISH)  # built with the original __init__: the reference tables
_TYPES: list[str] = _template.types
_NAMES: dict[str, int] = _template.names
_PROPERTIES: dict[int, tuple] = _template.properties
_COMPRESSED_TO_ID = {name.replace(" ", ""): ident for name, ident in _NAMES.items()}
_ID_TO_NAME = {ident: name for name, ident in _NAMES.items()}  # last wins, as in the original loop
_COMPRESSED = tuple(_COMPRESSED_TO_ID)
_PRIVATE = frozenset(("packetType", "types", "names", "properties"))
_RANGE_1_65535 = frozenset(("ReceiveMaximum", "TopicAlias"))
_RANGE_1_268435455 = frozenset(("MaximumPacketSize", "SubscriptionIdentifier"))
_ZERO_ONE = frozenset(("RequestResponseInformation", "RequestProblemInformation", "PayloadFormatIndicator"))
_MULTIPLE = frozenset((11, 38))
_installed = False


def _init(self: Properties, packetType: int) -> None:  # noqa: N803 - paho's name
    object.__setattr__(self, "packetType", packetType)
    object.__setattr__(self, "types", _TYPES)  # shared read-only tables (paho never mutates them)
    object.__setattr__(self, "names", _NAMES)
    object.__setattr__(self, "properties", _PROPERTIES)


def _get_ident(self: Properties, compressedName: str) -> int:  # noqa: N803
    return _COMPRESSED_TO_ID.get(compressedName, -1)


def _get_name(self: Properties, identifier: int) -> str | None:
    return _ID_TO_NAME.get(identifier)


def _setattr(self: Properties, name: str, value: Any) -> None:
    name = name.replace(" ", "")
    if name in _PRIVATE:
        object.__setattr__(self, name, value)
        return
    ident = _COMPRESSED_TO_ID.get(name)
    if ident is None:
        raise MQTTException(f"Property name must be one of {_NAMES.keys()}")
    if self.packetType not in _PROPERTIES[ident][1]:
        raise MQTTException(f"Property {name} does not apply to packet type {PacketTypes.Names[self.packetType]}")
    if not isinstance(value, list):
        if name in _RANGE_1_65535 and (value < 1 or value > 65535):
            raise MQTTException(f"{name} property value must be in the range 1-65535")
        elif name == "TopicAliasMaximum" and (value < 0 or value > 65535):
            raise MQTTException(f"{name} property value must be in the range 0-65535")
        elif name in _RANGE_1_268435455 and (value < 1 or value > 268435455):
            raise MQTTException(f"{name} property value must be in the range 1-268435455")
        elif name in _ZERO_ONE and (value != 0 and value != 1):
            raise MQTTException(f"{name} property value must be 0 or 1")
    if ident in _MULTIPLE:
        if not isinstance(value, list):
            value = [value]
        if hasattr(self, name):
            value = object.__getattribute__(self, name) + value
    object.__setattr__(self, name, value)


def _clear(self: Properties) -> None:
    d = self.__dict__
    for name in _COMPRESSED:
        d.pop(name, None)


def install() -> None:
    """Patch ``Properties`` once per process; a paho release other than the tested ones keeps its originals."""
    global _installed
    if _installed:
        return
    if paho.mqtt.__version__ not in TESTED_PAHO_VERSIONS:
        log.warning("paho-mqtt %s is not a tested release (%s): keeping paho's own Properties (slower)",
                    paho.mqtt.__version__, ", ".join(sorted(TESTED_PAHO_VERSIONS)))
        return
    Properties.__init__ = _init  # type: ignore[method-assign]
    Properties.__setattr__ = _setattr  # type: ignore[method-assign]
    Properties.getIdentFromName = _get_ident  # type: ignore[method-assign]
    Properties.getNameFromIdent = _get_name  # type: ignore[method-assign]
    Properties.clear = _clear  # type: ignore[method-assign]
    _installed = True
    log.debug("paho Properties speedups installed")


def uninstall() -> None:
    """Restore paho's originals (tests)."""
    global _installed
    for name, fn in ORIGINAL.items():
        setattr(Properties, name, fn)
    _installed = False
