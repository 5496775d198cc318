"""Board configuration: loading, validation with file/line/field errors, typed access, embedded defaults.

A board config is a YAML file checked against ``firmware_configs/schema.json`` (JSON Schema draft 2020-12) plus a few
cross-field rules the schema cannot express. Every problem is reported as ``file:line:column: field.path: message``;
the line comes from the node marks of the composed YAML document, so the user is pointed at the offending key.

Typical use::

    cfg = load_config("firmware_configs/raspberry-pi-4.yaml")   # raises ConfigError listing every issue
    cfg = default_config()                                       # the embedded defaults (demo, no file)
    issues = validate_config_bytes(raw, source="board.yaml")     # list, empty when valid (board agent)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.resources
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from qsv_wire import safe_yaml
from qsv_wire.protocol import DEFAULT_LIMITS

log = logging.getLogger(__name__)

CONFIG_DIR = Path(str(importlib.resources.files("firmware_configs")))  # package data: works from an installed wheel
SCHEMA_PATH = CONFIG_DIR / "schema.json"
BOARDS = ("raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "generic-aarch64", "x86-dev")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
TLS_SCHEMES = ("mqtts", "wss")


# --------------------------------------------------------------------------------------------------------- typed config
@dataclass(frozen=True)
class DeviceConfig:
    id: str = "qsv-demo"
    board: str = "x86-dev"
    description: str = ""


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class CredentialsConfig:
    username_file: str
    password_file: str


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    keepalive_s: int = 30
    tls: TlsConfig = field(default_factory=TlsConfig)
    credentials: CredentialsConfig | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def use_tls(self) -> bool:
        return self.tls.enabled or self.scheme in TLS_SCHEMES

    @property
    def transport(self) -> str:
        """paho-mqtt transport name: ``tcp`` or ``websockets``."""
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"


@dataclass(frozen=True)
class OrtOptions:
    intra_op_threads: int = 0  # 0: onnxruntime chooses (one thread per physical core)
    int8: bool = False  # only picks the variant when onnx_path is an export directory (a .onnx file decides itself)
    spinning: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Loaded by ``edge_runtime.slm.slm_from_config`` (torch-free)."""

    onnx_path: str | None = None  # a .onnx file of a `qsv export` directory (meta.json beside it); None: not configured
    tokenizer_path: str | None = None
    vocab_hash: str | None = None
    onnxruntime: OrtOptions = field(default_factory=OrtOptions)


@dataclass(frozen=True)
class ControllerConfig:
    mode: str = "static"
    L_min: int = 1
    L_max: int = 12
    ell_set: tuple[int, ...] = (240, 720)
    static_L: int = 3
    static_ell: int = 240
    policy_path: str | None = None
    recovery: bool = True  # mode model: calibrate α̂ by tokens since the last rejection (controller/recovery.py)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.4
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class ChannelConfig:
    uplink_bps: float = 4_000_000.0
    rtt_ms: float = 20.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    file: str | None = None


