"""qsv bench: baseline comparison logic, real sections (C core, MQTT echo through a real mosquitto, ONNX SLM and
drafting on a tiny exported model), unavailable sections with their reason, JSON + PNG outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import pytest

from edge_runtime.bench.cli import main
from edge_runtime.bench.results import HIGHER, LOWER, Metric, compare, load_metrics
from edge_runtime.bench.sections import bench_core, bench_e2e, bench_mqtt, bench_remote, bench_slm
from edge_runtime.config import load_config, parse_config


def test_compare_flags_regressions_in_the_right_direction() -> None:
    base = {"lat": Metric(10.0, "ms", LOWER), "tps": Metric(100.0, "tok/s", HIGHER), "old": Metric(1.0, "x", LOWER),
            "ok": Metric(5.0, "ms", LOWER)}
    cur = {"lat": Metric(12.0, "ms", LOWER), "tps": Metric(80.0, "tok/s", HIGHER), "new": Metric(1.0, "x", LOWER),
           "ok": Metric(5.4, "ms", LOWER)}
    rows, unmatched = compare(cur, base, threshold=0.15)
    by = {r.name: r for r in rows}
    assert by["lat"].ratio == pytest.approx(1.2) and by["lat"].regression and by["lat"].change == pytest.approx(0.2)
    assert by["tps"].ratio == pytest.approx(0.8) and by["tps"].regression and by["tps"].change == pytest.approx(0.25)
    assert not by["ok"].regression  # 8 % worse, under the threshold
    assert unmatched == ["new", "old"]
    rows, _ = compare(cur, base, threshold=0.3)
    assert not any(r.regression for r in rows)
    better = compare({"lat": Metric(5.0, "ms", LOWER)}, {"lat": Metric(10.0, "ms", LOWER)}, 0.0)[0][0]
    assert not better.regression and better.change == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        compare(cur, base, -1)


def test_core_section_measures_every_ell() -> None:
    cfg = parse_config("schema_version: 1\ndevice: {id: b}\nbroker: {url: 'mqtt://x'}\n"
                       "controller: {ell_set: [16, 240], static_ell: 16}\n")
    section = bench_core(cfg, vocab_size=4096, iterations=30)
    assert section.available, section.reason
    assert set(section.metrics) == {"quantize_us[ell=16]", "sample_us[ell=16]", "quantize_us[ell=240]",
                                    "sample_us[ell=240]"}
    assert all(0 < m.value < 1e5 and m.unit == "µs/token" for m in section.metrics.values())


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[int]:
    from qsv_tools.broker.process import free_port, wait_listening

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def cfg_for(port: int, extra: str = "") -> str:
    return f"schema_version: 1\ndevice: {{id: bench-dev}}\nbroker: {{url: 'mqtt://127.0.0.1:{port}'}}\n{extra}"


def test_mqtt_echo_round_trip(plain_broker: int) -> None:
    section = bench_mqtt(parse_config(cfg_for(plain_broker)), count=20)
    assert section.available, section.reason
    rtts = section.details["rtt_ms"]
    assert len(rtts) == 20 and section.details["lost"] == 0
    assert section.details["topic"].startswith("qsv/v1/bench-dev/bench/")
    m = section.metrics
    assert 0 < m["rtt_ms_min"].value <= m["rtt_ms_p50"].value <= m["rtt_ms_p95"].value < 1000


def test_mqtt_unreachable_broker_is_reported() -> None:
    from qsv_tools.broker.process import free_port

    section = bench_mqtt(parse_config(cfg_for(free_port())), count=3, timeout_s=1.0)
    assert not section.available and "cannot connect to mqtt://127.0.0.1" in section.reason
    assert section.summary_line().startswith("[mqtt] not available: ")


def test_mqtt_missing_credentials_are_reported(tmp_path: Path) -> None:
    text = cfg_for(1883).replace("}\n", "}\n", 1).replace(
        "broker: {url: 'mqtt://127.0.0.1:1883'}",
        "broker:\n  url: 'mqtt://127.0.0.1:1883'\n  credentials: {username_file: u.txt, password_file: p.txt}")
    path = tmp_path / "b.yaml"
    path.write_text(text)
    from edge_runtime.config import load_config

    section = bench_mqtt(load_config(path), count=1)
    assert not section.available and "cannot read the broker username" in section.reason and "u.txt" in section.reason


def test_slm_and_e2e_unavailable_without_a_model() -> None:
    cfg = parse_config(cfg_for(1883))
    for section in (bench_slm(cfg, None, [1], ["fp32"]), bench_e2e(cfg, None)):
        assert not section.available and "model.onnx_path unset" in section.reason
    cfg = parse_config(cfg_for(1883, "model: {onnx_path: /nonexistent/model.onnx}\n"))
    assert "not a QSV ONNX export" in bench_slm(cfg, None, [1], ["fp32"]).reason


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qsv_tools.export.onnx_export import export_loaded
    from qsv_tools.export.tiny import tiny_causal_lm

    out = tmp_path_factory.mktemp("tiny-export")
    export_loaded(tiny_causal_lm("llama", vocab_size=64, seed=2, layers=1, hidden=16, heads=2, kv_heads=1), None,
                  out, check_prompt=[3, 4, 5])
    return out


def test_slm_and_e2e_sections_on_a_real_onnx_model(tiny_export: Path) -> None:
    cfg = parse_config(cfg_for(1883, f"model: {{onnx_path: {tiny_export / 'model.onnx'}}}\n"
                                     "controller: {ell_set: [240], static_ell: 240, static_L: 4}\n"))
    section = bench_slm(cfg, None, threads=[1, 2], variants=["fp32", "int8"], prompt_tokens=8, decode_tokens=5)
    assert section.available, section.reason
    assert set(section.metrics) == {f"{kind}_ms_per_token[fp32.t{t}]" for kind in ("prefill", "decode")
                                    for t in (1, 2)}
    assert set(section.details["skipped"]) == {"int8/t1", "int8/t2"}  # this export has no int8 model: said why
    assert "no 'int8' model" in section.details["skipped"]["int8/t1"]
    assert all(m.value > 0 for m in section.metrics.values())
    e2e = bench_e2e(cfg, None, tokens=20)
    assert e2e.available, e2e.reason
    assert e2e.details["tokens"] >= 20 and e2e.details["L"] == 4 and e2e.metrics["draft_tokens_per_s"].value > 0


def test_remote_end_to_end_through_a_secured_broker_to_a_real_verifier(
    tiny_export: Path, mosquitto_broker, tmp_path: Path  # noqa: ANN001 - conftest's DevBroker
) -> None:
    """The networked runtime (ONNX drafter + codec + RemoteVerifier) against the batching PyTorch verifier behind
    an MQTT worker, through the password-protected listener of the development broker."""
    from cloud_verifier.mqtt_service import MqttVerifierService, WorkerConfig
    from cloud_verifier.service import ServiceConfig, VerifierService
    from cloud_verifier.target import TargetModel
    from qsv_tools.export.tiny import tiny_causal_lm

    vocab_hash = "ab" * 32
    (tmp_path / "user").write_text("dev-c\n")
    (tmp_path / "pass").write_text(mosquitto_broker.passwords["dev-c"] + "\n")
    cfg_path = tmp_path / "board.yaml"
    cfg_path.write_text(
        "schema_version: 1\ndevice: {id: dev-c}\n"
        f"broker:\n  url: 'mqtt://127.0.0.1:{mosquitto_broker.plain_port}'\n"
        "  credentials: {username_file: user, password_file: pass}\n"
        f"model: {{onnx_path: {tiny_export / 'model.onnx'}, vocab_hash: '{vocab_hash}'}}\n"
        "controller: {ell_set: [240], static_ell: 240, static_L: 3}\n")
    from edge_runtime.config import load_config

    cfg = load_config(cfg_path)
    target = TargetModel(tiny_causal_lm("llama", vocab_size=64, seed=5, layers=1, hidden=16, heads=2, kv_heads=1),
                         "cpu")
    core = VerifierService(target, ServiceConfig(vocab_hash=bytes.fromhex(vocab_hash), worker_id="bench-w",
                                              max_wait_s=0.0005)).start()
    worker = MqttVerifierService(core, mosquitto_broker.endpoint("verifier"), WorkerConfig("bench-w")).start()
    try:
        section = bench_remote(cfg, None, tokens=24, timeout_s=15.0)  # generous: the first torch forward is slow
    finally:
        worker.stop()
    assert section.available, section.reason
    assert section.details["tokens"] == 24 and section.details["worker"] == "bench-w"
    assert section.details["rounds"] <= 24 and section.details["uplink_bytes"] > 0
    assert section.metrics["tokens_per_s"].value > 0 and 1 <= section.metrics["tokens_per_round"].value <= 4
    # nobody verifying for this device's vocabulary hash: reported, not raised
    wrong = load_config(cfg_path)
    wrong = type(wrong)(**{**wrong.__dict__, "device": type(wrong.device)(id="dev-b")})
    (tmp_path / "user").write_text("dev-b\n")
    (tmp_path / "pass").write_text(mosquitto_broker.passwords["dev-b"] + "\n")
    missing = bench_remote(wrong, None, tokens=4, timeout_s=0.5)
    assert not missing.available and "no verifier answered" in missing.reason


def test_cli_writes_json_png_and_flags_regressions(plain_broker: int, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "board.yaml"
    cfg.write_text(cfg_for(plain_broker))
    common = ["--config", str(cfg), "--sections", "core,slm,mqtt", "--vocab-size", "2048", "--core-iterations", "20",
              "--mqtt-count", "10"]
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    out = capsys.readouterr().out
    assert "[slm] not available: no model configured" in out and "[mqtt] 3 metrics" in out
    doc = json.loads((tmp_path / "base" / "bench.json").read_text())
    assert doc["meta"]["device_id"] == "bench-dev" and not doc["sections"]["slm"]["available"]
    assert "mqtt.rtt_ms_p50" in doc["metrics"] and "core.quantize_us[ell=240]" in doc["metrics"]
    image = matplotlib.image.imread(tmp_path / "base" / "bench.png")
    assert image.shape[0] > 500 and image.shape[1] > 500
    # a baseline 100x faster than anything real: every metric regresses
    baseline = json.loads((tmp_path / "base" / "bench.json").read_text())
    for metric in baseline["metrics"].values():
        metric["value"] /= 100.0
    (tmp_path / "fast.json").write_text(json.dumps(baseline))
    assert len(load_metrics(tmp_path / "fast.json")) == len(doc["metrics"])
    code = main([*common, "--out", str(tmp_path / "cmp"), "--baseline", str(tmp_path / "fast.json"),
                 "--fail-on-regression"])
    assert code == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and f"{len(doc['metrics'])} regression(s)" in out
    cmp_doc = json.loads((tmp_path / "cmp" / "bench.json").read_text())
    assert sorted(cmp_doc["baseline"]["regressions"]) == sorted(doc["metrics"])
    assert all(c["ratio"] > 1.15 and c["regression"] for c in cmp_doc["baseline"]["comparisons"])


def test_cli_rejects_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("schema_version: 1\ndevice: {id: x}\nbroker: {url: 'ftp://x'}\n")
    assert main(["--config", str(cfg), "--out", str(tmp_path)]) == 2
    assert f"{cfg}:3:" in capsys.readouterr().err


def test_mqtt_echo_through_the_secured_broker_stays_in_the_device_bench_topics(
    mosquitto_broker, tmp_path: Path  # noqa: ANN001 - conftest's DevBroker
) -> None:
    """The generated ACL lets a device echo on qsv/v1/<its id>/bench/# and nowhere else."""
    (tmp_path / "user").write_text("dev-c\n")
    (tmp_path / "pass").write_text(mosquitto_broker.passwords["dev-c"] + "\n")
    cfg_path = tmp_path / "board.yaml"
    cfg_path.write_text(
        "schema_version: 1\ndevice: {id: dev-c}\n"
        f"broker:\n  url: 'mqtt://127.0.0.1:{mosquitto_broker.plain_port}'\n"
        "  credentials: {username_file: user, password_file: pass}\n")
    cfg = load_config(cfg_path)
    own = bench_mqtt(cfg, count=5)
    assert own.available, own.reason
    assert own.metrics["rtt_ms_p50"].value > 0
    foreign = bench_mqtt(cfg, count=1, timeout_s=2.0, topic="qsv/v1/dev-a/bench/x")
    assert not foreign.available and "ACL" in foreign.reason  # refused SUBACK or publish silently dropped
