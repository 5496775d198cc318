"""Prometheus text-format metrics (counters, gauges, histograms) and a tiny HTTP endpoint serving them."""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class MetricsRegistry:
    """Thread-safe named counters, gauges (values or callables) and histograms."""

    def __init__(self, prefix: str = "qsv_verifier") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._hists: dict[str, Histogram] = {}
        self._help: dict[str, str] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = help_text

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._help[name] = help_text
        self._gauges[name] = read

    def histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self._help[name] = help_text
        self._hists[name] = Histogram(buckets)

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._hists[name].observe(value)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            hists = {k: (h.buckets, list(h.counts), h.total, h.n) for k, h in self._hists.items()}
        names = sorted({k[0] for k in counters} | set(self._help))
        for name in names:
            full = f"{self.prefix}_{name}"
            if name in self._gauges:
                lines += [f"# HELP {full} {self._help[name]}", f"# TYPE {full} gauge",
                          f"{full} {float(self._gauges[name]())}"]
            elif name in hists:
                buckets, counts, total, n = hists[name]
                lines += [f"# HELP {full} {self._help[name]}", f"# TYPE {full} histogram"]
                running = 0
                for bound, count in zip(buckets, counts, strict=False):
                    running += count
                    lines.append(f'{full}_bucket{{le="{bound}"}} {running}')
                lines += [f'{full}_bucket{{le="+Inf"}} {n}', f"{full}_sum {total}", f"{full}_count {n}"]
            else:
                lines += [f"# HELP {full} {self._help.get(name, name)}", f"# TYPE {full} counter"]
                for (cname, labels), value in sorted(counters.items()):
                    if cname == name:
                        lines.append(f"{full}{_labels(dict(labels))} {value}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``registry.render()`` at /metrics on a background thread."""

    def __init__(self, registry: MetricsRegistry, host: str = "127.0.0.1", port: int = 9464) -> None:
        registry_ref = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = registry_ref.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("metrics http: " + fmt, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="qsv-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics at http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