@dataclass(frozen=True)
class BoardConfig:
    schema_version: int = 1
    device: DeviceConfig = field(default_factory=DeviceConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = field(default=None, compare=False)  # file it came from; None for embedded defaults

    def resolve_path(self, path: str | None) -> Path | None:
        """A file reference of this config as a path: relative ones are relative to the config file's directory."""
        if path is None:
            return None
        p = Path(path)
        if p.is_absolute() or self.source is None:
            return p
        return Path(self.source).resolve().parent / p


def default_config() -> BoardConfig:
    """The embedded defaults: a complete, valid config without any file (used by the demo)."""
    return BoardConfig()


# --------------------------------------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file. ``line``/``column`` are 1-based; ``path`` is e.g. ``controller.ell_set[1]``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path or '<root>'}: {self.message}"


class ConfigError(ValueError):
    """A config that failed to load; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("invalid board config:\n" + "\n".join(f"  {i}" for i in self.issues))


# --------------------------------------------------------------------------------------------------- YAML node mapping
def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _node_for_path(root: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    """The node that best marks ``path``: the key node of the last mapping step, the item of a sequence step; stops
    at the deepest existing prefix when the path leaves the document."""
    node, marker = root, root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    node, marker = value_node, key_node
                    break
            else:
                return marker
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = marker = node.value[part]
        else:
            return marker
    return marker


def _duplicate_keys(node: yaml.Node | None, path: tuple[str | int, ...] = ()) -> Iterable[tuple[tuple, yaml.Node]]:
    """PyYAML silently keeps the last of duplicate keys; a board config with two values for one field is an error."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            if key in seen:
                yield path + (key,), key_node
            seen.add(key)
            yield from _duplicate_keys(value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, path + (i,))


# ----------------------------------------------------------------------------------------------------------- validation
@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_issues(data: Any) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """(path, message) per schema violation; additionalProperties/required errors point at the key concerned."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for key in sorted(k for k in err.instance if k not in allowed):
                hint = f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""
                yield path + (key,), f"unknown field '{key}'{hint}"
        elif err.validator == "required":
            missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
            for key in missing:
                yield path + (key,), f"missing required field '{key}'"
        elif err.validator == "dependentRequired":
            yield path, err.message
        else:
            yield path, err.message


def _semantic_issues(data: dict[str, Any]) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules the schema cannot express (run only on schema-valid data)."""
    ctl = {**dataclasses.asdict(ControllerConfig()), **data.get("controller", {})}
    if ctl["L_min"] > ctl["L_max"]:
        yield ("controller", "L_max"), f"L_max ({ctl['L_max']}) is below L_min ({ctl['L_min']})"
    if not ctl["L_min"] <= ctl["static_L"] <= ctl["L_max"]:
        yield ("controller", "static_L"), f"static_L ({ctl['static_L']}) outside [L_min, L_max] = " \
                                          f"[{ctl['L_min']}, {ctl['L_max']}]"
    if ctl["static_ell"] not in ctl["ell_set"]:
        yield ("controller", "static_ell"), f"static_ell ({ctl['static_ell']}) not in ell_set {list(ctl['ell_set'])}"
    # the verifier refuses rounds beyond the protocol's limits table (qsv_wire.protocol.Limits): refuse them here
    limits = DEFAULT_LIMITS
    for key in ("L_max", "static_L"):
        if ctl[key] > limits.max_draft_len:
            yield ("controller", key), f"{key} ({ctl[key]}) exceeds the protocol's max draft length " \
                                       f"{limits.max_draft_len}"
    for i, ell in enumerate(ctl["ell_set"]):
        if ell > limits.max_ell:
            yield ("controller", "ell_set", i), f"ell {ell} exceeds the protocol's max ell {limits.max_ell}"
    if ctl["static_ell"] > limits.max_ell and ctl["static_ell"] not in ctl["ell_set"]:
        yield ("controller", "static_ell"), f"static_ell ({ctl['static_ell']}) exceeds the protocol's max ell " \
                                            f"{limits.max_ell}"
    broker = data.get("broker", {})
    scheme = urlsplit(broker.get("url", "")).scheme
    tls = broker.get("tls", {})
    if scheme in TLS_SCHEMES and tls.get("enabled") is False:
        yield ("broker", "tls", "enabled"), f"url scheme '{scheme}' needs TLS but tls.enabled is false"
    if scheme not in TLS_SCHEMES and tls.get("enabled") is True:
        yield ("broker", "url"), f"tls.enabled is true but url scheme '{scheme}' is not mqtts:// or wss://"
    urlport = urlsplit(broker.get("url", "")).port if broker.get("url") else None
    if urlport is not None and not 1 <= urlport <= 65535:
        yield ("broker", "url"), f"port {urlport} out of range 1..65535"


def validate_config_text(text: str, source: str = "<string>") -> tuple[list[ConfigIssue], dict[str, Any] | None]:
    """Validate YAML text. Returns (issues, data); data is the parsed mapping when there are no issues."""

    def issue(
        path: Sequence[str | int], message: str, root: yaml.Node | None, node: yaml.Node | None = None
    ) -> ConfigIssue:
        node = node if node is not None else _node_for_path(root, path)
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)
        return ConfigIssue(source, line, col, format_path(path), message)

    try:
        root = safe_yaml.compose(text)
        data = safe_yaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        return [ConfigIssue(source, line, col, "", f"YAML syntax error: {problem}")], None
    if not isinstance(data, dict):
        kind = "an empty document" if data is None else f"a {type(data).__name__}"
        return [ConfigIssue(source, 1, 1, "", f"a board config is a mapping, got {kind}")], None
    issues = [issue(path, f"duplicate key '{path[-1]}'", root, node) for path, node in _duplicate_keys(root)]
    issues += [issue(path, msg, root) for path, msg in _schema_issues(data)]
    if not issues:
        issues += [issue(path, msg, root) for path, msg in _semantic_issues(data)]
    issues = sorted(dict.fromkeys(issues), key=lambda i: (i.line, i.column, i.path))  # one per problem, file order
    return issues, (None if issues else data)


