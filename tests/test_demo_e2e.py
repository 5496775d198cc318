"""The end-to-end demo (qsv_tools.demo, ``bash scripts/demo.sh``).

Fast tests: the text stream, the report arithmetic, and the demo's edge loop over a real mosquitto broker against a
real PyTorch verifier worker process (tiny random target, ToySLM drafter) with both controllers.
Slow tests (marked ``slow``; SmolLM2-135M only, fetched and exported once, then cached): the quick profile end to end
as a subprocess, checking the streamed rounds against the table, and that every process is gone after the run and
after a SIGINT / SIGTERM / SIGKILL of the demo in the middle of start-up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doubles.toy import ToyModel, ToySLM

from edge_runtime.controller import ModelBasedController, StaticController
from edge_runtime.drafter import DraftConfig, Drafter
from edge_runtime.engine import Generation, RoundEngine, RoundStat
from edge_runtime.runtime.board import TextStream
from edge_runtime.transport.remote import EdgeTransportConfig, MqttLink, RemoteVerifier
from qsv_tools.demo import report
from qsv_tools.demo.baseline import BaselineRun
from qsv_wire import codec

ROOT = Path(__file__).resolve().parents[1]
TINY_VOCAB = 96  # cloud_verifier.cli.random_target("tiny")


def test_text_stream_hands_out_deltas_and_recovers_from_a_changed_prefix() -> None:
    table = {1: "Hel", 2: "lo", 3: " wor", 4: "ld"}
    stream = TextStream(lambda ids: "".join(table[i] for i in ids))
    assert stream.delta([1]) == "Hel"
    assert stream.delta([1, 2, 3]) == "lo wor"
    assert stream.delta([1, 2, 3, 4]) == "ld"
    assert stream.text == "Hello world"
    # a decode that rewrites earlier text (e.g. a completed multi-byte character): the whole text is handed out
    stream = TextStream(lambda ids: "ab" if len(ids) == 1 else "xyz")
    assert stream.delta([1]) == "ab"
    assert stream.delta([1, 2]) == "xyz"


def _stat(index: int, drafted: int, accepted: int, new: int, ell: int = 240, vocab: int = 1000) -> RoundStat:
    return RoundStat(index, drafted, ell, accepted, list(range(new)), lattice_bytes=10 * drafted,
                     token_id_bits=drafted * codec.token_bits(vocab),
                     bound_bits=drafted * (16 + codec.bound_bits(vocab, ell)), draft_s=0.1,
                     wait_s=0.3, verify_s=0.25, feedback_s=0.05)


def test_summary_table_and_json_numbers() -> None:
    vocab = 1000
    edge = Generation([1, 2], tokens=list(range(10)), rounds=[_stat(0, 3, 3, 4), _stat(1, 3, 1, 2), _stat(2, 3, 3, 4)],
                   prefill_s=1.0, decode_s=2.0)
    int8 = BaselineRun([1, 2], tokens=list(range(10)), prefill_s=0.5, decode_s=5.0)  # 2.00 tokens/s
    fp32 = BaselineRun([1, 2], tokens=list(range(10)), prefill_s=0.5, decode_s=10.0)  # 1.00 tokens/s
    summary = report.Summary([edge], {"fp32": [fp32], "int8": [int8]}, "fp32",
                             {"precision": "fp32", "reason": "pinned"}, 3.5, 4.25, vocab, 4e6)
    table = summary.table()
    assert re.search(r"cloud only, int8 \(fastest\)\s+10\s+0\.5\s+5\.0\s+2\.00\s+1\.82", table), table
    assert re.search(r"cloud only, fp32 \(verifier's precision\)\s+10\s+0\.5\s+10\.0\s+1\.00\s+0\.95", table)
    assert re.search(r"QSV \(edge draft \+ cloud verify, fp32\)\s+10\s+1\.0\s+2\.0\s+5\.00\s+3\.33", table)
    assert "vs cloud only in the same precision (fp32): 5.00×" in table
    assert "vs the fastest cloud-only run (int8): 2.50× (with prefill: 1.83×)" in table
    assert "ready 3.5 s after it was started; first round answered at 4.2 s" in table
    assert "rounds 3 · drafted 9 · accepted 7 · acceptance 0.778 · 3.33 tokens/round · L used 3 · ℓ used 240" in table
    per_token = 10 + codec.token_bits(vocab) / 8
    bound = (16 + codec.bound_bits(vocab, 240)) / 8
    assert f"uplink per draft token: {per_token:.1f} B measured" in table
    assert f"fixed-length bound {bound:,.1f} B" in table
    assert f"{per_token / bound:.3f}× the bound" in table
    figures = summary.as_dict()
    assert figures["qsv_decode_tokens_per_s"] == pytest.approx(5.0)
    assert figures["cloud_only_decode_tokens_per_s"] == pytest.approx({"fp32": 1.0, "int8": 2.0})
    assert figures["speedup_vs_same_dtype"] == pytest.approx(5.0)
    assert figures["speedup_vs_fastest_cloud_only"] == pytest.approx(2.5)
    assert figures["fastest_cloud_only_dtype"] == "int8" and figures["verifier_dtype"] == "fp32"
    assert figures["acceptance"] == pytest.approx(7 / 9) and figures["tokens_per_round"] == pytest.approx(10 / 3)
    assert figures["uplink_bytes_per_draft_token"] == pytest.approx(per_token)
    assert figures["verifier_ready_s"] == 3.5


def test_round_line_columns() -> None:
    line = report.round_line(_stat(4, 3, 2, 3), " text")
    fields = line.split()
    assert fields[:6] == ["5", "3", "240", "2/3", "+3", "30"]
    assert line.endswith("' text'")


def _edge_run(broker, controller, tokens: int, seed: int) -> Generation:  # noqa: ANN001
    slm = ToySLM(ToyModel(vocab_size=TINY_VOCAB, seed=3, scale=3.0))
    drafter = Drafter(slm, DraftConfig(ell=240, temperature=0.8), seed=seed)
    remote = RemoteVerifier("dev-a", broker.endpoint("dev-a"), EdgeTransportConfig(feedback_timeout_s=30.0,
                                                                                  open_timeout_s=30.0)).connect()
    seen: list[RoundStat] = []
    try:
        engine = RoundEngine(drafter, MqttLink(remote), controller, pipeline="auto")
        run = engine.generate([5, 17, 33, 2], tokens, seed, on_round=lambda run, stat: seen.append(stat))
    finally:
        remote.disconnect()
    assert seen == run.rounds
    # what the verifier committed is what the edge reports (a last round drafted at budget 1 may commit one more)
    assert remote.generated[: len(run.tokens)] == run.tokens and len(remote.generated) <= len(run.tokens) + 1
    return run


@pytest.mark.parametrize("kind", ["static", "model"])
def test_edge_generation_over_mqtt_against_a_pytorch_worker(mosquitto_broker, spawn_verifier, kind: str) -> None:
    spawn_verifier(mosquitto_broker, "w-demo", verifier=("--random-model", "tiny"))
    controller = StaticController(3, 240) if kind == "static" else ModelBasedController(
        TINY_VOCAB, lengths=range(1, 7), ells=(16, 240), early_stop=False, explore_rounds=1, seed=1)
    run = _edge_run(mosquitto_broker, controller, 30, seed=7)
    assert len(run.tokens) == 30
    assert sum(len(r.new_tokens) for r in run.rounds) == 30
    for r in run.rounds:
        assert 1 <= r.drafted and 0 <= r.accepted <= r.drafted
        assert 1 <= len(r.new_tokens) <= r.accepted + 1
        assert r.lattice_bytes > 0 and 8 * r.lattice_bytes < r.bound_bits
        assert r.wait_s >= r.verify_s > 0
    assert run.decode_s > 0 and run.prefill_s > 0
    if kind == "static":
        assert {r.ell for r in run.rounds} == {240} and max(r.drafted for r in run.rounds) == 3
    else:
        assert {r.ell for r in run.rounds} == {16, 240}  # explored both resolutions


# ------------------------------------------------------------------------------------------- the demo as a process
ROUND_RE = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/(\d+)\s+\+(\d+)\s+(\d+)\s+([\d.]+)\s")


def _demo_cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qsv", "demo", "--quick", "--prompts", "1", "--max-new-tokens", "8",
            "--workdir", str(workdir), *extra]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_demo_streams_rounds_and_prints_the_table(tmp_path: Path) -> None:
    cmd = _demo_cmd(tmp_path / "wd", "--json", str(tmp_path / "demo.json"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1100, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    # one block per prompt run: first with pipelining (the demo's default, auto), then serial (pipelining off)
    blocks = re.split(r"^prompt \d+/\d+: ", out, flags=re.M)[1:]
    assert len(blocks) == 2 and "pipelining auto)" in blocks[0] and "pipelining off)" in blocks[1], out
    new_tokens = 0
    for block in blocks:
        rounds = [m for m in map(ROUND_RE.match, block.splitlines()) if m]
        assert rounds, block
        block_tokens = sum(int(m.group(6)) for m in rounds)
        for m in rounds:
            drafted, ell, accepted, drafted_again, new = (int(m.group(i)) for i in (2, 3, 4, 5, 6))
            assert drafted == drafted_again and 0 <= accepted <= drafted and 1 <= new <= accepted + 1
            assert float(m.group(8)) < (16 + codec.bound_bits(49_152, ell)) / 8  # bytes per draft token < bound
        summary = re.search(r"→ (\d+) tokens in (\d+) rounds", block)
        assert summary and int(summary.group(1)) == block_tokens and int(summary.group(2)) == len(rounds)
        assert 1 <= block_tokens <= 8
        new_tokens = new_tokens or block_tokens
    texts = re.findall(r"^ text: (.*)$", out, flags=re.M)
    assert len(texts) == 2 and texts[0] == texts[1]  # the same seed gives the same tokens, pipelined or not
    figures = json.loads((tmp_path / "demo.json").read_text())
    qsv_row = re.search(r"QSV \(edge draft \+ cloud verify, (\w+)\)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out)
    assert qsv_row, out
    precision = qsv_row.group(1)
    assert precision == figures["verifier_dtype"] and precision in ("fp32", "bf16", "int8")
    assert int(qsv_row.group(2)) == new_tokens == figures["qsv_tokens"]
    assert float(qsv_row.group(3)) == pytest.approx(figures["qsv_decode_tokens_per_s"], abs=0.01)
    assert precision in figures["cloud_only_decode_tokens_per_s"]  # the same-precision baseline always runs
    same = figures["cloud_only_decode_tokens_per_s"][precision]
    assert figures["speedup_vs_same_dtype"] == pytest.approx(figures["qsv_decode_tokens_per_s"] / same)
    assert figures["speedup_vs_fastest_cloud_only"] == pytest.approx(
        figures["qsv_decode_tokens_per_s"] / max(figures["cloud_only_decode_tokens_per_s"].values()))
    assert {r["precision"] for r in figures["verifier_calibration"]} >= {"fp32", precision}
    assert figures["verifier_ready_s"] > 0 and figures["verifier_first_round_s"] >= figures["verifier_ready_s"]
    assert "vs the paper's fixed-length bound" in out and "controller: static (L, ℓ) = (3, 240)" in out
    assert "board runtime: qsv edge --config" in out and figures["pipelining_gain"] > 0
    assert "precision calibration" in out and "pass(1)" in out  # the worker's table is shown
    assert _processes_mentioning(str(tmp_path)) == []  # broker and worker are gone


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_demo_stops_its_processes_when_interrupted(tmp_path: Path, sig: signal.Signals) -> None:
    workdir = tmp_path / "wd"
    # started with SIGINT ignored, as `nohup … &` and some CI runners start processes: the demo must still stop
    proc = subprocess.Popen(_demo_cmd(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the broker runs and the worker is loading
        lines.append(line)
        if "verifier worker pid" in line:
            break
    else:
        pytest.fail("".join(lines))
    running = _processes_mentioning(str(workdir))
    assert any("mosquitto" in p for p in running) and any("cloud_verifier.mqtt_service" in p for p in running), running
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[0]
    if sig == signal.SIGKILL:  # no cleanup code runs: the kernel stops broker and worker (PR_SET_PDEATHSIG)
        assert proc.returncode == -signal.SIGKILL
        for _ in range(100):
            if not _processes_mentioning(str(workdir)):
                break
            time.sleep(0.1)
    else:
        assert proc.returncode == 130, "".join(lines) + rest
        assert "interrupted; all demo processes stopped" in rest
    assert _processes_mentioning(str(workdir)) == []


def test_a_json_path_in_a_missing_directory_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    from qsv_tools.demo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--json", str(tmp_path / "missing" / "demo.json")])
    assert exc.value.code == 2 and "--json: no directory" in capsys.readouterr().err
