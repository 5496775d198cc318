"""``qsv edge``: the board runtime. Reads a board config (the file that is flashed), loads the ONNX drafter and the
controller it names, connects to the verifier group through the config's broker and serves generation requests as
JSON lines on a local socket (edge_runtime.runtime.api). ``--prompt`` generates once and exits.

Signals: SIGHUP reloads the config (a config that fails to load is logged and the old one kept); SIGTERM or SIGINT
stop the runtime cleanly (the generation under way ends first, the socket file is removed, exit status 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from edge_runtime.engine import PIPELINE_MODES
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.edge")


def default_socket() -> Path:
    if os.geteuid() == 0:
        return Path("/run/qsv/edge.sock")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/qsv-{os.geteuid()}"
    return Path(base) / "qsv" / "edge.sock"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0..2^63-1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="board config (firmware_configs/<board>.yaml)")
    p.add_argument("--socket", type=Path, default=None,
                   help=f"request socket (default {default_socket()}; $QSV_EDGE_SOCKET)")
    p.add_argument("--prompt", help="generate once from this text, print it and exit")
    p.add_argument("--max-new-tokens", type=_positive, default=64, help="with --prompt (default 64)")
    p.add_argument("--seed", type=_seed, default=None, help="with --prompt (default: the config's sampling.seed)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="with --prompt: stream the text (default), or print the result as one JSON object")
    p.add_argument("--pipeline", choices=PIPELINE_MODES, default="auto",
                   help="pre-draft the next round while the verifier works (default auto; docs/EDGE.md)")
    p.add_argument("--feedback-timeout", type=float, default=2.0, metavar="S",
                   help="seconds without feedback before a round is resent (default 2)")
    p.add_argument("--recovery-deadline", type=float, default=120.0, metavar="S",
                   help="seconds a round keeps trying to reach a verifier (resends, resyncs on another worker, "
                        "waiting for a restarting group) before it fails (default 120)")
    add_logging_args(p, default="INFO", json_lines=True)
    return p


def _load(path: Path, pipeline: str, feedback_timeout: float,  # noqa: ANN202 - BoardRuntime (lazy import)
          recovery_deadline: float = 120.0):
    from edge_runtime.config import load_config
    from edge_runtime.runtime.board import BoardRuntime
    from edge_runtime.transport.remote import EdgeTransportConfig

    cfg = load_config(path)
    transport = EdgeTransportConfig(feedback_timeout_s=feedback_timeout, open_timeout_s=min(feedback_timeout, 10.0),
                                    recovery_deadline_s=recovery_deadline)
    return BoardRuntime(cfg, pipeline, transport)


def _config_logging(cfg, args: argparse.Namespace) -> None:  # noqa: ANN001 - BoardConfig
    """The config's ``logging`` section: its level unless -v / --log-level were given; its file as a second handler
    (a file that cannot be opened is a warning, not a failure: the board keeps running)."""
    if not args.verbose and not args.log_level:
        logging.getLogger().setLevel(cfg.logging.level)
    path = cfg.resolve_path(cfg.logging.file)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError as exc:
        log.warning("cannot write the log file %s: %s", path, exc.strerror or exc)
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _fail(message: str, status: int = 2) -> int:
    print(f"qsv edge: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens > 4096:
        return _fail("--max-new-tokens must be <= 4096")
    if not 0 < args.feedback_timeout <= 600:
        return _fail("--feedback-timeout must be in (0, 600] seconds")
    if not 0 < args.recovery_deadline <= 86400:
        return _fail("--recovery-deadline must be in (0, 86400] seconds")
    setup_logging(args)
    from edge_runtime.config import ConfigError
    from edge_runtime.controller.types import ControllerError
    from edge_runtime.slm import SLMError
    from edge_runtime.transport.endpoint import EndpointError
    from edge_runtime.transport.remote import RemoteVerifierError

    try:
        runtime = _load(args.config, args.pipeline, args.feedback_timeout, args.recovery_deadline)
    except ConfigError as exc:
        return _fail(f"invalid config:\n{exc}")
    except (OSError, EndpointError, ControllerError, SLMError, ValueError) as exc:
        return _fail(str(exc))
    _config_logging(runtime.config, args)
    try:
        if args.prompt is not None:
            return _one_shot(runtime, args)
        return _serve(runtime, args)
    except RemoteVerifierError as exc:
        return _fail(f"verifier: {exc}", 1)
    finally:
        runtime.close()


def _one_shot(runtime, args: argparse.Namespace) -> int:  # noqa: ANN001 - BoardRuntime
    from edge_runtime.runtime.board import GenerationRequest, RequestError, TextStream, summary_event

    try:
        request = GenerationRequest("cli", args.prompt, None, args.max_new_tokens, args.seed)
        runtime.prompt_ids(request)
    except RequestError as exc:
        return _fail(str(exc))
    stream = TextStream(runtime.decode)

    def on_round(run, stat) -> None:  # noqa: ANN001
        if args.format != "json":
            sys.stdout.write(stream.delta(run.tokens))
            sys.stdout.flush()

    run = runtime.generate(request, on_round)
    summary = summary_event(run)
    if args.format == "json":
        print(json.dumps({"text": runtime.decode(run.tokens), **summary}))
    else:
        print()
        print(f"qsv edge: {len(run.tokens)} tokens in {run.decode_s:.2f} s ({summary['tokens_per_s']:.2f} tokens/s), "
              f"{run.tokens_per_round:.2f} tokens/round, acceptance {run.acceptance_rate:.2f}, "
              f"pre-draft hits {run.predraft_hit_rate:.2f}", file=sys.stderr)
    return 0


def _serve(runtime, args: argparse.Namespace) -> int:  # noqa: ANN001 - BoardRuntime
    from edge_runtime.config import ConfigError
    from edge_runtime.runtime.api import RuntimeServer, SocketInUseError
    from edge_runtime.transport.remote import RemoteVerifierError

    path = args.socket or Path(os.environ.get("QSV_EDGE_SOCKET") or default_socket())
    try:
        server = RuntimeServer(path, runtime)
    except OSError as exc:
        if isinstance(exc, SocketInUseError):
            return _fail(str(exc))
        return _fail(f"cannot listen on {path}: {exc.strerror or exc}")
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    try:
        runtime.connect()
    except RemoteVerifierError as exc:  # served anyway: the first request connects again
        log.warning("no broker yet (%s); will retry on the first request", exc)
    server.serve_in_thread()
    print(f"qsv edge: device {runtime.config.device.id} serving on {path}", flush=True)
    try:
        while not stop.is_set():
            stop.wait(0.2)
            if reload.is_set():
                reload.clear()
                try:
                    new = _load(args.config, args.pipeline, args.feedback_timeout, args.recovery_deadline)
                except ConfigError as exc:
                    log.error("reload refused, keeping the running config:\n%s", exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - a bad new config must not stop a running board
                    log.error("reload refused, keeping the running config: %s", exc)
                    continue
                try:
                    new.connect()
                except RemoteVerifierError as exc:
                    log.warning("reloaded config: no broker yet (%s); will retry on the first request", exc)
                old, server.runtime = server.runtime, new
                old.close()  # waits for a generation under way
                log.info("config %s reloaded", args.config)
                print(f"qsv edge: reloaded {args.config}", flush=True)
    finally:
        server.shutdown()
        server.server_close()
        server.runtime.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
