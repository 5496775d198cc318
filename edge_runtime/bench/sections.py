"""The bench sections. Each returns a :class:`Section`; a part of QSV that is missing or unusable on this board
gives an unavailable section with the reason instead of failing the whole bench.

* ``core``: C core quantize (softmax + top-k/top-p + lattice) and Q-S sample, µs per token, per ℓ of the config.
* ``slm``:  ONNX SLM prefill and decode ms per token for each thread count × fp32/int8 variant.
* ``mqtt``: round trip of a real publish → broker → subscription echo to the configured broker (QoS 1).
* ``e2e``:  edge drafting tokens/s (SLM + C core + Q-S sampling, rounds of static L) — the edge side of a round.
* ``remote``: end-to-end tokens/s of the networked runtime (the round engine: drafter + codec + MQTT + the verifier
  group reachable through the configured broker), when a verifier answers.
"""

from __future__ import annotations

import importlib
import logging
import queue
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_runtime.bench.results import HIGHER, LOWER, Metric, Section
from edge_runtime.config import BoardConfig

log = logging.getLogger(__name__)


def _import(module: str) -> tuple[Any, str]:
    """(module, "") or (None, reason)."""
    try:
        return importlib.import_module(module), ""
    except Exception as exc:  # noqa: BLE001 - any import failure makes the section unavailable, with its reason
        return None, f"{module} cannot be imported ({type(exc).__name__}: {exc})"


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# ----------------------------------------------------------------------------------------------------------------- core
def bench_core(cfg: BoardConfig, vocab_size: int = 50272, iterations: int = 200, seed: int = 0,
               progress: bool = False) -> Section:
    core, reason = _import("qsv_wire.core")
    if core is None:
        return Section.unavailable("core", reason)
    rng = np.random.default_rng(seed)
    logits = [(rng.standard_normal(vocab_size) * 3).astype(np.float32) for _ in range(8)]
    quantizer = core.Quantizer(vocab_size)
    s = cfg.sampling
    section = Section("core", details={"vocab_size": vocab_size, "iterations": iterations,
                                       "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p})
    for ell in tqdm(cfg.controller.ell_set, desc="core", disable=not progress, leave=False):
        for i in range(10):  # warm-up
            quantizer.quantize_logits_into(logits[i % 8], ell, s.temperature, s.top_k, s.top_p)
        quant_us, sample_us = [], []
        for i in range(iterations):
            t0 = time.perf_counter()
            quantizer.quantize_logits_into(logits[i % 8], ell, s.temperature, s.top_k, s.top_p)
            t1 = time.perf_counter()
            quantizer.sample_last(int(rng.integers(0, ell)))
            t2 = time.perf_counter()
            quant_us.append((t1 - t0) * 1e6)
            sample_us.append((t2 - t1) * 1e6)
        section.metrics[f"quantize_us[ell={ell}]"] = Metric(statistics.median(quant_us), "µs/token", LOWER,
                                                             f"quantize ℓ={ell}")
        section.metrics[f"sample_us[ell={ell}]"] = Metric(statistics.median(sample_us), "µs/token", LOWER,
                                                           f"sample ℓ={ell}")
        section.details[f"quantize_us_p95[ell={ell}]"] = _percentile(quant_us, 95)
    return section


# ------------------------------------------------------------------------------------------------------------------ slm
def export_dir_of(cfg: BoardConfig, override: Path | None) -> tuple[Path | None, str]:
    """The ONNX export directory (with meta.json) for the config's model, or (None, reason)."""
    if override is not None:
        return override, ""
    onnx = cfg.resolve_path(cfg.model.onnx_path)
    if onnx is None:
        return None, "no model configured (model.onnx_path unset; pass --export-dir)"
    directory = onnx if onnx.is_dir() else onnx.parent
    if not (directory / "meta.json").exists():
        return None, f"{directory} is not a QSV ONNX export (no meta.json; run qsv export)"
    return directory, ""


def bench_slm(cfg: BoardConfig, export_dir: Path | None, threads: Sequence[int], variants: Sequence[str],
              prompt_tokens: int = 64, decode_tokens: int = 32, seed: int = 0, progress: bool = False) -> Section:
    directory, reason = export_dir_of(cfg, export_dir)  # first: cheap, and the import below pulls in torch
    if directory is None:
        return Section.unavailable("slm", reason)
    slm_mod, reason = _import("edge_runtime.slm")
    if slm_mod is None:
        return Section.unavailable("slm", reason)
    section = Section("slm", details={"export_dir": str(directory), "prompt_tokens": prompt_tokens,
                                      "decode_tokens": decode_tokens, "spinning": cfg.model.onnxruntime.spinning,
                                      "skipped": {}})
    rng = np.random.default_rng(seed)
    runs = [(v, t) for v in variants for t in threads]
    for variant, nthreads in tqdm(runs, desc="slm", disable=not progress, leave=False):
        try:
            model = slm_mod.OnnxSLM(directory, variant,
                                    slm_mod.SessionConfig(threads=nthreads, spinning=cfg.model.onnxruntime.spinning))
        except Exception as exc:  # noqa: BLE001 - e.g. the export has no int8 file: skip that variant, say why
            section.details["skipped"][f"{variant}/t{nthreads}"] = f"{type(exc).__name__}: {exc}"
            continue
        prompt = [int(x) for x in rng.integers(0, model.vocab_size, size=prompt_tokens)]
        model.prefill(prompt)  # warm-up
        prefill = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.prefill(prompt)
            prefill.append((time.perf_counter() - t0) * 1e3 / prompt_tokens)
        decode = []
        token = prompt[-1]
        for _ in range(decode_tokens):
            t0 = time.perf_counter()
            logits = model.forward([token])
            decode.append((time.perf_counter() - t0) * 1e3)
            token = int(np.argmax(logits[-1]))
        key = f"{variant}.t{nthreads}"
        section.metrics[f"prefill_ms_per_token[{key}]"] = Metric(min(prefill), "ms/token", LOWER,
                                                                 f"prefill {variant} {nthreads}T")
        section.metrics[f"decode_ms_per_token[{key}]"] = Metric(statistics.median(decode), "ms/token", LOWER,
                                                                f"decode {variant} {nthreads}T")
    if not section.metrics:
        return Section.unavailable("slm", "no variant could be loaded: " + "; ".join(
            f"{k}: {v}" for k, v in section.details["skipped"].items()))
    return section


# ----------------------------------------------------------------------------------------------------------------- mqtt
def broker_endpoint(cfg: BoardConfig) -> tuple[Any, str]:
    """(BrokerEndpoint, "") for the config's broker (edge_runtime.transport.endpoint), or (None, reason)."""
    endpoint_mod, reason = _import("edge_runtime.transport.endpoint")
    if endpoint_mod is None:
        return None, reason
    try:
        return endpoint_mod.endpoint_from_config(cfg), ""
    except endpoint_mod.EndpointError as exc:
        return None, str(exc)


def bench_mqtt(cfg: BoardConfig, count: int = 50, timeout_s: float = 5.0, topic: str | None = None) -> Section:
    common, reason = _import("qsv_wire.mqtt_common")
    if common is None:
        return Section.unavailable("mqtt", reason)
    broker, tls = cfg.broker, cfg.broker.tls
    endpoint, reason = broker_endpoint(cfg)
    if endpoint is None:
        return Section.unavailable("mqtt", reason)
    from qsv_wire import topics

    # the echo topic lives under the device's own prefix; secured brokers need an ACL entry allowing it
    topic = topic or f"{topics.TOPIC_PREFIX}/{cfg.device.id}/bench/{uuid.uuid4().hex[:8]}"
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_connect(client: Any) -> None:
        client.subscribe(topic, qos=1)

    client = common.make_client(topics.device_client_id(cfg.device.id, f"bench-{uuid.uuid4().hex[:6]}"), endpoint,
                                on_connect)
    if broker.use_tls and endpoint.ca_file is None:
        client.tls_set()  # system CA store
    if broker.use_tls and tls.insecure_skip_verify:
        client.tls_insecure_set(True)
    # callbacks run on paho's network thread: only enqueue, never block
    client.on_subscribe = lambda c, u, mid, reasons, props: events.put(("suback", reasons))
    client.on_message = lambda c, u, msg: events.put(("msg", (time.perf_counter(), msg.payload)))
    client.on_disconnect = lambda c, u, flags, reason, props: events.put(("disconnect", reason))
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=broker.keepalive_s)
    except (OSError, ValueError) as exc:
        return Section.unavailable("mqtt", f"cannot connect to {broker.url}: {exc}")
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                kind, value = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return Section.unavailable("mqtt", f"no SUBACK from {broker.url} within {timeout_s}s "
                                                   "(connection refused by the broker?)")
            if kind == "disconnect":
                return Section.unavailable("mqtt", f"broker {broker.url} closed the connection: {value}")
            if kind == "suback":
                if any(getattr(r, "is_failure", False) for r in value):
                    return Section.unavailable("mqtt", f"broker refused subscription to {topic}: {value[0]} "
                                                       "(ACL: allow devices readwrite on qsv/v1/<id>/bench/#)")
                break
        rtts = []
        lost = 0
        for i in range(count):
            payload = i.to_bytes(4, "big") + uuid.uuid4().bytes
            t0 = time.perf_counter()
            client.publish(topic, payload, qos=1)
            got = None
            wait_until = time.monotonic() + timeout_s
            while got is None and time.monotonic() < wait_until:
                try:
                    kind, value = events.get(timeout=max(0.0, wait_until - time.monotonic()))
                except queue.Empty:
                    break
                if kind == "msg" and value[1] == payload:  # duplicates / stale echoes are skipped
                    got = value[0]
            if got is None:
                lost += 1
                if lost >= 3:
                    return Section.unavailable("mqtt", f"no echo from {broker.url} for 3 messages on {topic} "
                                                       "(publish not allowed by the broker's ACL?)")
                continue
            rtts.append((got - t0) * 1e3)
    finally:
        client.disconnect()
        client.loop_stop()
    if not rtts:
        return Section.unavailable("mqtt", f"no echo from {broker.url} for any of {count} messages on {topic} "
                                           "(publish not allowed by the broker's ACL?)")
    section = Section("mqtt", details={"broker": broker.url, "topic": topic, "count": count, "lost": lost,
                                       "tls": broker.use_tls, "rtt_ms": rtts})
    section.metrics["rtt_ms_p50"] = Metric(statistics.median(rtts), "ms", LOWER, "RTT p50")
    section.metrics["rtt_ms_p95"] = Metric(_percentile(rtts, 95), "ms", LOWER, "RTT p95")
    section.metrics["rtt_ms_min"] = Metric(min(rtts), "ms", LOWER, "RTT min")
    return section


# ------------------------------------------------------------------------------------------------------------------ e2e
def config_slm(cfg: BoardConfig, export_dir: Path | None, slm_mod: Any) -> tuple[Any, str]:
    """The SLM the board runs (``slm_from_config``), or with ``--export-dir`` that export at the config's variant and
    threads; (slm, "") or (None, reason)."""
    try:
        if export_dir is None:
            return slm_mod.slm_from_config(cfg), ""
        ort = cfg.model.onnxruntime
        return slm_mod.OnnxSLM(export_dir, "int8" if ort.int8 else "fp32",
                               slm_mod.SessionConfig(threads=ort.intra_op_threads, spinning=ort.spinning)), ""
    except Exception as exc:  # noqa: BLE001 - a missing variant, a vocabulary hash mismatch, …: the reason
        return None, f"cannot load the SLM: {type(exc).__name__}: {exc}"


class _AcceptAll:
    """A verifier link that accepts every draft at once, the last draft standing in for the bonus token: the edge
    side of a round alone (edge_runtime.engine.VerifierLink)."""

    def __init__(self, verdict_type: Any, info_type: Any) -> None:
        self._verdict_type, self._info_type = verdict_type, info_type
        self._draft: Any = None

    def open(self, prompt: Sequence[int], sampling: Any, vocab_size: int, vocab_hash: bytes) -> Any:
        return self._info_type()

    def submit(self, draft: Any) -> None:
        self._draft = draft

    def poll(self) -> Any:
        return self.wait()

    def wait(self) -> Any:
        draft, self._draft = self._draft, None
        return self._verdict_type(draft.length, draft.tokens[-1])

    def channel_view(self) -> None:
        return None


def _threads(cfg: BoardConfig) -> int | str:
    return cfg.model.onnxruntime.intra_op_threads or "auto"


def bench_e2e(cfg: BoardConfig, export_dir: Path | None, tokens: int = 96, seed: int = 0,
              progress: bool = False) -> Section:
    directory, reason = export_dir_of(cfg, export_dir)
    if directory is None:
        return Section.unavailable("e2e", reason)
    mods = {}
    for name in ("edge_runtime.drafter", "edge_runtime.slm", "edge_runtime.engine", "edge_runtime.controller"):
        mods[name], reason = _import(name)
        if mods[name] is None:
            return Section.unavailable("e2e", reason)
    drafter_mod, engine_mod = mods["edge_runtime.drafter"], mods["edge_runtime.engine"]
    slm, reason = config_slm(cfg, export_dir, mods["edge_runtime.slm"])
    if slm is None:
        return Section.unavailable("e2e", reason)
    s, ctl = cfg.sampling, cfg.controller
    dcfg = drafter_mod.DraftConfig(ell=ctl.static_ell, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                   stop_at_eos=False)
    drafter = drafter_mod.Drafter(slm, dcfg, seed=seed)
    engine = engine_mod.RoundEngine(drafter, _AcceptAll(engine_mod.Verdict, engine_mod.VerifierInfo),
                                    mods["edge_runtime.controller"].StaticController(ctl.static_L, ctl.static_ell),
                                    pipeline="off")
    rng = np.random.default_rng(seed)
    prompt = [int(x) for x in rng.integers(0, slm.vocab_size, size=32)]
    bar = tqdm(total=tokens, desc="e2e", disable=not progress, leave=False)
    run = engine.generate(prompt, tokens, seed, on_round=lambda _run, stat: bar.update(len(stat.new_tokens)))
    bar.close()
    elapsed = run.decode_s
    produced = len(run.tokens)
    section = Section("e2e", details={"variant": slm.variant, "threads": _threads(cfg), "L": ctl.static_L,
                                      "ell": ctl.static_ell, "tokens": produced, "seconds": elapsed,
                                      "slm_seconds": sum(r.model_s for r in run.rounds),
                                      "overhead_seconds": sum(r.overhead_s for r in run.rounds),  # C core + stats
                                      "scope": "edge side only: drafting + feedback, verifier and network excluded"})
    section.metrics["draft_tokens_per_s"] = Metric(produced / elapsed, "tokens/s", HIGHER, "edge drafting tokens/s")
    return section


# --------------------------------------------------------------------------------------------------------------- remote
def bench_remote(cfg: BoardConfig, export_dir: Path | None, tokens: int = 48, seed: int = 0,
                 timeout_s: float = 5.0, pipeline: str = "auto") -> Section:
    """The board runtime's generation (round engine: drafter + MQTT link to the verifier group + static (L, ℓ)
    controller, pre-drafting ``pipeline`` as ``qsv edge``'s default) for ``tokens`` tokens of a random prompt."""
    directory, reason = export_dir_of(cfg, export_dir)
    if directory is None:
        return Section.unavailable("remote", reason)
    mods = {}
    for name in ("edge_runtime.transport.remote", "edge_runtime.engine", "edge_runtime.controller",
                 "edge_runtime.drafter", "edge_runtime.slm"):
        mods[name], reason = _import(name)
        if mods[name] is None:
            return Section.unavailable("remote", reason)
    remote_mod, engine_mod = mods["edge_runtime.transport.remote"], mods["edge_runtime.engine"]
    drafter_mod = mods["edge_runtime.drafter"]
    endpoint, reason = broker_endpoint(cfg)
    if endpoint is None:
        return Section.unavailable("remote", reason)
    slm, reason = config_slm(cfg, export_dir, mods["edge_runtime.slm"])
    if slm is None:
        return Section.unavailable("remote", reason)
    s, ctl = cfg.sampling, cfg.controller
    drafter = drafter_mod.Drafter(slm, drafter_mod.DraftConfig(ell=ctl.static_ell, temperature=s.temperature,
                                                               top_k=s.top_k, top_p=s.top_p), seed=seed)
    transport = remote_mod.EdgeTransportConfig(open_timeout_s=timeout_s, connect_timeout_s=timeout_s,
                                               feedback_timeout_s=timeout_s, max_resyncs=3)
    remote = remote_mod.RemoteVerifier(cfg.device.id, endpoint, transport)
    try:
        remote.connect()
    except Exception as exc:  # noqa: BLE001 - RemoteVerifierError, OSError, ssl errors: all mean "no broker"
        return Section.unavailable("remote", f"cannot connect to {cfg.broker.url}: {exc}")
    engine = engine_mod.RoundEngine(drafter, remote_mod.MqttLink(remote),
                                    mods["edge_runtime.controller"].StaticController(ctl.static_L, ctl.static_ell),
                                    pipeline=pipeline, vocab_hash=mods["edge_runtime.slm"].vocab_hash_of(cfg, slm))
    rng = np.random.default_rng(seed)
    prompt = [int(x) for x in rng.integers(0, slm.vocab_size, size=32)]
    try:
        t0 = time.perf_counter()
        run = engine.generate(prompt, tokens, seed)
        elapsed = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - no verifier, vocabulary refused, …: the reason is the result
        return Section.unavailable("remote", f"no verifier answered through {cfg.broker.url}: "
                                             f"{type(exc).__name__}: {exc}")
    finally:
        remote.disconnect()
    n = len(run.tokens)
    waits_ms = [us / 1e3 for us in remote.stats.round_trip_us]  # publish → feedback, resends included
    section = Section("remote", details={
        "variant": slm.variant, "threads": _threads(cfg), "L": ctl.static_L, "ell": ctl.static_ell, "tokens": n,
        "pipeline": pipeline, "seconds": elapsed, "prefill_seconds": run.prefill_s, "rounds": len(run.rounds),
        "draft_seconds": sum(r.draft_s + r.feedback_s for r in run.rounds),
        "predraft_seconds": sum(r.predraft_s for r in run.rounds), "predraft_hit_rate": run.predraft_hit_rate,
        "wait_seconds": sum(r.wait_s for r in run.rounds), "uplink_bytes": sum(r.lattice_bytes for r in run.rounds),
        "worker": remote.worker_id, "resends": remote.stats.resends, "resyncs": remote.stats.resyncs,
        "round_trip_ms": waits_ms})
    section.metrics["tokens_per_s"] = Metric(n / elapsed, "tokens/s", HIGHER, "end-to-end tokens/s")
    section.metrics["tokens_per_round"] = Metric(run.tokens_per_round, "tokens", HIGHER, "tokens per round")
    if waits_ms:
        section.metrics["round_wait_ms_p50"] = Metric(statistics.median(waits_ms), "ms", LOWER,
                                                      "verify wait p50 (network + verifier)")
    return section
