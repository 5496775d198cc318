"""Board config loading and validation: the shipped configs load; every error names file, line and field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge_runtime.config import (
    BOARDS,
    SCHEMA_PATH,
    BoardConfig,
    ConfigError,
    board_config_path,
    config_to_dict,
    config_to_yaml,
    default_config,
    load_config,
    main,
    parse_config,
    validate_config_bytes,
    validate_config_text,
)

VALID = """\
schema_version: 1
device:
  id: test-board
broker:
  url: mqtt://127.0.0.1:1883
controller:
  mode: static
  L_min: 1
  L_max: 8
  ell_set: [16, 240]
  static_L: 3
  static_ell: 240
"""


def issues_of(text: str, name: str = "board.yaml") -> list[tuple[int, str, str]]:
    issues, _ = validate_config_text(text, name)
    assert all(i.file == name for i in issues)
    return [(i.line, i.path, i.message) for i in issues]


def test_schema_is_valid_draft_2020_12_and_closed() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)

    def objects(node: object):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)

    for obj in objects(schema):
        assert obj.get("additionalProperties") is False, obj


@pytest.mark.parametrize("board", BOARDS)
def test_shipped_board_configs_load(board: str) -> None:
    cfg = load_config(board_config_path(board))
    assert cfg.device.board == board
    assert cfg.schema_version == 1
    assert cfg.controller.static_ell in cfg.controller.ell_set
    assert cfg.controller.L_min <= cfg.controller.static_L <= cfg.controller.L_max
    assert cfg.source == str(board_config_path(board))


def test_every_board_has_a_config_file_and_no_stray_ones() -> None:
    shipped = {p.stem for p in SCHEMA_PATH.parent.glob("*.yaml")}
    assert shipped == set(BOARDS)


def test_embedded_defaults_are_valid_and_round_trip() -> None:
    cfg = default_config()
    assert isinstance(cfg, BoardConfig) and cfg.source is None
    text = config_to_yaml(cfg)
    assert validate_config_text(text)[0] == []
    assert parse_config(text) == cfg
    assert cfg.broker.host == "127.0.0.1" and cfg.broker.port == 1883 and not cfg.broker.use_tls


def test_partial_config_takes_defaults_and_types() -> None:
    cfg = parse_config(VALID)
    assert cfg.device.id == "test-board"
    assert cfg.controller.ell_set == (16, 240)
    assert cfg.sampling == default_config().sampling
    assert isinstance(cfg.channel.uplink_bps, float)
    assert config_to_dict(cfg)["controller"]["ell_set"] == [16, 240]


def test_tls_broker_properties() -> None:
    cfg = load_config(board_config_path("raspberry-pi-4"))
    assert cfg.broker.scheme == "mqtts" and cfg.broker.port == 8883 and cfg.broker.use_tls
    assert cfg.broker.credentials is not None and cfg.broker.credentials.password_file.endswith("password")
    assert cfg.broker.transport == "tcp"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "board.yaml"
    path.parent.mkdir()
    path.write_text(VALID + "model:\n  onnx_path: models/slm.onnx\n")
    cfg = load_config(path)
    assert cfg.resolve_path(cfg.model.onnx_path) == path.parent.resolve() / "models" / "slm.onnx"
    assert cfg.resolve_path("/abs/x") == Path("/abs/x")
    assert cfg.resolve_path(None) is None


def test_unknown_field_names_line_and_field() -> None:
    text = VALID.replace("  id: test-board\n", "  id: test-board\n  colour: red\n")
    assert issues_of(text) == [(4, "device.colour", "unknown field 'colour'; allowed: board, description, id")]


def test_type_and_enum_errors_point_at_their_lines() -> None:
    text = VALID.replace("mode: static", "mode: turbo").replace("L_max: 8", "L_max: eight")
    got = issues_of(text)
    assert [(line, path) for line, path, _ in got] == [(7, "controller.mode"), (9, "controller.L_max")]
    assert "turbo" in got[0][2] and "eight" in got[1][2]


def test_sequence_item_error_names_the_index() -> None:
    text = VALID.replace("ell_set: [16, 240]", "ell_set:\n    - 16\n    - 0")
    got = issues_of(text)
    assert got[0][:2] == (12, "controller.ell_set[1]")
    assert "minimum" in got[0][2]


def test_missing_required_fields() -> None:
    got = issues_of("schema_version: 1\ndevice:\n  board: x86-dev\n")
    assert (1, "broker", "missing required field 'broker'") in got
    assert (2, "device.id", "missing required field 'id'") in got


def test_nested_error_deep_in_the_file() -> None:
    text = VALID + "broker2: 1\n"
    assert issues_of(text)[0][:2] == (13, "broker2")
    text = VALID.replace("  url: mqtt://127.0.0.1:1883\n", "  url: mqtt://127.0.0.1:1883\n  tls:\n    ca_file: ''\n")
    assert issues_of(text)[0][:2] == (7, "broker.tls.ca_file")


def test_semantic_rules() -> None:
    got = issues_of(VALID.replace("static_ell: 240", "static_ell: 720"))
    assert got == [(12, "controller.static_ell", "static_ell (720) not in ell_set [16, 240]")]
    got = issues_of(VALID.replace("L_max: 8", "L_max: 2"))
    assert [(line, path) for line, path, _ in got] == [(11, "controller.static_L")]
    got = issues_of(VALID.replace("static_L: 3", "static_L: 1").replace("L_min: 1", "L_min: 5").replace("L_max: 8",
                                                                                                      "L_max: 4"))
    assert (9, "controller.L_max") in [(line, path) for line, path, _ in got]
    got = issues_of(VALID.replace("mqtt://127.0.0.1:1883", "mqtts://broker:8883") + "")
    assert got == []
    tls_off = VALID.replace("  url: mqtt://127.0.0.1:1883\n", "  url: mqtts://b:8883\n  tls:\n    enabled: false\n")
    assert issues_of(tls_off)[0][:2] == (7, "broker.tls.enabled")
    tls_on = VALID.replace("  url: mqtt://127.0.0.1:1883\n", "  url: mqtt://broker\n  tls:\n    enabled: true\n")
    assert issues_of(tls_on)[0][:2] == (5, "broker.url")


def test_cert_without_key_is_refused() -> None:
    text = VALID.replace("  url: mqtt://127.0.0.1:1883\n", "  url: mqtts://b\n  tls:\n    cert_file: /c.pem\n")
    got = issues_of(text)
    assert got[0][1] == "broker.tls" and "key_file" in got[0][2]


def test_duplicate_key_points_at_the_second_occurrence() -> None:
    text = VALID.replace("  L_max: 8\n", "  L_max: 8\n  L_max: 9\n")
    assert issues_of(text) == [(10, "controller.L_max", "duplicate key 'L_max'")]


def test_yaml_syntax_error_has_line() -> None:
    got = issues_of(VALID.replace("ell_set: [16, 240]", "ell_set: [16, 240"))
    assert len(got) == 1 and got[0][0] >= 10 and got[0][2].startswith("YAML syntax error")


@pytest.mark.parametrize("text, expected", [("", "empty document"), ("- a\n- b\n", "a list"), ("42\n", "a int")])
def test_document_must_be_a_mapping(text: str, expected: str) -> None:
    got = issues_of(text)
    assert got[0][0] == 1 and expected in got[0][2]


def test_non_utf8_and_nul_bytes() -> None:
    raw = VALID.encode().replace(b"test-board", b"test-\xffboard")
    issues = validate_config_bytes(raw, "b.yaml")
    assert len(issues) == 1 and issues[0].line == 3 and issues[0].column == 12 and "UTF-8" in issues[0].message
    assert "NUL" in validate_config_bytes(b"a: \x00", "b.yaml")[0].message


def test_load_config_raises_with_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("mode: static", "mode: x").replace("id: test-board", "id: 'a b'"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(i.line, i.path) for i in info.value.issues] == [(3, "device.id"), (7, "controller.mode")]
    assert f"{path}:3:3: device.id:" in str(info.value)


def test_every_field_of_the_typed_config_is_in_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())

    def check(cls: type, props: dict) -> None:
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            assert f.name in props, f"{cls.__name__}.{f.name} missing from schema"
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                check(f.default_factory, props[f.name]["properties"])

    check(BoardConfig, schema["properties"])
    # and defaults agree with the schema
    jsonschema.validate(yaml.safe_load(config_to_yaml(default_config())), schema)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = board_config_path("x86-dev")
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("L_max: 8", "L_max: 0"))
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:9:" in err and "controller.L_max" in err
    assert main(["--print-defaults"]) == 0
    assert validate_config_text(capsys.readouterr().out)[0] == []


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    + ["device: *a8"]
)


def test_an_alias_bomb_is_rejected_at_once_with_its_position() -> None:
    import time

    start = time.perf_counter()
    issues, data = validate_config_text(ALIAS_BOMB, "bomb.yaml")
    assert time.perf_counter() - start < 1.0
    assert data is None and len(issues) == 1
    assert "anchors and aliases" in issues[0].message and (issues[0].line, issues[0].column) == (1, 5)


def test_an_oversized_document_is_rejected_before_parsing() -> None:
    from qsv_wire import safe_yaml

    issues, data = validate_config_text("x: " + "y" * (safe_yaml.MAX_BYTES + 1), "big.yaml")
    assert data is None and "at most" in issues[0].message


def test_fleet_lists_are_type_checked_and_alias_free(tmp_path) -> None:
    from qsv_tools.broker.fleet import Fleet

    path = tmp_path / "fleet.yaml"
    path.write_text("devices: board-01\n")  # a string, not a list: was split into characters
    with pytest.raises(ValueError, match="'devices' must be a list of names"):
        Fleet.load(path)
    path.write_text(ALIAS_BOMB.replace("device:", "devices:"))
    with pytest.raises(ValueError, match="anchors and aliases"):
        Fleet.load(path)
    path.write_text("devices: [board-01, board-02]\nverifiers: [verifier]\n")
    assert Fleet.load(path).devices == ("board-01", "board-02")
