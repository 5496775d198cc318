"""``qsv-demo-mqtt``: the networked path end to end on one machine, secured, with a fault.

Starts a mosquitto broker with a dev CA, mutual TLS, passwords and per-device ACLs; two verifier worker processes in
one shared-subscription group (PyTorch VerifierService on a tiny random Llama by default, or ``--model``); a board
(the real Drafter + C core + codec, over TLS). It generates once without faults, then again while the worker that
holds the session is killed with SIGKILL after a few rounds, and checks that both token streams are identical.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.broker.fleet import Fleet
from edge_runtime.broker.process import DevBroker
from edge_runtime.drafter import DraftConfig, Drafter
from edge_runtime.transport.board import BoardResult, run_remote_generation
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
from edge_runtime.transport.toy import ToyModel, ToySLM

log = logging.getLogger("qsv.demo")
DEVICE = "board-01"


def start_workers(broker: DevBroker, ids: list[str], verifier_args: list[str],
                  workdir: Path) -> dict[str, subprocess.Popen]:
    ep = broker.endpoint("verifier", tls=True)
    pw = workdir / "verifier.pw"
    pw.write_text(broker.passwords["verifier"])
    os.chmod(pw, 0o600)
    procs = {}
    for wid in ids:
        cmd = [sys.executable, "-m", "cloud_verifier.mqtt_service", "--worker-id", wid, "--host", ep.host,
               "--port", str(ep.port), "--username", "verifier", "--password-file", str(pw), "--ca", str(ep.ca_file),
               "--cert", str(ep.cert_file), "--key", str(ep.key_file), "--log-level", "WARNING", *verifier_args]
        procs[wid] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for wid, proc in procs.items():
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"verifier worker {wid} failed to start (exit {proc.poll()})")
    return procs


def generate(broker: DevBroker, args: argparse.Namespace, vocab: int,
             kill: dict[str, subprocess.Popen] | None = None) -> tuple[BoardResult, RemoteVerifier]:
    drafter = Drafter(ToySLM(ToyModel(vocab_size=vocab, seed=3, scale=3.0)),
                      DraftConfig(ell=args.ell, temperature=args.temperature), seed=args.seed)
    remote = RemoteVerifier(DEVICE, broker.endpoint(DEVICE, tls=True),
                            EdgeTransportConfig(feedback_timeout_s=args.feedback_timeout)).connect()
    if kill is not None:
        def killer() -> None:
            while remote.stats.rounds < args.kill_after_rounds:
                time.sleep(0.001)
            victim = remote.worker_id
            log.warning("kill -9 worker %s (holds the session) after %d rounds", victim, remote.stats.rounds)
            kill[victim].send_signal(signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()
    try:
        result = run_remote_generation(drafter, remote, args.prompt, args.tokens, args.draft_len, args.seed,
                                       bytes(32))
    finally:
        remote.disconnect()
    return result, remote


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--draft-len", type=int, default=4)
    p.add_argument("--ell", type=int, default=240)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--prompt", type=int, nargs="+", default=[5, 17, 33, 2, 71])
    p.add_argument("--kill-after-rounds", type=int, default=5)
    p.add_argument("--feedback-timeout", type=float, default=1.0)
    p.add_argument("--model", help="target for the workers (registry name, .gguf, HF folder); default: tiny random")
    p.add_argument("--workdir", type=Path, help="keep broker files here (default: a temporary directory)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    verifier_args = ["--model", args.model] if args.model else ["--random-model", "tiny"]
    vocab = 96  # the tiny random target; a --model run needs a draft model of the same vocabulary
    if args.model:
        p.error("--model needs a matching draft model; use edge_runtime.transport.board.run_remote_generation")
    with tempfile.TemporaryDirectory(prefix="qsv-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        broker = DevBroker(workdir / "broker", Fleet((DEVICE,), ("verifier",))).start()
        workers: dict[str, subprocess.Popen] = {}
        try:
            log.info("broker: TLS %d (mutual TLS + passwords + ACLs); starting 2 verifier workers",
                     broker.tls_port)
            workers = start_workers(broker, ["worker-1", "worker-2"], verifier_args, workdir)
            clean, clean_remote = generate(broker, args, vocab)
            faulty, faulty_remote = generate(broker, args, vocab, kill=workers)
        finally:
            for proc in workers.values():
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(timeout=10)
            broker.stop()
    overhead = [r - f.verify_us for r, f in zip(clean_remote.stats.round_trip_us, clean.feedback, strict=True)]
    print(f"fault-free: {len(clean.tokens)} tokens in {clean.rounds} rounds "
          f"({clean.tokens_per_round:.2f} tokens/round), uplink {clean.uplink_bytes} B of lattice points")
    print(f"  transport overhead per round (round trip - verify time): median {np.median(overhead):.0f} µs, "
          f"p90 {np.percentile(overhead, 90):.0f} µs over TLS, QoS 1")
    print(f"with kill -9 of the session's worker after {args.kill_after_rounds} rounds: {len(faulty.tokens)} tokens, "
          f"{faulty_remote.stats.resends} resends, {faulty_remote.stats.resyncs} resyncs, now on "
          f"{faulty_remote.worker_id}")
    same = faulty.tokens == clean.tokens
    print(f"token streams identical: {same}")
    print("tokens:", " ".join(map(str, clean.tokens)))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
