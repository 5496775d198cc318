"""``qsv verifier-check``: load the verifier's target as a worker would, calibrate it, build its caches, print the
configuration as JSON and exit (a deployment step before ``qsv verifier`` workers start).

The flags are the worker's model and precision flags plus the service-core limits (sessions, memory budget,
batching). ``--serve`` keeps the service core, its batching scheduler and the Prometheus endpoint running until
Ctrl-C, without a transport (metrics and scheduler checks; the MQTT worker is ``qsv verifier``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from cloud_verifier.calibration import add_precision_args
from qsv_models.registry import model_ref
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

if TYPE_CHECKING:  # torch is imported only once the arguments are checked
    from cloud_verifier.target import TargetModel

log = logging.getLogger("cloud_verifier")


def random_target(shape: str, device: str, dtype: str) -> TargetModel:
    """A random-weight target: 'tiny' (tests) or 'smollm2-135m' (the real model's shape, for benchmarks)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = {
        "tiny": dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2),
        "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    }
    if shape not in shapes:
        raise ValueError(f"random model shape must be one of {sorted(shapes)}")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=8192, **shapes[shape]))
    from cloud_verifier.precision import canonical
    from cloud_verifier.target import TargetModel
    from cloud_verifier.weight_cache import convert_model

    name = canonical(dtype)
    return TargetModel(convert_model(model, name), device, precision=name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv verifier-check", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=model_ref,
                     help="registry name (smollm2, qwen-target), .gguf file or HF model folder")
    src.add_argument("--random-model", choices=["tiny", "smollm2-135m"], help="random weights of this shape")
    p.add_argument("--fetch", action="store_true", help="fetch a registry model that is not cached yet")
    p.add_argument("--device", default="auto", type=cliargs.torch_device, help="auto, cpu, cuda, cuda:N")
    add_precision_args(p)
    p.add_argument("--max-sessions", type=int, default=64)
    p.add_argument("--memory-budget-mb", type=int, default=4096, help="KV-cache budget over all sessions")
    p.add_argument("--idle-timeout", type=cliargs.positive_float, default=300.0,
                   help="seconds before an idle session is dropped")
    p.add_argument("--max-batch", type=int, default=16, help="rounds per forward pass")
    p.add_argument("--max-wait-ms", type=cliargs.non_negative_float, default=4.0, help="how long a batch waits to fill")
    p.add_argument("--max-draft-len", type=int, default=32)
    p.add_argument("--max-history", type=cliargs.positive_int, default=32768)
    p.add_argument("--worker-id", default="verifier-0", type=cliargs.client_id)
    p.add_argument("--threads", type=cliargs.non_negative_int, default=0,
                   help="torch intra-op threads (0: torch default; 1 avoids oversubscription on small shared CPUs)")
    p.add_argument("--metrics-host", default="127.0.0.1", type=cliargs.host)
    p.add_argument("--metrics-port", type=cliargs.int_range(-1, 65535), default=9464,
                   help="Prometheus /metrics port (0: any free, -1: off)")
    p.add_argument("--serve", action="store_true",
                   help="keep the service core and /metrics running until Ctrl-C (no transport) instead of exiting")
    add_logging_args(p, default="INFO", json_lines=True)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in (("max-sessions", args.max_sessions), ("memory-budget-mb", args.memory_budget_mb),
                        ("max-batch", args.max_batch), ("max-draft-len", args.max_draft_len)):
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    setup_logging(args)
    from cloud_verifier.metrics import MetricsServer
    from cloud_verifier.service import ServiceConfig, VerifierService
    from qsv_wire.protocol import Limits

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    curve_ms: tuple[float, ...] = ()
    reason = None
    if args.model:
        from cloud_verifier.loading import load_target_from_args

        loaded = load_target_from_args(parser, args)
        target, vocab_hash, curve_ms, reason = loaded.target, loaded.vocab_hash, loaded.curve.pass_ms, loaded.describe()
    else:
        dtype = "fp32" if args.dtype == "auto" else args.dtype
        target, vocab_hash = random_target(args.random_model, args.device, dtype), None
    config = ServiceConfig(
        max_sessions=args.max_sessions, memory_budget_bytes=args.memory_budget_mb << 20,
        idle_timeout_s=args.idle_timeout, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1e3,
        limits=Limits(max_draft_len=args.max_draft_len, max_history=args.max_history), vocab_hash=vocab_hash,
        worker_id=args.worker_id,
    )
    service = VerifierService(target, config)
    metrics = None
    if args.metrics_port >= 0:
        try:
            metrics = MetricsServer(service.metrics, args.metrics_host, args.metrics_port).start()
        except OSError as exc:  # port in use, host not local: a runtime failure, one line, exit 1
            log.error("cannot serve /metrics on %s:%d: %s", args.metrics_host, args.metrics_port, exc.strerror or exc)
            return 1
    summary = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(config).items()}
    summary.update(model=args.model or f"random:{args.random_model}", device=str(target.device),
                   dtype=target.precision, precision_reason=reason, pass_cost_ms=curve_ms, vocab_size=target.vocab_size,
                   metrics_url=f"http://{args.metrics_host}:{metrics.port}/metrics" if metrics else None,
                   transport=None)
    print(json.dumps(summary, indent=2), flush=True)
    if not args.serve:
        if metrics:
            metrics.stop()
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with service:
        log.info("verifier service running without a transport; Ctrl-C to stop")
        while not stop.wait(1.0):
            time.sleep(0)
    if metrics:
        metrics.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
