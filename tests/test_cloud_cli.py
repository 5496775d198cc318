"""``qsv verifier-check`` (cloud_verifier.cli), JSON-line logs (qsv_wire.logs) and the Prometheus endpoint."""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from cloud_verifier.cli import main
from cloud_verifier.metrics import MetricsRegistry, MetricsServer
from qsv_wire.logs import JsonLineFormatter


def test_check_prints_config(capsys) -> None:
    assert main(["--random-model", "tiny", "--device", "cpu", "--max-batch", "8", "--max-wait-ms", "2",
                 "--memory-budget-mb", "64", "--metrics-port", "0"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["max_batch"] == 8 and cfg["max_wait_s"] == pytest.approx(0.002)
    assert cfg["memory_budget_bytes"] == 64 << 20 and cfg["vocab_size"] == 96 and cfg["device"] == "cpu"
    assert cfg["metrics_url"].startswith("http://127.0.0.1:")


def test_bad_limits_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--random-model", "tiny", "--max-batch", "0"])
    assert "--max-batch must be >= 1" in capsys.readouterr().err


def test_json_line_logs() -> None:
    record = logging.LogRecord("cloud_verifier.x", logging.INFO, __file__, 1, "round %d ok", (3,), None)
    entry = json.loads(JsonLineFormatter().format(record))
    assert entry["message"] == "round 3 ok" and entry["level"] == "INFO" and entry["logger"] == "cloud_verifier.x"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


def test_metrics_text_format_over_http() -> None:
    reg = MetricsRegistry()
    reg.counter("rounds_total", "rounds")
    reg.inc("rounds_total", 3)
    reg.counter("errors_total", "errors")
    reg.inc("errors_total", reason="EVICTED")
    reg.gauge("queue_depth", "queued", lambda: 2)
    reg.histogram("round_latency_seconds", "latency", (0.01, 0.1))
    for v in (0.005, 0.05, 0.5):
        reg.observe("round_latency_seconds", v)
    server = MetricsServer(reg, port=0).start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
    finally:
        server.stop()
    assert "# TYPE qsv_verifier_rounds_total counter\nqsv_verifier_rounds_total 3.0" in body
    assert 'qsv_verifier_errors_total{reason="EVICTED"} 1.0' in body
    assert "qsv_verifier_queue_depth 2.0" in body
    assert 'qsv_verifier_round_latency_seconds_bucket{le="0.01"} 1' in body
    assert 'qsv_verifier_round_latency_seconds_bucket{le="0.1"} 2' in body
    assert 'qsv_verifier_round_latency_seconds_bucket{le="+Inf"} 3' in body
    assert "qsv_verifier_round_latency_seconds_count 3" in body


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "no-such-model"], "neither a known model"),
    (["--model", "smollm2", "--dtype", "fp16", "--device", "cpu"], "fp16 runs on CUDA only"),
    (["--random-model", "tiny", "--max-tv", "-1"], "must be >= 0"),
    (["--model", "smollm2", "--dtype", "int4"], "invalid choice"),
])
def test_bad_precision_arguments_end_in_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    from cloud_verifier.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--metrics-port", "-1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
