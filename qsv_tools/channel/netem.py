"""Real link shaping: a veth pair between two network namespaces this module creates, shaped with tc.

Layout: namespace ``<tag>e`` (edge) holds ``<tag>a`` with 10.213.<n>.1/30, namespace ``<tag>c`` (cloud) holds
``<tag>b`` with 10.213.<n>.2/30. The uplink (edge → cloud) is shaped on the edge interface's egress with netem
(rate + one-way delay RTT/2) when the kernel has sch_netem, else with tbf (rate only); the downlink gets the other
RTT/2 and an optional rate.
Only interfaces inside the namespaces created here are touched; both namespaces are deleted on close (and at exit).
Needs root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .markov import MarkovChannel

log = logging.getLogger(__name__)

_live: set[str] = set()
_counter = 0
_counter_lock = threading.Lock()


class ShapingError(RuntimeError):
    """tc / ip netns failed."""


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise ShapingError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_available() -> tuple[bool, str]:
    """(True, "") when namespaces, veth and tc can be used here; else (False, reason)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return False, "iproute2 (ip, tc) not installed"
    if os.geteuid() != 0:
        return False, "not root: creating network namespaces needs CAP_NET_ADMIN"
    name = f"qsvchk{os.getpid()}"
    proc = _run(["ip", "netns", "add", name], check=False)
    if proc.returncode != 0:
        return False, f"ip netns add not permitted: {proc.stderr.strip()}"
    try:
        proc = _run(["ip", "-n", name, "link", "add", "qsvchka", "type", "veth", "peer", "name", "qsvchkb"],
                    check=False)
        if proc.returncode != 0:
            return False, f"cannot create a veth pair: {proc.stderr.strip()}"
        proc = _run(["tc", "-n", name, "qdisc", "add", "dev", "qsvchka", "root", *_tbf_args(1e6)], check=False)
        if proc.returncode != 0:
            return False, f"tc tbf inside a namespace failed: {proc.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return True, ""


def qdisc_available(kind: str, args: Sequence[str] = ()) -> bool:
    """Whether this kernel offers qdisc ``kind`` (tried on lo inside a throwaway namespace)."""
    name = f"qsvq{os.getpid()}"
    if _run(["ip", "netns", "add", name], check=False).returncode != 0:
        return False
    try:
        return _run(["tc", "-n", name, "qdisc", "add", "dev", "lo", "root", kind, *args], check=False).returncode == 0
    finally:
        _run(["ip", "netns", "del", name], check=False)


def _tbf_args(rate_bps: float) -> list[str]:
    # The bucket must hold one MTU-sized packet (and rate/HZ with low-resolution timers); anything more lets that much
    # through at line rate after every idle period, so keep it at one packet up to ~6 Mbit/s, 2 ms worth above.
    burst = max(1600, int(rate_bps / 8 * 0.002))
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "latency", "200ms"]


def _netem_args(rate_bps: float | None, rtt_s: float = 0.0) -> list[str]:
    args = ["netem", "limit", "10000"]
    if rtt_s > 0:
        args += ["delay", f"{rtt_s / 2 * 1e6:.0f}us"]
    if rate_bps is not None:
        args += ["rate", f"{int(rate_bps)}bit"]
    return args


def uplink_change_args(shaper: str, ifname: str, rate_bps: float, rtt_s: float = 0.0) -> list[str]:
    """``tc`` arguments (after ``tc`` / ``tc -n <ns>``) that set the root qdisc a ShapedLink installed on ``ifname``
    (``shaper`` netem or tbf) to ``rate_bps``; usable from inside the namespace too."""
    if shaper == "netem":
        return ["qdisc", "change", "dev", ifname, "root", "handle", "1:", *_netem_args(rate_bps, rtt_s)]
    return ["qdisc", "change", "dev", ifname, "root", "handle", "10:", *_tbf_args(rate_bps)]


