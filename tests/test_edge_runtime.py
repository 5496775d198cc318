"""The board runtime ``qsv edge``: request parsing, the "auto" pipelining choice, and the real program over a real
mosquitto broker against a real PyTorch verifier worker (tiny random target; tiny ONNX drafter with the same
vocabulary): requests on the socket, health, bad requests, SIGHUP reload, SIGTERM exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from edge_stack import EdgeProcess, board_config

from edge_runtime.engine import PipelineChooser
from edge_runtime.runtime.api import parse_request
from edge_runtime.runtime.board import GenerationRequest, RequestError
from edge_runtime.runtime.client import EdgeClient, EdgeClientError, generation_of

ROOT = Path(__file__).resolve().parents[1]
TINY_VOCAB = 96  # cloud_verifier's --random-model tiny


@pytest.mark.parametrize(("line", "message"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"op": "shutdown"}', "unknown op"),
    (b'{"prompt": "x", "colour": 1}', "unknown field"),
    (b'{"prompt": 5}', "prompt must be a string"),
    (b'{"prompt_ids": [1, "a"]}', "list of integers"),
    (b'{"prompt_ids": [1, true]}', "list of integers"),
    (b'{"prompt": "x", "prompt_ids": [1]}', "exactly one"),
    (b'{"prompt": ""}', "empty"),
    (b'{"prompt_ids": []}', "empty"),
    (b'{"prompt": "x", "max_new_tokens": 0}', "max_new_tokens"),
    (b'{"prompt": "x", "max_new_tokens": 100000}', "max_new_tokens"),
    (b'{"prompt": "x", "max_new_tokens": "9"}', "max_new_tokens"),
    (b'{"prompt": "x", "seed": -1}', "seed"),
    (b'{"prompt": "x", "seed": 1.5}', "seed"),
    (b'{"prompt": "x", "pipeline": "fast"}', "pipeline"),
    (b'{"prompt": "x", "id": [1]}', "id must be"),
    (b"\xff\xfe", "not JSON"),
])
def test_bad_requests_are_refused_with_a_reason(line: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_request(line)


def test_good_requests_parse() -> None:
    op, request, rid = parse_request(b'{"id": 7, "prompt_ids": [1, 2], "max_new_tokens": 5, "seed": 3, '
                                     b'"pipeline": "off"}')
    assert (op, rid) == ("generate", "7")
    assert request == GenerationRequest("7", None, (1, 2), 5, 3, "off")
    assert parse_request(b'{"op": "health", "id": "h"}') == ("health", None, "h")


def test_auto_pipelining_uses_the_faster_choice_and_keeps_trying_the_other() -> None:
    chooser = PipelineChooser(warmup=3, explore_every=8)
    choices = []
    for _ in range(200):
        predraft = chooser.choose()
        choices.append(predraft)
        chooser.observe(predraft, 3, 0.3 if predraft else 0.2)  # pre-drafting costs more here: 10 vs 15 tokens/s
    assert choices[:6].count(True) == 3  # warm-up alternates
    trials = [i for i, c in enumerate(choices[6:], 6) if c and not choices[i - 1]]  # first round of each trial
    assert 3 <= len(trials) <= 6 and sum(choices[6:]) == 3 * len(trials)  # trials of 3 rounds, now and then ...
    gaps = [b - a for a, b in zip(trials, trials[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # ... less and less often
    assert chooser.rate(False) == pytest.approx(15.0) and chooser.rate(True) == pytest.approx(10.0)
    # when pre-drafting becomes the faster choice (say, the verifier moved to other hardware), a trial finds it
    for _ in range(300):
        predraft = chooser.choose()
        chooser.observe(predraft, 3, 0.1 if predraft else 0.2)
    assert chooser.best() is True


# ------------------------------------------------------------------------------------------------ the real program
@pytest.fixture(scope="module")
def tiny_drafter_export():
    from qsv_tools.export.tiny import tiny_export

    _, export = tiny_export("qwen2", vocab_size=TINY_VOCAB, seed=5, logit_scale=3.0)
    return export


def test_qsv_edge_serves_generations_reloads_and_stops(tmp_path, mosquitto_broker, spawn_verifier,
                                                       tiny_drafter_export) -> None:
    spawn_verifier(mosquitto_broker, "w-edge", verifier=("--random-model", "tiny"))
    config = board_config(tmp_path / "board.yaml", mosquitto_broker, tiny_drafter_export)
    socket_path = tmp_path / "run" / "edge.sock"
    edge = EdgeProcess(config, socket_path)
    try:
        edge.wait_line("serving on")
        with EdgeClient(socket_path, timeout_s=60) as client:
            health = client.health()
            assert health["status"] == "ok" and health["device"] == "dev-b" and health["connected"]
            events = list(client.stream(prompt_ids=[5, 17, 33, 2], max_new_tokens=20, seed=4, request_id="a"))
            run = generation_of([5, 17, 33, 2], events)
            assert len(run.tokens) == 20 and all(0 <= t < TINY_VOCAB for t in run.tokens)
            assert sum(len(r.new_tokens) for r in run.rounds) == 20
            assert max(r.drafted for r in run.rounds) == 3 and all(r.wait_s >= r.verify_s > 0 for r in run.rounds)
            assert {e["id"] for e in events} == {"a"}
            # the same seed gives the same tokens, with pre-drafting forced on or off
            for pipeline in ("off", "always"):
                again = list(client.stream(prompt_ids=[5, 17, 33, 2], max_new_tokens=20, seed=4, pipeline=pipeline))
                assert again[-1]["tokens"] == run.tokens, pipeline
            # a bad request is answered and the connection stays usable
            with pytest.raises(EdgeClientError, match="outside the vocabulary"):
                list(client.stream(prompt_ids=[TINY_VOCAB + 1], max_new_tokens=3))
            with pytest.raises(EdgeClientError, match="no tokenizer"):
                list(client.stream(prompt="hello", max_new_tokens=3))
            assert client.health()["generations"] == 3
        # SIGHUP: a broken config is refused and the old one kept; a good new one is taken
        good = config.read_text()
        config.write_text("schema_version: 1\ncontroller: {mode: static, static_L: 0}\n")
        edge.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert edge.proc.poll() is None
        board_config(config, mosquitto_broker, tiny_drafter_export, static_len=2)
        assert config.read_text() != good
        edge.proc.send_signal(signal.SIGHUP)
        edge.wait_line("reloaded")
        with EdgeClient(socket_path, timeout_s=60) as client:
            events = list(client.stream(prompt_ids=[5, 17, 33, 2], max_new_tokens=12, seed=4))
            assert max(e["drafted"] for e in events if e["event"] == "round") == 2
        # a second runtime on the same socket is refused
        second = subprocess.run([sys.executable, "-m", "qsv", "edge", "--config", str(config), "--socket",
                                 str(socket_path)], capture_output=True, text=True, env=dict(os.environ),
                                timeout=120)
        assert second.returncode == 2 and "another runtime is listening" in second.stderr
        edge.proc.send_signal(signal.SIGTERM)
        assert edge.proc.wait(timeout=30) == 0
        assert not socket_path.exists()
        assert "reload refused" in edge.stderr
        assert "connected to mqtts://" in (tmp_path / "logs" / "dev-b.log").read_text()  # the config's log file
    finally:
        edge.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "/nonexistent/board.yaml"], "No such file"),
    (["--config", "{config}", "--max-new-tokens", "0"], "must be >= 1"),
    (["--config", "{config}", "--pipeline", "sometimes"], "invalid choice"),
    (["--config", "{config}", "--feedback-timeout", "-1"], "feedback-timeout"),
    (["--config", "{config}", "--prompt", "hi"], "no tokenizer"),
    (["--config", "{broken}"], "invalid config"),
])
def test_qsv_edge_bad_command_lines_end_in_one_line(tmp_path, mosquitto_broker, tiny_drafter_export, args,
                                                    message) -> None:
    config = board_config(tmp_path / "board.yaml", mosquitto_broker, tiny_drafter_export)
    broken = tmp_path / "broken.yaml"
    broken.write_text("schema_version: 1\nbroker: {url: 'ftp://x'}\n")
    argv = [a.format(config=config, broken=broken) for a in args]
    out = subprocess.run([sys.executable, "-m", "qsv", "edge", *argv, "--socket", str(tmp_path / "s.sock")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("output", ["text", "json"])
def test_qsv_edge_prompt_mode_with_the_real_small_pair(tmp_path, mosquitto_broker, spawn_verifier, output) -> None:
    """``qsv edge --prompt``: SmolLM2-135M ONNX int8 on the board (tokenizer from the export), the same model in
    PyTorch behind a real verifier worker; text streamed to stdout, or one JSON object."""
    from qsv_tools.export.onnx_export import export_model

    export = export_model("smollm2", int8=True)
    spawn_verifier(mosquitto_broker, f"w-prompt-{output}", verifier=("--model", "smollm2", "--dtype", "fp32"))
    config = board_config(tmp_path / "board.yaml", mosquitto_broker, export, device="dev-c", variant="model.int8.onnx")
    out = subprocess.run([sys.executable, "-m", "qsv", "edge", "--config", str(config), "--prompt",
                          "The weather today is", "--max-new-tokens", "12", "--seed", "3", "--format", output,
                          "--socket", str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    if output == "json":
        result = json.loads(out.stdout)
        assert len(result["tokens"]) == 12 and result["text"].strip() and result["rounds"] >= 1
        assert 0.0 <= result["acceptance"] <= 1.0 and result["precision"] == "fp32"
    else:
        assert out.stdout.strip() and "12 tokens in" in out.stderr and "tokens/round" in out.stderr


# ------------------------------------------------------------------------------------ flashed board, end to end
def _flashed_config(broker, export, static_len: int) -> bytes:  # noqa: ANN001
    """firmware_configs/x86-dev.yaml pointed at the test broker (device dev-a, mutual TLS) and the tiny drafter."""
    from edge_runtime.config import board_config_path

    config = yaml.safe_load(board_config_path("x86-dev").read_text())
    ep = broker.endpoint("dev-a", tls=True)
    secrets = Path(export.directory).parent / "dev-a-secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "username").write_text("dev-a")
    (secrets / "password").write_text(ep.password)
    config["device"]["id"] = "dev-a"
    config["broker"] = {"url": ep.url, "tls": {"enabled": True, "ca_file": str(ep.ca_file),
                                               "cert_file": str(ep.cert_file), "key_file": str(ep.key_file)},
                        "credentials": {"username_file": str(secrets / "username"),
                                        "password_file": str(secrets / "password")}}
    config["model"] = {"onnx_path": str(export.directory / "model.onnx"), "onnxruntime": {"intra_op_threads": 1}}
    config["controller"]["static_L"] = static_len
    config["logging"] = {"level": "INFO"}
    return yaml.safe_dump(config, sort_keys=False).encode()


def _health(socket_path: Path, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with EdgeClient(socket_path, timeout_s=30) as client:
                return client.health()
        except (OSError, EdgeClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_flashed_config_runs_qsv_edge_under_the_board_agent(tmp_path, mosquitto_broker, spawn_verifier,
                                                            tiny_drafter_export) -> None:
    """A board config from firmware_configs/ is flashed over a pty pair to ``qsv board-agent``, which starts
    ``qsv edge`` with it; a request goes through the broker to a real verifier and returns tokens; a new config
    flashed restarts the runtime with it; stopping the agent ends everything."""
    from edge_runtime.flashing.flasher import Flasher
    from edge_runtime.flashing.ptypair import PtyPair

    spawn_verifier(mosquitto_broker, "w-board", verifier=("--random-model", "tiny"))
    socket_path = tmp_path / "edge.sock"
    board_file = tmp_path / "board" / "board.yaml"
    runtime_cmd = (f"{sys.executable} -m qsv edge --config {{config}} --socket {socket_path} "
                   f"--feedback-timeout 30")
    with PtyPair() as (board_port, host_port):
        import serial

        host = serial.Serial(host_port, timeout=0.02)
        agent = subprocess.Popen([sys.executable, "-m", "qsv", "board-agent", board_port, "--config", str(board_file),
                                  "--runtime-cmd", runtime_cmd, "--stop-timeout", "10"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            flasher = Flasher(host, timeout=0.3, retries=100)
            flasher.hello()
            flasher.retries = 5
            assert flasher.flash(_flashed_config(mosquitto_broker, tiny_drafter_export, 3)).verified
            first = _health(socket_path)
            assert first["device"] == "dev-a" and first["config"] == str(board_file)
            with EdgeClient(socket_path, timeout_s=60) as client:
                events = list(client.stream(prompt_ids=[3, 1, 4, 1, 5], max_new_tokens=16, seed=2))
            assert len(events[-1]["tokens"]) == 16
            assert max(e["drafted"] for e in events if e["event"] == "round") == 3
            # a new config: the agent restarts the runtime, which now drafts at most 2 tokens per round
            assert flasher.flash(_flashed_config(mosquitto_broker, tiny_drafter_export, 2)).verified
            deadline = time.monotonic() + 90
            while _alive(first["pid"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(first["pid"])
            second = _health(socket_path)
            assert second["pid"] != first["pid"]
            with EdgeClient(socket_path, timeout_s=60) as client:
                events = list(client.stream(prompt_ids=[3, 1, 4, 1, 5], max_new_tokens=16, seed=2))
            assert max(e["drafted"] for e in events if e["event"] == "round") == 2
        finally:
            agent.terminate()
            agent.wait(30)
            host.close()
    deadline = time.monotonic() + 30
    while _alive(second["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(second["pid"]) and not socket_path.exists()