def validate_config_bytes(raw: bytes, source: str = "<bytes>") -> list[ConfigIssue]:
    """Validate raw config bytes (UTF-8 YAML) as received by the board agent; empty list when valid."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return [ConfigIssue(source, line, col, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
    if "\x00" in text:
        return [ConfigIssue(source, 1, 1, "", "config contains NUL bytes")]
    return validate_config_text(text, source)[0]


# -------------------------------------------------------------------------------------------------------------- loading
def config_from_dict(data: dict[str, Any], source: str | None = None) -> BoardConfig:
    """Typed config from an already validated mapping; omitted fields take the embedded defaults."""
    broker = dict(data.get("broker", {}))
    broker["tls"] = TlsConfig(**broker.get("tls", {}))
    if broker.get("credentials") is not None:
        broker["credentials"] = CredentialsConfig(**broker["credentials"])
    model = dict(data.get("model", {}))
    model["onnxruntime"] = OrtOptions(**model.get("onnxruntime", {}))
    controller = dict(data.get("controller", {}))
    if "ell_set" in controller:
        controller["ell_set"] = tuple(controller["ell_set"])
    sampling = dict(data.get("sampling", {}))
    for key in ("temperature", "top_p"):
        if key in sampling:
            sampling[key] = float(sampling[key])
    channel = {k: float(v) for k, v in data.get("channel", {}).items()}
    return BoardConfig(
        schema_version=data.get("schema_version", 1),
        device=DeviceConfig(**data.get("device", {})),
        broker=BrokerConfig(**broker),
        model=ModelConfig(**model),
        controller=ControllerConfig(**controller),
        sampling=SamplingConfig(**sampling),
        channel=ChannelConfig(**channel),
        logging=LoggingConfig(**data.get("logging", {})),
        source=source,
    )


def parse_config(text: str, source: str = "<string>") -> BoardConfig:
    """Validate and load YAML text; raises ConfigError with every issue."""
    issues, data = validate_config_text(text, source)
    if issues or data is None:
        raise ConfigError(issues)
    return config_from_dict(data, source=None if source.startswith("<") else source)


def load_config(path: str | Path) -> BoardConfig:
    """Validate and load a board config file; raises ConfigError (file, line, field per issue) or OSError."""
    path = Path(path)
    raw = path.read_bytes()
    issues = validate_config_bytes(raw, str(path))
    if issues:
        raise ConfigError(issues)
    return parse_config(raw.decode("utf-8"), str(path))


def board_config_path(board: str) -> Path:
    """The shipped config of a supported board."""
    if board not in BOARDS:
        raise ValueError(f"unknown board '{board}'; supported: {', '.join(BOARDS)}")
    return CONFIG_DIR / f"{board}.yaml"


def config_to_dict(cfg: BoardConfig) -> dict[str, Any]:
    """Plain mapping of a config (None fields omitted), valid against the schema."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    out = clean(dataclasses.asdict(cfg))
    out.pop("source", None)
    return out


def config_to_yaml(cfg: BoardConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_sha256(raw: bytes) -> str:
    """The identity of a config on a board: SHA-256 (hex) of its exact bytes."""
    return hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qsv config", description="Validate QSV board configs or print defaults.")
    from qsv_wire import cliargs

    parser.add_argument("files", nargs="*", type=cliargs.readable_file, help="config files to validate")
    parser.add_argument("--print-defaults", action="store_true", help="print the embedded default config as YAML")
    args = parser.parse_args(argv)
    if args.print_defaults:
        sys.stdout.write(config_to_yaml(default_config()))
    bad = 0
    for path in args.files:
        try:
            issues = validate_config_bytes(path.read_bytes(), str(path))
        except OSError as exc:
            issues = [ConfigIssue(str(path), 0, 0, "", f"cannot read: {exc.strerror}")]
        for item in issues:
            sys.stderr.write(f"{item}\n")
        if issues:
            bad += 1
        else:
            sys.stdout.write(f"{path}: ok (sha256 {config_sha256(path.read_bytes())})\n")
    if not args.files and not args.print_defaults:
        parser.error("give config files to validate, or --print-defaults")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
