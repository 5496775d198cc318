"""The ``qsv`` command (qsv/cli.py): subcommands, help, errors, lazy imports; the shared logging setup
(qsv_wire/logs.py); the verifier's ``--broker URL``."""

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

from qsv.cli import COMMANDS
from qsv_wire.logs import add_logging_args, log_level, setup_logging

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
    from qsv_wire.mqtt_common import BrokerEndpoint

    assert broker_url("mqtt://example.org") == ("mqtt", "example.org", 1883)
    assert broker_url("mqtts://example.org") == ("mqtts", "example.org", 8883)
    assert broker_url("mqtts://[::1]:9883") == ("mqtts", "::1", 9883)
    assert BrokerEndpoint("::1", 9883, ca_file=Path("ca.crt")).url == "mqtts://[::1]:9883"
    assert BrokerEndpoint("127.0.0.1", 1883).url == "mqtt://127.0.0.1:1883"


# ------------------------------------------------------------------------------------ bad input: never a traceback
# Every subcommand with bad input (paths, numbers, ports, model names, URLs, empty strings) must end with a one-line
# error and exit status 2 (argparse style) before anything heavy is loaded, never with a Python traceback. {name}
# placeholders are filled from the fixture below; a third element lists other accepted exit statuses (rare, each
# justified in a comment).
MISSING = "{tmp}/no-such-dir/x.yaml"
BAD_INPUT: list[tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], tuple[int, ...]]] = [
    # qsv board-agent
    ("agent-no-port", ("board-agent", "--config", "{tmp}/b1/board.yaml")),
    ("agent-missing-port", ("board-agent", "{tmp}/no-such-tty", "--config", "{tmp}/b2/board.yaml")),
    ("agent-port-is-dir", ("board-agent", "{dir}", "--config", "{tmp}/b3/board.yaml")),
    ("agent-baud-zero", ("board-agent", "loop://", "--config", "{tmp}/b4/board.yaml", "--baud", "0")),
    ("agent-baud-text", ("board-agent", "loop://", "--config", "{tmp}/b5/board.yaml", "--baud", "fast")),
    ("agent-config-is-dir", ("board-agent", "loop://", "--config", "{dir}")),
    ("agent-config-under-file", ("board-agent", "loop://", "--config", "{file}/board.yaml")),
    ("agent-config-empty", ("board-agent", "loop://", "--config", "")),
    ("agent-max-bytes-zero", ("board-agent", "loop://", "--config", "{tmp}/b6/board.yaml", "--max-config-bytes", "0")),
    ("agent-stop-timeout-neg", ("board-agent", "loop://", "--config", "{tmp}/b7/board.yaml", "--stop-timeout", "-1")),
    ("agent-stop-timeout-nan", ("board-agent", "loop://", "--config", "{tmp}/b8/board.yaml", "--stop-timeout", "nan")),
    ("agent-runtime-cmd-empty", ("board-agent", "loop://", "--config", "{tmp}/b9/board.yaml", "--runtime-cmd", "")),
    ("agent-runtime-cmd-quote", ("board-agent", "loop://", "--config", "{tmp}/ba/board.yaml", "--runtime-cmd",
                                 "qsv edge --config '{config}")),
    ("agent-runtime-cmd-missing", ("board-agent", "loop://", "--config", "{tmp}/bb/board.yaml", "--runtime-cmd",
                                   "/no/such/qsv-edge --config {config}")),
    ("agent-rollback-config-dir", ("board-agent", "--rollback", "--config", "{dir}")),
    # qsv certs
    ("certs-no-out", ("certs",)),
    ("certs-out-is-file", ("certs", "--out", "{file}")),
    ("certs-out-under-file", ("certs", "--out", "{file}/pki")),
    ("certs-fleet-missing", ("certs", "--out", "{tmp}/pki1", "--fleet", MISSING)),
    ("certs-fleet-is-dir", ("certs", "--out", "{tmp}/pki2", "--fleet", "{dir}")),
    ("certs-fleet-garbage", ("certs", "--out", "{tmp}/pki3", "--fleet", "{garbage}")),
    ("certs-device-id-empty", ("certs", "--out", "{tmp}/pki4", "--device-id", "")),
    ("certs-device-id-bad", ("certs", "--out", "{tmp}/pki5", "--device-id", "no spaces/allowed")),
    ("certs-host-empty", ("certs", "--out", "{tmp}/pki6", "--host", "")),
    # qsv broker
    ("broker-workdir-is-file", ("broker", "--workdir", "{file}", "--generate-only")),
    ("broker-tls-port-zero", ("broker", "--workdir", "{tmp}/w1", "--generate-only", "--tls-port", "0")),
    ("broker-tls-port-70000", ("broker", "--workdir", "{tmp}/w2", "--generate-only", "--tls-port", "70000")),
    ("broker-tls-port-text", ("broker", "--workdir", "{tmp}/w3", "--generate-only", "--tls-port", "abc")),
    ("broker-verifier-port-neg", ("broker", "--workdir", "{tmp}/w4", "--generate-only", "--verifier-port", "-1")),
    ("broker-plain-port-70000", ("broker", "--workdir", "{tmp}/w5", "--generate-only", "--insecure-dev",
                                 "--plain-port", "70000")),
    ("broker-same-ports", ("broker", "--workdir", "{tmp}/w6", "--generate-only", "--tls-port", "8883",
                           "--verifier-port", "8883")),
    ("broker-host-empty", ("broker", "--workdir", "{tmp}/w7", "--generate-only", "--host", "")),
    ("broker-fleet-missing", ("broker", "--workdir", "{tmp}/w8", "--generate-only", "--fleet", MISSING)),
    # qsv verifier
    ("verifier-broker-ftp", ("verifier", "--worker-id", "w", "--echo", "--broker", "ftp://x")),
    ("verifier-broker-port", ("verifier", "--worker-id", "w", "--echo", "--broker", "mqtt://:99999")),
    ("verifier-broker-no-host", ("verifier", "--worker-id", "w", "--echo", "--broker", "mqtt://:1883")),
    ("verifier-broker-empty", ("verifier", "--worker-id", "w", "--echo", "--broker", "")),
    ("verifier-worker-id-empty", ("verifier", "--worker-id", "", "--echo")),
    ("verifier-rate-neg", ("verifier", "--worker-id", "w", "--echo", "--rate", "-1")),
    ("verifier-burst-text", ("verifier", "--worker-id", "w", "--echo", "--burst", "lots")),
    ("verifier-idle-zero", ("verifier", "--worker-id", "w", "--echo", "--idle-timeout", "0")),
    ("verifier-max-batch-zero", ("verifier", "--worker-id", "w", "--random-model", "tiny", "--max-batch", "0")),
    ("verifier-unknown-model", ("verifier", "--worker-id", "w", "--model", "gpt-5")),
    ("verifier-model-missing", ("verifier", "--worker-id", "w", "--model", "{tmp}/none.gguf")),
    ("verifier-ca-missing", ("verifier", "--worker-id", "w", "--echo", "--broker", "mqtts://h", "--ca", MISSING)),
    ("verifier-ca-is-dir", ("verifier", "--worker-id", "w", "--echo", "--broker", "mqtts://h", "--ca", "{dir}")),
    ("verifier-password-file-dir", ("verifier", "--worker-id", "w", "--echo", "--password-file", "{dir}")),
    ("verifier-device-bogus", ("verifier", "--worker-id", "w", "--random-model", "tiny", "--device", "gpu9")),
    ("verifier-max-tv-neg", ("verifier", "--worker-id", "w", "--random-model", "tiny", "--max-tv", "-1")),
    # qsv verifier-check
    ("check-unknown-model", ("verifier-check", "--model", "gpt-5")),
    ("check-model-is-file", ("verifier-check", "--model", "{file}")),
    ("check-metrics-port-70000", ("verifier-check", "--random-model", "tiny", "--metrics-port", "70000")),
    ("check-metrics-port-text", ("verifier-check", "--random-model", "tiny", "--metrics-port", "abc")),
    ("check-threads-neg", ("verifier-check", "--random-model", "tiny", "--threads", "-3")),
    ("check-max-wait-neg", ("verifier-check", "--random-model", "tiny", "--max-wait-ms", "-1")),
    ("check-idle-zero", ("verifier-check", "--random-model", "tiny", "--idle-timeout", "0")),
    ("check-max-history-zero", ("verifier-check", "--random-model", "tiny", "--max-history", "0")),
    ("check-device-bogus", ("verifier-check", "--random-model", "tiny", "--device", "tpu")),
    ("check-metrics-host-empty", ("verifier-check", "--random-model", "tiny", "--metrics-host", "")),
    # qsv local
    ("local-max-new-tokens-zero", ("local", "--max-new-tokens", "0")),
    ("local-max-new-tokens-text", ("local", "--max-new-tokens", "many")),
    ("local-unknown-draft", ("local", "--draft", "gpt-5")),
    ("local-target-missing", ("local", "--target", "{tmp}/none.gguf")),
    ("local-target-empty", ("local", "--target", "")),
    ("local-temperature-nan", ("local", "--temperature", "nan")),
    ("local-start-neg", ("local", "--start", "-1")),
    ("local-ell-zero", ("local", "--ell", "0")),
    # qsv experiment (and its subcommands)
    ("experiment-prompts-zero", ("experiment", "--prompts", "0")),
    ("experiment-max-new-tokens-neg", ("experiment", "--max-new-tokens", "-1")),
    ("experiment-vocab-zero", ("experiment", "--vocab-size", "0")),
    ("experiment-scenario-bogus", ("experiment", "--scenarios", "5g")),
    ("experiment-scenarios-empty", ("experiment", "--scenarios", "")),
    ("experiment-policy-bogus", ("experiment", "--policies", "warp:3:240")),
    ("experiment-traces-missing", ("experiment", "--traces", MISSING)),
    ("experiment-traces-dir", ("experiment", "--traces", "{dir}")),
    ("experiment-traces-garbage", ("experiment", "--traces", "{garbage}")),
    ("experiment-out-is-file", ("experiment", "--out", "{file}")),
    ("experiment-rtt-neg", ("experiment", "--rtt-ms", "-5")),
    ("experiment-lr-zero", ("experiment", "--ddqn-lr", "0")),
    ("experiment-ddqn-load-missing", ("experiment", "--ddqn-load", "{tmp}/no-such-dir")),
    ("experiment-episodes-neg", ("experiment", "--ddqn-episodes", "-1")),
    ("experiment-record-prompts", ("experiment", "record", "--prompts", "x")),
    ("experiment-record-out-file", ("experiment", "record", "--out", "{file}")),
    # qsv demo
    ("demo-prompts-zero", ("demo", "--prompts", "0")),
    ("demo-max-new-tokens-text", ("demo", "--max-new-tokens", "ten")),
    ("demo-json-no-dir", ("demo", "--json", MISSING)),
    ("demo-json-is-dir", ("demo", "--json", "{dir}")),
    ("demo-workdir-is-file", ("demo", "--workdir", "{file}")),
    ("demo-temperature-neg", ("demo", "--temperature", "-1")),
    ("demo-edge-threads-zero", ("demo", "--edge-threads", "0")),
    # qsv flash
    ("flash-no-port", ("flash",)),
    ("flash-missing-port", ("flash", "{tmp}/no-such-tty", "{yaml}")),
    ("flash-config-missing", ("flash", "loop://", MISSING)),
    ("flash-config-is-dir", ("flash", "loop://", "{dir}")),
    ("flash-config-unreadable", ("flash", "loop://", "{unreadable}")),
    ("flash-chunk-zero", ("flash", "loop://", "--read-hash", "--chunk-size", "0")),
    ("flash-chunk-huge", ("flash", "loop://", "--read-hash", "--chunk-size", "100000")),
    ("flash-timeout-zero", ("flash", "loop://", "--read-hash", "--timeout", "0")),
    ("flash-timeout-text", ("flash", "loop://", "--read-hash", "--timeout", "soon")),
    ("flash-retries-neg", ("flash", "loop://", "--read-hash", "--retries", "-1")),
    ("flash-baud-zero", ("flash", "loop://", "--read-hash", "--baud", "0")),
    ("flash-port-empty", ("flash", "", "--read-hash")),
    # qsv config
    ("config-unreadable", ("config", "{unreadable}")),
    ("config-missing", ("config", MISSING)),
    ("config-is-dir", ("config", "{dir}")),
    ("config-empty-path", ("config", "")),
    # qsv bench
    ("bench-threshold-neg", ("bench", "--threshold", "-1")),
    ("bench-config-missing", ("bench", "--config", MISSING)),
    ("bench-config-is-dir", ("bench", "--config", "{dir}")),
    ("bench-config-garbage", ("bench", "--config", "{garbage}")),
    ("bench-baseline-missing", ("bench", "--baseline", MISSING)),
    ("bench-baseline-garbage", ("bench", "--baseline", "{garbage}")),
    ("bench-baseline-unreadable", ("bench", "--baseline", "{unreadable}")),
    ("bench-out-is-file", ("bench", "--out", "{file}")),
    ("bench-sections-bogus", ("bench", "--sections", "gpu")),
    ("bench-variants-bogus", ("bench", "--variants", "fp64")),
    ("bench-threads-zero", ("bench", "--threads", "0")),
    ("bench-vocab-zero", ("bench", "--vocab-size", "0")),
    ("bench-mqtt-timeout-neg", ("bench", "--mqtt-timeout", "-1")),
    ("bench-export-dir-missing", ("bench", "--export-dir", "{tmp}/no-such-export")),
    ("bench-name-empty", ("bench", "--name", "")),
    # qsv models
    ("models-unknown", ("models", "path", "gpt-5")),
    ("models-fetch-unknown", ("models", "fetch", "gpt-5")),
    ("models-cache-is-file", ("models", "--cache", "{file}", "list")),
    ("models-no-command", ("models",)),
    # qsv export
    ("export-unknown-model", ("export", "gpt-5")),
    ("export-model-missing", ("export", "{tmp}/none.gguf")),
    ("export-opset-zero", ("export", "smollm2", "--opset", "0")),
    ("export-opset-text", ("export", "smollm2", "--opset", "eighteen")),
    ("export-out-is-file", ("export", "smollm2", "--out", "{file}")),
    # qsv edge
    ("edge-config-missing", ("edge", "--config", MISSING)),
    ("edge-config-is-dir", ("edge", "--config", "{dir}")),
    ("edge-config-garbage", ("edge", "--config", "{garbage}")),
    ("edge-max-new-tokens-zero", ("edge", "--config", "{yaml}", "--prompt", "hi", "--max-new-tokens", "0")),
    ("edge-max-new-tokens-text", ("edge", "--config", "{yaml}", "--prompt", "hi", "--max-new-tokens", "x")),
    ("edge-feedback-timeout-neg", ("edge", "--config", "{yaml}", "--feedback-timeout", "-1")),
    ("edge-seed-neg", ("edge", "--config", "{yaml}", "--seed", "-1")),
    ("edge-socket-is-dir", ("edge", "--config", "{yaml}", "--socket", "{dir}")),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    """Runs every BAD_INPUT case once, four at a time (each is a fresh ``python -m qsv``)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "a-dir").mkdir()
    (tmp / "plain.txt").write_text("just text\n")
    (tmp / "garbage.yaml").write_bytes(b"\xff\xfe: [unclosed\n\x00")
    shutil.copy(ROOT / "firmware_configs" / "x86-dev.yaml", tmp / "board.yaml")
    shutil.copy(ROOT / "firmware_configs" / "x86-dev.yaml", tmp / "unreadable.yaml")
    (tmp / "unreadable.yaml").chmod(0)
    names = {"tmp": str(tmp), "dir": str(tmp / "a-dir"), "file": str(tmp / "plain.txt"),
             "garbage": str(tmp / "garbage.yaml"), "yaml": str(tmp / "board.yaml"),
             "unreadable": str(tmp / "unreadable.yaml")}
    env = dict(ENV, QSV_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1", XDG_RUNTIME_DIR=str(tmp / "run"))

    def run(case: tuple) -> tuple[str, tuple[subprocess.CompletedProcess, float]]:
        argv = [arg.format(**names) if "{" in arg and "{config}" not in arg else arg for arg in case[1]]
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "qsv", *argv], capture_output=True, text=True, timeout=60,
                                  cwd=tmp, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:  # e.g. a service that accepted the bad input and kept running
            out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                        for x in (exc.stdout, exc.stderr))
            proc = subprocess.CompletedProcess(exc.cmd, -9, out, err + "\n[still running after 60 s: killed]")
        return case[0], (proc, time.monotonic() - start)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, [case for case in BAD_INPUT if not _root_skips(case)]))


def _root_skips(case: tuple) -> bool:
    """root reads files whatever their mode: the unreadable-file cases need an ordinary user."""
    return os.geteuid() == 0 and any("{unreadable}" in arg for arg in case[1])


def test_bad_input_table_is_broad() -> None:
    ids = [case[0] for case in BAD_INPUT]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    commands = {case[1][0] for case in BAD_INPUT}
    assert commands == set(COMMANDS), set(COMMANDS) - commands


@pytest.mark.parametrize("case", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_a_one_line_error_not_a_traceback(case: tuple, bad_input_results: dict) -> None:
    if _root_skips(case):
        pytest.skip("running as root: no file is unreadable")
    proc, seconds = bad_input_results[case[0]]
    allowed = (2, *(case[2] if len(case) > 2 else ()))
    shown = f"qsv {' '.join(case[1])}\nexit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    assert proc.returncode in allowed, shown
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or line.startswith("qsv")]
    assert errors, shown  # says what is wrong
    assert seconds < 30, f"{shown}\ntook {seconds:.1f}s: arguments must be checked before anything is loaded"


@pytest.mark.parametrize("command", [("local", "--max-new-tokens", "0"), ("demo", "--max-new-tokens", "-3"),
                                     ("edge", "--config", "x.yaml", "--prompt", "hi", "--max-new-tokens", "0"),
                                     ("experiment", "--max-new-tokens", "0"),
                                     ("verifier", "--worker-id", "w", "--model", "qwen-target", "--max-batch", "0")])
def test_bad_numbers_fail_before_models_load(command: tuple[str, ...]) -> None:
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qsv", *command], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=ENV)
    seconds = time.monotonic() - start
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < 5, f"`qsv {' '.join(command)}` took {seconds:.1f}s to refuse a bad number"
