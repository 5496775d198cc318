"""What one device can do to another device's round latency (issue "Hardening", item 2).

A real mosquitto (``qsv_tools.broker.DevBroker``, plain listener with passwords + ACLs), a real ``qsv verifier``
process (PyTorch, random weights of a registry shape) and three devices, each its own process or client:

- **victim**: a board doing rounds of L = 4 drafts at ℓ = 240 (a short pause between rounds, as if drafting); its
  round latency (publish → feedback, as the board sees it) is what is measured;
- **flood** (phase 2): one device flooding the worker with *maximal* DRAFTs at ``--flood-rate`` messages/s (above the
  rate limit), open loop over two sessions: L = max draft length, ℓ = max ℓ, every point the worst case of the
  enumerative decoder (all counts 1, encoded "enum"), the last draft token outside its point's support, so every
  copy is decoded in full, refused (MALFORMED) and can be sent again — the most verifier time one message can cost;
- **opener** (phase 3): one OPEN of ``--open-tokens`` tokens (default 8,191: SmolLM2's context is 8,192 positions)
  whose prefill runs while the victim keeps doing rounds.

Printed side by side: the victim's round latency unloaded, under the flood (ratio; must stay within 2×) and while the
long OPEN is prefilled (extra delay, in units of the victim's unloaded batch time = its feedback's verify time; must
be ≤ one batch).

    python benchmarks/flood.py --random-model smollm2-135m --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qsv_wire import codec, topics  # noqa: E402
from qsv_wire.lattice import LatticePoint  # noqa: E402
from qsv_wire.mqtt_common import BrokerEndpoint, LoopDriver, make_client, publish_properties  # noqa: E402
from qsv_wire.protocol import (  # noqa: E402
    CODEC_MODE_QSV1,
    DEFAULT_LIMITS,
    DraftRound,
    ErrorReply,
    OpenAck,
    OpenSession,
    SamplingParams,
    decode,
    encode,
)

VOCABS = {"tiny": 96, "smollm2-135m": 49152}
WORKER = "w-flood"


# ------------------------------------------------------------------------------------------------- device roles
class Device:
    """A bare device client: publishes raw payloads, keeps what arrives on its feedback topic."""

    def __init__(self, name: str, endpoint: BrokerEndpoint, listen: bool = True) -> None:
        self.name = name
        self.client = make_client(topics.device_client_id(name, f"flood-{os.getpid()}"), endpoint)
        self.client.max_inflight_messages_set(1000)
        self.loop = LoopDriver(self.client, endpoint)
        self.replies: list = []
        self.ready = not listen
        self.client.on_message = lambda c, u, m: self.replies.append(m)
        self.client.on_subscribe = lambda *a: setattr(self, "ready", True)
        if listen:
            self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.feedback_topic(name), qos=1)
        self.loop.connect()
        if not self.loop.pump_until(lambda: self.ready or (not listen and self.client.is_connected()), 10.0):
            raise SystemExit(f"{name}: could not connect / subscribe")

    def publish(self, topic: str, payload: bytes, corr: bytes) -> None:
        self.client.publish(topic, payload, qos=1, properties=publish_properties(None, corr, 10))

    def wait_reply(self, corr: bytes, timeout_s: float) -> object:
        found: list = []

        def done() -> bool:
            for m in self.replies:
                if m.properties.CorrelationData == corr:
                    found.append(decode(m.payload))
                    return True
            return False

        if not self.loop.pump_until(done, timeout_s, slice_s=0.2):
            raise SystemExit(f"{self.name}: no reply to {corr!r} in {timeout_s} s")
        self.replies.clear()
        return found[0]


def endpoint_from(args: argparse.Namespace, name: str) -> BrokerEndpoint:
    return BrokerEndpoint("127.0.0.1", args.port, username=name, password=args.password)


def flood_role(args: argparse.Namespace) -> None:
    vocab, L, ell = args.vocab, DEFAULT_LIMITS.max_draft_len, DEFAULT_LIMITS.max_ell
    dev = Device("flood", endpoint_from(args, "flood"))
    payloads = []
    nnz = min(vocab - 1, ell)  # (nearly) the most nonzeros a point can have: the enumerative decoder's worst case
    support = (np.arange(nnz, dtype=np.int64) * ((vocab - 1) // nnz)).astype(np.uint32)
    counts = np.full(nnz, ell // nnz, np.uint32)
    counts[: ell % nnz] += 1
    blob = codec.encode(LatticePoint.trusted(support, counts, ell, vocab), vocab, ell, "enum")
    outside = vocab - 1  # not in the support: the round fails after every point was decoded
    for sid in (0xF100D, 0xF100E):
        prompt = tuple(range(1, 17))
        dev.publish(topics.open_topic("flood"), encode(OpenSession("flood", sid, prompt, SamplingParams(), vocab,
                                                                   bytes(32))), b"open%d" % sid)
        ack = dev.wait_reply(b"open%d" % sid, 60.0)
        assert isinstance(ack, OpenAck), ack
        tokens = (int(support[0]),) * (L - 1) + (outside,)
        payloads.append((topics.worker_topic("flood", ack.worker_id),
                         encode(DraftRound(sid, 0, len(prompt), vocab, ell, CODEC_MODE_QSV1, tokens, (blob,) * L))))
    print(f"FLOODING {len(payloads[0][1])} bytes per message", flush=True)
    sent, start = 0, time.monotonic()
    codes: dict[str, int] = {}
    while time.monotonic() - start < args.flood_seconds:
        due = int((time.monotonic() - start) * args.flood_rate)
        while sent < due:
            topic, payload = payloads[sent % 2]
            dev.publish(topic, payload, b"f%d" % (sent % 1000))
            sent += 1
        dev.loop.pump(0.002)
        for m in dev.replies:
            reply = decode(m.payload)
            name = reply.code.name if isinstance(reply, ErrorReply) else type(reply).__name__
            codes[name] = codes.get(name, 0) + 1
        dev.replies.clear()
    print(f"DONE sent={sent} rate={sent / (time.monotonic() - start):.0f}/s replies={codes}", flush=True)
    dev.loop.close()


def open_role(args: argparse.Namespace) -> None:
    dev = Device("opener", endpoint_from(args, "opener"))
    history = tuple(int(t) for t in np.random.default_rng(5).integers(1, args.vocab, args.open_tokens))
    payload = encode(OpenSession("opener", 0x0BE7, history, SamplingParams(), args.vocab, bytes(32)))
    print(f"SENT {len(payload)} bytes", flush=True)
    t0 = time.monotonic()
    dev.publish(topics.open_topic("opener"), payload, b"big-open")
    reply = dev.wait_reply(b"big-open", 900.0)
    print(f"ACK {time.monotonic() - t0:.2f} {type(reply).__name__} {getattr(reply, 'position', reply)}", flush=True)
    dev.loop.close()


# -------------------------------------------------------------------------------------------------- the victim
def victim_rounds(remote, vocab: int, stop: callable, gap_s: float) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """Rounds of L = 4 at ℓ = 240 until ``stop()``; (round trip seconds, verify seconds) per round."""
    ell = 240
    rtt, verify = [], []
    while not stop():
        t = (len(remote.history) * 7919) % (vocab - 8)
        point = LatticePoint.trusted(np.arange(t, t + 5, dtype=np.uint32), np.array([200, 10, 10, 10, 10], np.uint32),
                                     ell, vocab)
        blob = codec.encode(point, vocab, ell)
        fb = remote.verify((t,) * 4, (blob,) * 4, ell, CODEC_MODE_QSV1)
        rtt.append(remote.stats.round_trip_us[-1] / 1e6)
        verify.append(fb.verify_us / 1e6)
        time.sleep(gap_s)
    return rtt, verify


def spawn_role(role: str, args: argparse.Namespace,
               password: str) -> tuple[subprocess.Popen, list[str], threading.Event]:
    cmd = [sys.executable, __file__, "--role", role, "--port", str(args.port), "--password", password,
           "--vocab", str(args.vocab), "--flood-rate", str(args.flood_rate), "--flood-seconds", str(args.flood_seconds),
           "--open-tokens", str(args.open_tokens)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.strip())
            started.set()
        started.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, started


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds per second of wall time, per named process, over one phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.c0[name] = cpu_seconds(pid)

    def read(self) -> str:
        wall = time.monotonic() - self.t0
        return ", ".join(f"{n} {(cpu_seconds(p) - self.c0[n]) / wall:.2f}" for n, p in self.pids.items())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--random-model", choices=sorted(VOCABS), default="smollm2-135m")
    p.add_argument("--threads", type=int, default=1, help="torch threads per verifier compute thread")
    p.add_argument("--rounds", type=int, default=30, help="victim rounds in the unloaded phase")
    p.add_argument("--gap", type=float, default=0.05, help="victim's pause between rounds (its drafting), s")
    p.add_argument("--flood-rate", type=float, default=400.0, help="flood messages/s (rate limit: 200/s)")
    p.add_argument("--flood-seconds", type=float, default=15.0)
    p.add_argument("--open-tokens", type=int, default=8191)
    p.add_argument("--role", choices=["main", "flood", "open"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--password", default="", help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "flood":
        return flood_role(args)
    if args.role == "open":
        return open_role(args)

    from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
    from qsv_tools.broker.fleet import Fleet
    from qsv_tools.broker.process import DevBroker

    args.vocab = VOCABS[args.random_model]
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    shown = " ".join(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"))
    print(f"CPU: {os.cpu_count()} cores, flags {shown}; load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(("victim", "flood", "opener"), ("verifier",))
        opts = {"insecure_dev": True} if "insecure_dev" in DevBroker.__dataclass_fields__ else {}
        broker = DevBroker(Path(tmp), fleet, **opts).start()  # the plain listener (passwords + ACLs)
        procs: list[subprocess.Popen] = []
        try:
            ep = broker.endpoint("verifier", tls=False)
            args.port = ep.port
            pw = Path(tmp) / "verifier.pw"
            pw.write_text(broker.passwords["verifier"])
            cmd = [sys.executable, "-m", "cloud_verifier.mqtt_service", "--random-model", args.random_model,
                   "--device", "cpu", "--threads", str(args.threads), "--worker-id", WORKER, "--broker", ep.url,
                   "--username", "verifier", "--password-file", str(pw), "--log-level", "WARNING"]
            if getattr(broker, "share_group", ""):
                cmd += ["--group", broker.share_group]
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            verifier = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            procs.append(verifier)
            line = verifier.stdout.readline()  # type: ignore[union-attr]
            if not line.startswith("READY"):
                raise SystemExit(f"verifier did not start: {line!r}")
            remote = RemoteVerifier("victim", broker.endpoint("victim", tls=False),
                                    EdgeTransportConfig(feedback_timeout_s=60.0, open_timeout_s=60.0)).connect()
            remote.open(list(range(1, 65)), SamplingParams(seed=1), args.vocab, bytes(32))
            count = iter(range(3))
            victim_rounds(remote, args.vocab, lambda: next(count, None) is None, args.gap)  # warm-up
            pids = {"verifier": verifier.pid, "mosquitto": broker.process.proc.pid, "victim": os.getpid()}
            count = iter(range(args.rounds))
            meter = CpuMeter(dict(pids))
            base, base_verify = victim_rounds(remote, args.vocab, lambda: next(count, None) is None, args.gap)
            print(f"unloaded: {len(base)} rounds, median {statistics.median(base) * 1e3:.0f} ms; CPU/s: {meter.read()}",
                  flush=True)
            results = [("unloaded", base, base_verify)]

            flood, lines, started = spawn_role("flood", args, broker.passwords["flood"])
            procs.append(flood)
            started.wait(120)
            t_end = time.monotonic() + args.flood_seconds - 1.0
            time.sleep(1.0)  # the flood is under way
            meter = CpuMeter(dict(pids, flooder=flood.pid))
            under, under_verify = victim_rounds(remote, args.vocab, lambda: time.monotonic() > t_end, args.gap)
            usage = meter.read()
            flood.wait(60)
            time.sleep(0.5)
            flood_line = next((ln for ln in lines if ln.startswith("DONE")), "DONE ?")
            print(f"flood: {lines[0]}; {flood_line}; CPU/s: {usage}", flush=True)
            results.append((f"flood, {args.flood_rate:.0f} maximal DRAFTs/s", under, under_verify))

            ack = "(skipped)"
            if args.open_tokens:
                opener, lines, started = spawn_role("open", args, broker.passwords["opener"])
                procs.append(opener)
                started.wait(120)
                meter = CpuMeter(dict(pids))
                during, during_verify = victim_rounds(remote, args.vocab,
                                                      lambda: any(ln.startswith("ACK") for ln in lines), args.gap)
                print(f"long OPEN: CPU/s: {meter.read()}", flush=True)
                opener.wait(60)
                ack = next((ln for ln in lines if ln.startswith("ACK")), "ACK ?")
                results.append((f"{args.open_tokens}-token OPEN prefilling", during, during_verify))
            remote.disconnect()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            broker.stop()

    batch = statistics.median(base_verify)
    b50, b90 = statistics.median(base), pct(base, 90)
    print()
    print(f"victim round latency (publish → feedback), ms; 'in core' = the feedback's verify time (batch wait + "
          f"forward + verification); one batch (b) = the unloaded in-core p50, {batch * 1e3:.0f} ms")
    print(f"{'phase':<34} {'rounds':>6} {'p50':>6} {'p90':>6} {'in core':>8} {'p50 ratio':>10} {'p90 ratio':>10} "
          f"{'p50 delay':>16}")
    for name, values, verify in results:
        m50, m90 = statistics.median(values), pct(values, 90)
        delay = m50 - b50
        extra = "" if values is base else f"{delay * 1e3:>6.0f} ms = {delay / batch:.2f} b"
        core = statistics.median(verify)
        print(f"{name:<34} {len(values):>6} {m50 * 1e3:>6.0f} {m90 * 1e3:>6.0f} {core * 1e3:>8.0f} "
              f"{m50 / b50:>9.2f}× {m90 / b90:>9.2f}× {extra:>16}")
    print(f"long OPEN: {ack} (seconds to its ack, reply, position)")


if __name__ == "__main__":
    main()
