"""The ``qsv`` command (qsv/cli.py): subcommands, help, errors, lazy imports; the shared logging setup
(edge_runtime/logs.py); the verifier's ``--broker URL``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.logs import add_logging_args, log_level, setup_logging
from qsv.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
QSV = shutil.which("qsv", path=str(Path(sys.executable).parent)) or shutil.which("qsv")
needs_script = pytest.mark.skipif(QSV is None, reason="the qsv console script is not installed (pip install -e .)")
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
OLD_SCRIPTS = ("qsv-experiment", "qsv-config", "qsv-flash", "qsv-board-agent", "qsv-bench", "qsv-certs", "qsv-broker",
               "qsv-verifier-mqtt", "cloud_verifier", "qsv-demo-mqtt", "qsv-models", "qsv-export", "qsv-local",
               "qsv-demo")


def qsv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    assert QSV is not None
    return subprocess.run([QSV, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def _imports_torch(*argv: str) -> tuple[bool, str]:
    """Run ``qsv.cli.main(argv)`` in a fresh interpreter; whether torch got imported, and what the command printed."""
    code = ("import sys\nfrom qsv.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint('RC', rc, 'TORCH', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=ENV)
    match = re.search(r"RC (\S+) TORCH (True|False)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert match.group(1) in ("0", "None"), proc.stdout + proc.stderr
    return match.group(2) == "True", proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ the console script
def test_one_console_script_only() -> None:
    text = (ROOT / "setup.py").read_text()
    assert '"console_scripts": ["qsv=qsv.cli:main"]' in text
    if QSV is not None:
        bindir = Path(QSV).parent
        assert [name for name in OLD_SCRIPTS if (bindir / name).exists()] == []


@needs_script
def test_help_lists_every_command() -> None:
    proc = qsv("--help")
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", proc.stdout, re.M)
    assert sorted(listed) == sorted(COMMANDS)
    assert {"edge", "verifier", "verifier-check", "broker", "certs", "config", "flash", "board-agent", "bench",
            "models", "export", "demo", "experiment", "local"} == set(COMMANDS)


@needs_script
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_exits_0_with_its_prog(command: str) -> None:
    proc = qsv(command, "--help")
    assert proc.returncode == 0, f"`qsv {command} --help` failed (exit {proc.returncode}): {proc.stderr.strip()}"
    assert proc.stdout.startswith(f"usage: qsv {command} "), proc.stdout[:200]


@needs_script
@pytest.mark.parametrize("args", [("nope",), ("--nope",), ("qsv-flash", "--help")])
def test_unknown_command_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    proc = qsv(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsv: unknown ") and "flash" in lines[0], proc.stderr


@needs_script
def test_no_command_is_an_error_and_version_works() -> None:
    proc = qsv()
    assert proc.returncode == 2 and proc.stderr.strip().endswith("qsv: a command is required")
    assert re.fullmatch(r"qsv \d+\.\d+\.\d+\n", qsv("--version").stdout)


@needs_script
def test_subcommand_errors_name_the_subcommand() -> None:
    proc = qsv("flash")  # PORT missing
    assert proc.returncode == 2 and "usage: qsv flash " in proc.stderr and "qsv flash: error:" in proc.stderr
    proc = qsv("models", "path", "gpt-5")
    assert proc.returncode == 2 and "qsv models path: error:" in proc.stderr
    proc = qsv("experiment", "record", "--prompts", "x")
    assert proc.returncode == 2 and "qsv experiment record: error:" in proc.stderr


@needs_script
def test_python_dash_m_qsv_is_the_same_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "qsv", "config", "firmware_configs/x86-dev.yaml"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert proc.returncode == 0 and "x86-dev.yaml: ok" in proc.stdout, proc.stderr


def test_module_mains_stay_callable(capsys) -> None:
    from edge_runtime.config import main as config_main

    assert config_main([str(ROOT / "firmware_configs" / "x86-dev.yaml")]) == 0
    assert "ok (sha256" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------- lazy imports
def test_help_of_the_light_commands_does_not_import_torch() -> None:
    for command in ("config", "flash", "board-agent", "broker", "certs", "models", "bench", "demo", "verifier",
                    "verifier-check"):
        torch, output = _imports_torch(command, "--help")
        assert not torch, f"`qsv {command} --help` imported torch\n{output[-2000:]}"
    torch, output = _imports_torch("--help")
    assert not torch, output


def test_edge_help_does_not_import_torch() -> None:
    """Fails (clearly) while edge_runtime/runtime/cli.py is missing; passes once it exists and stays torch-free."""
    torch, output = _imports_torch("edge", "--help")
    assert "usage: qsv edge" in output, output
    assert not torch, f"`qsv edge --help` imported torch\n{output[-2000:]}"


def test_missing_command_module_is_one_line_exit_2(monkeypatch, capsys) -> None:
    from qsv import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", cli.Command("edge_runtime.no_such_module", "main", "x", "run"))
    assert cli.main(["ghost", "--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qsv: ghost: edge_runtime.no_such_module cannot be imported")


# ---------------------------------------------------------------------------------------------- one logging setup
def _parse(*argv: str, **kw) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qsv test")
    add_logging_args(p, **kw)
    return p.parse_args(list(argv))


def test_log_levels() -> None:
    assert log_level(_parse()) == logging.WARNING
    assert log_level(_parse("-v")) == logging.INFO
    assert log_level(_parse("-vv")) == logging.DEBUG
    assert log_level(_parse("-vvvv")) == logging.DEBUG
    assert log_level(_parse(default="INFO")) == logging.INFO
    assert log_level(_parse("-v", default="INFO")) == logging.DEBUG
    assert log_level(_parse("-v", "--log-level", "error")) == logging.ERROR
    with pytest.raises(SystemExit):
        _parse("--log-level", "LOUD")
    with pytest.raises(SystemExit):
        _parse("--log-json")  # only services take it
    assert _parse("--log-json", json_lines=True).log_json


def test_setup_logging_json_lines_and_idempotent(capsys) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        setup_logging(_parse("--log-json", json_lines=True, default="INFO"))
        setup_logging(_parse("--log-json", json_lines=True, default="INFO"))  # replaces its own handler
        logging.getLogger("qsv.test").info("round %d ok", 3)
        logging.getLogger("qsv.test").debug("not shown")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        assert len(lines) == 1
        assert lines[0]["message"] == "round 3 ok" and lines[0]["level"] == "INFO" and lines[0]["logger"] == "qsv.test"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", lines[0]["time"])
        setup_logging(_parse())
        logging.getLogger("qsv.test").warning("plain")
        assert re.search(r"WARNING qsv\.test: plain$", capsys.readouterr().err.strip())
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])


def test_no_basicconfig_left_in_product_code() -> None:
    found = []
    for top in ("edge_runtime", "cloud_verifier", "experiments", "benchmarks", "scripts", "qsv"):
        for path in (ROOT / top).rglob("*.py"):
            if "basicConfig(" in path.read_text(encoding="utf-8"):
                found.append(str(path.relative_to(ROOT)))
    assert found == []


# ------------------------------------------------------------------------------------------- qsv verifier --broker
@pytest.mark.parametrize(("argv", "message"), [
    (["--broker", "mqtts://127.0.0.1:8883"], "needs --ca"),
    (["--broker", "mqtt://127.0.0.1", "--ca", "ca.crt"], "need a TLS broker URL"),
    (["--broker", "tcp://127.0.0.1:1883"], "bad broker URL"),
    (["--broker", "mqtt://127.0.0.1:99999"], "bad broker URL"),
    (["--broker", "mqtt://h:1883", "--password", "a", "--password-file", "p"], "not both"),
    ([], None),  # no verifier chosen
])
def test_verifier_arguments_are_checked_first(argv: list[str], message: str | None, capsys) -> None:
    from cloud_verifier.mqtt_service import main

    extra = [] if message is None else ["--echo"]
    with pytest.raises(SystemExit) as exc:
        main(["--worker-id", "w", *extra, *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage: qsv verifier" in err and "Traceback" not in err
    assert (message or "choose a verifier") in err


def test_broker_url_defaults() -> None:
    from cloud_verifier.mqtt_service import broker_url
    from edge_runtime.transport.mqtt_common import BrokerEndpoint

    assert broker_url("mqtt://example.org") == ("mqtt", "example.org", 1883)
    assert broker_url("mqtts://example.org") == ("mqtts", "example.org", 8883)
    assert broker_url("mqtts://[::1]:9883") == ("mqtts", "::1", 9883)
    assert BrokerEndpoint("::1", 9883, ca_file=Path("ca.crt")).url == "mqtts://[::1]:9883"
    assert BrokerEndpoint("127.0.0.1", 1883).url == "mqtt://127.0.0.1:1883"