def _cleanup_all() -> None:
    for ns in list(_live):
        _run(["ip", "netns", "del", ns], check=False)
        _live.discard(ns)


atexit.register(_cleanup_all)


@dataclass(frozen=True)
class LinkEnds:
    edge_ns: str
    cloud_ns: str
    edge_if: str
    cloud_if: str
    edge_ip: str
    cloud_ip: str


class ShapedLink:
    """Context manager owning two namespaces and a shaped veth pair between them."""

    def __init__(
        self, uplink_bps: float, rtt_s: float = 0.0, downlink_bps: float | None = None, shaper: str = "auto"
    ) -> None:
        """``shaper``: ``netem`` (per-packet serialisation at the rate, plus delay: small messages are delayed by
        size/rate like on a real link), ``tbf`` (token bucket: exact long-run rate, but up to one bucket — about one
        MTU — leaves at line rate after an idle period, so sub-MTU messages see no serialisation delay; no RTT), or
        ``auto`` (netem when the kernel has it)."""
        if not uplink_bps > 0 or rtt_s < 0 or (downlink_bps is not None and not downlink_bps > 0):
            raise ValueError("uplink_bps > 0, rtt_s >= 0 and downlink_bps > 0 (or None) required")
        if shaper not in ("auto", "netem", "tbf"):
            raise ValueError(f"shaper must be auto, netem or tbf, got {shaper!r}")
        self.shaper = shaper
        global _counter
        with _counter_lock:
            _counter += 1
            n = _counter
        tag = f"qsv{os.getpid() % 100000}x{n % 100}"  # ≤ 12 chars + suffix: inside IFNAMSIZ
        sub = (os.getpid() * 7 + n) % 250 + 1
        self.ends = LinkEnds(f"{tag}e", f"{tag}c", f"{tag}a", f"{tag}b", f"10.213.{sub}.1", f"10.213.{sub}.2")
        self.uplink_bps = uplink_bps
        self.downlink_bps = downlink_bps
        self.rtt_s = rtt_s
        self._open = False

    def __enter__(self) -> ShapedLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns_exec(self, side: str, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run inside the edge or cloud namespace."""
        ns = {"edge": self.ends.edge_ns, "cloud": self.ends.cloud_ns}[side]
        return ["ip", "netns", "exec", ns, *argv]

    def open(self) -> None:
        e = self.ends
        try:
            if self.shaper == "auto":
                self.shaper = "netem" if qdisc_available("netem", ["rate", "1mbit"]) else "tbf"
            if self.shaper == "tbf" and self.rtt_s > 0:
                raise ShapingError("the netem qdisc is not available in this kernel (sch_netem): cannot add delay; "
                                   "use rtt_s=0 (rate shaping with tbf only) or add the RTT in the application")
            for ns in (e.edge_ns, e.cloud_ns):
                _run(["ip", "netns", "add", ns])
                _live.add(ns)
            _run(["ip", "link", "add", e.edge_if, "netns", e.edge_ns, "type", "veth", "peer", "name", e.cloud_if,
                  "netns", e.cloud_ns])
            for ns, ifn, ip in ((e.edge_ns, e.edge_if, e.edge_ip), (e.cloud_ns, e.cloud_if, e.cloud_ip)):
                _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", ifn])
                _run(["ip", "-n", ns, "link", "set", ifn, "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                # veth offloads would hand tbf 64 KiB super-packets; shape real MTU-sized packets instead.
                if shutil.which("ethtool"):
                    _run(["ip", "netns", "exec", ns, "ethtool", "-K", ifn, "tso", "off", "gso", "off", "gro", "off"],
                         check=False)
            self._install(e.edge_ns, e.edge_if, self.uplink_bps)
            self._install(e.cloud_ns, e.cloud_if, self.downlink_bps)
            self._open = True
            log.info("shaped link %s <-> %s up: %.0f bit/s, RTT %.1f ms", e.edge_ns, e.cloud_ns, self.uplink_bps,
                     self.rtt_s * 1e3)
        except Exception:
            self.close()
            raise

    def _install(self, ns: str, ifn: str, rate_bps: float | None) -> None:
        if self.shaper == "netem":
            if rate_bps is not None or self.rtt_s > 0:
                _run(["tc", "-n", ns, "qdisc", "add", "dev", ifn, "root", "handle", "1:",
                      *_netem_args(rate_bps, self.rtt_s)])
        elif rate_bps is not None:
            _run(["tc", "-n", ns, "qdisc", "add", "dev", ifn, "root", "handle", "10:", *_tbf_args(rate_bps)])

    def set_uplink_rate(self, rate_bps: float) -> None:
        """Change the uplink rate in place (tc qdisc change; queued packets are kept)."""
        if not self._open:
            raise ShapingError("link is not open")
        if not rate_bps > 0:
            raise ValueError("rate must be positive")
        e = self.ends
        _run(["tc", "-n", e.edge_ns, *uplink_change_args(self.shaper, e.edge_if, rate_bps, self.rtt_s)])
        self.uplink_bps = rate_bps

    def qdisc_show(self) -> str:
        return _run(["tc", "-n", self.ends.edge_ns, "qdisc", "show", "dev", self.ends.edge_if]).stdout

    def close(self) -> None:
        for ns in (self.ends.edge_ns, self.ends.cloud_ns):
            if ns in _live:
                _run(["ip", "netns", "del", ns], check=False)
                _live.discard(ns)
        self._open = False


class MarkovShaper:
    """Drives a ShapedLink's uplink rate with a MarkovChannel: call ``step()`` once per round."""

    def __init__(self, link: ShapedLink, channel: MarkovChannel) -> None:
        self.link = link
        self.channel = channel
        link.set_uplink_rate(channel.rate_bps)

    def step(self) -> int:
        state = self.channel.step()
        self.link.set_uplink_rate(self.channel.rate_bps)
        return state


_RECEIVER = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept(); total = 0; marks = []
while True:
    b = conn.recv(1 << 16)
    if not b: break
    total += len(b); marks.append((time.monotonic(), total))
w = [(t, n) for t, n in marks if t >= marks[0][0] + float(sys.argv[3])] if marks else []
print((w[-1][1] - w[0][1]) * 8 / (w[-1][0] - w[0][0]) if len(w) > 1 else -1, flush=True)
"""

_SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); buf = b"x" * 65536
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end: s.sendall(buf)
s.close()
"""


def measure_tcp_goodput(link: ShapedLink, seconds: float = 2.0, port: int = 5201, warmup_s: float = 0.5) -> float:
    """Bulk TCP transfer edge → cloud for ``seconds``; returns received payload bit/s after ``warmup_s``.

    The receiver timestamps every chunk; goodput is measured over the steady part (after the warm-up, which
    absorbs slow start and the initial token-bucket burst).
    """
    recv = subprocess.Popen(
        link.ns_exec("cloud", [sys.executable, "-c", _RECEIVER, link.ends.cloud_ip, str(port), str(warmup_s)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert recv.stdout is not None
        line = recv.stdout.readline().strip()
        if line != "ready":
            raise ShapingError(f"receiver failed to start: {recv.stderr.read() if recv.stderr else ''}")
        send = subprocess.run(
            link.ns_exec("edge", [sys.executable, "-c", _SENDER, link.ends.cloud_ip, str(port), str(seconds)]),
            capture_output=True, text=True, timeout=seconds + 30,
        )
        if send.returncode != 0:
            raise ShapingError(f"sender failed: {send.stderr.strip()}")
        out, err = recv.communicate(timeout=30)
        if recv.returncode != 0:
            raise ShapingError(f"receiver failed: {err.strip()}")
        bps = float(out.strip().splitlines()[-1])
        if bps <= 0:
            raise ShapingError("too few samples to measure goodput")
        return bps
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
