"""``qsv bench``: profile a board with its config in one command; JSON + PNG report, optional baseline comparison.

    qsv bench --config /etc/qsv/board.yaml --export-dir /opt/qsv/models/slm --out bench/ \\
              --baseline bench/baseline.json --threshold 0.15

Sections: core, slm, mqtt, e2e (edge drafting only), remote (end to end through the broker to a verifier).
Sections whose part is missing (no model export, no broker, no verifier, a module not installed) print
``[section] not available: reason`` and the rest still runs. Exit status: 0, or 1 with --fail-on-regression when a
metric is worse than the baseline by more than the threshold, 2 on bad arguments / an invalid config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.bench.results import Section, all_metrics, compare, load_metrics, to_json
from edge_runtime.config import BOARDS, ConfigError, board_config_path, config_sha256, default_config, load_config
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger(__name__)
SECTIONS = ("core", "slm", "mqtt", "e2e", "remote")
VARIANTS = ("fp32", "int8", "int4")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("thread counts must be >= 1")
    return values


def _stem(text: str) -> str:
    """argparse type of ``--name``: a file name stem (no directory part)."""
    if not text.strip() or "/" in text or "\0" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"not a file name stem: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv bench", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", type=cliargs.readable_file,
                     help="board config YAML (default: the embedded defaults)")
    src.add_argument("--board", choices=BOARDS, help="use the shipped config of this board")
    p.add_argument("--export-dir", type=cliargs.existing_dir,
                   help="ONNX export directory (default: from model.onnx_path)")
    p.add_argument("--out", type=cliargs.output_dir, default=Path("bench-results"),
                   help="output directory for JSON and PNG")
    p.add_argument("--name", default="bench", type=_stem, help="file stem of the outputs")
    p.add_argument("--baseline", type=cliargs.readable_file, help="bench JSON to compare against")
    p.add_argument("--threshold", type=cliargs.non_negative_float, default=0.15,
                   help="relative worsening flagged as regression")
    p.add_argument("--fail-on-regression", action="store_true")
    p.add_argument("--sections", default=list(SECTIONS), type=cliargs.comma_list(SECTIONS),
                   help=f"subset of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=_int_list, help="SLM thread counts (default 1,2,..,cpu count)")
    p.add_argument("--variants", default=["fp32", "int8"], type=cliargs.comma_list(VARIANTS),
                   help=f"SLM variants to profile (of {','.join(VARIANTS)}; default fp32,int8)")
    p.add_argument("--vocab-size", type=cliargs.int_range(2), default=50272, help="vocabulary of the C core benchmark")
    p.add_argument("--core-iterations", type=cliargs.positive_int, default=200)
    p.add_argument("--prompt-tokens", type=cliargs.positive_int, default=64)
    p.add_argument("--decode-tokens", type=cliargs.positive_int, default=32)
    p.add_argument("--mqtt-count", type=cliargs.positive_int, default=50, help="echo messages for the MQTT round trip")
    p.add_argument("--mqtt-timeout", type=cliargs.positive_float, default=5.0)
    p.add_argument("--e2e-tokens", type=cliargs.positive_int, default=96)
    p.add_argument("--seed", type=cliargs.seed, default=0)
    add_logging_args(p)
    return p


def _default_threads() -> list[int]:
    cpus = os.cpu_count() or 1
    out, t = [], 1
    while t < cpus:
        out.append(t)
        t *= 2
    return out + [cpus]


def _items(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [v.strip() for v in value.split(",") if v.strip()]


def run(args: argparse.Namespace) -> tuple[list[Section], dict, int]:
    from edge_runtime.bench import sections as sec  # imported once the arguments are checked

    if args.config:
        cfg = load_config(args.config)
        raw = args.config.read_bytes()
    elif args.board:
        cfg = load_config(board_config_path(args.board))
        raw = board_config_path(args.board).read_bytes()
    else:
        cfg, raw = default_config(), b""
    wanted = _items(args.sections)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {SECTIONS}")
    progress = sys.stderr.isatty()
    threads = args.threads or _default_threads()
    variants = _items(args.variants)
    sections: list[Section] = []
    for name in wanted:
        log.info("section %s", name)
        if name == "core":
            section = sec.bench_core(cfg, args.vocab_size, args.core_iterations, args.seed, progress)
        elif name == "slm":
            section = sec.bench_slm(cfg, args.export_dir, threads, variants, args.prompt_tokens, args.decode_tokens,
                                    args.seed, progress)
        elif name == "mqtt":
            section = sec.bench_mqtt(cfg, args.mqtt_count, args.mqtt_timeout)
        elif name == "e2e":
            section = sec.bench_e2e(cfg, args.export_dir, args.e2e_tokens, args.seed, progress)
        else:
            section = sec.bench_remote(cfg, args.export_dir, args.e2e_tokens, args.seed, args.mqtt_timeout)
        sys.stdout.write(section.summary_line() + "\n")
        for mname, metric in section.metrics.items():
            sys.stdout.write(f"  {mname} = {metric.value:.4g} {metric.unit}\n")
        sections.append(section)
    meta = {
        "device_id": cfg.device.id, "board": cfg.device.board, "config": cfg.source or "<embedded defaults>",
        "config_sha256": config_sha256(raw) if raw else None, "host": socket.gethostname(),
        "machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
    }
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        meta["onnxruntime"] = None
    return sections, meta, 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    try:  # the baseline is read before minutes of benchmarking, not after
        baseline = load_metrics(args.baseline) if args.baseline else None
    except (OSError, ValueError, TypeError) as exc:  # unreadable, not JSON, not a bench result
        parser.error(f"--baseline: {args.baseline}: {exc}")
    try:
        sections, meta, _ = run(args)
    except ConfigError as exc:
        sys.stderr.write(f"qsv bench: {exc}\n")
        return 2
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"qsv bench: {exc}\n")
        return 2
    rows, unmatched = compare(all_metrics(sections), baseline, args.threshold) if baseline else ([], [])
    args.out.mkdir(parents=True, exist_ok=True)
    doc = to_json(sections, meta, rows if baseline else None, unmatched, args.threshold)
    json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    try:
        from edge_runtime.bench.report import write_png  # matplotlib: optional on a board
    except ImportError as exc:
        log.warning("PNG report skipped: %s (pip install matplotlib); the JSON has every figure", exc)
        png_path = None
    else:
        write_png(png_path, sections, meta, rows, args.threshold)
    if baseline:
        sys.stdout.write(f"baseline {args.baseline} (threshold {args.threshold * 100:.0f}%):\n")
        for row in rows:
            sys.stdout.write(f"  {row.line()}\n")
        if unmatched:
            sys.stdout.write(f"  not compared (in only one run): {', '.join(unmatched)}\n")
    sys.stdout.write(f"wrote {json_path}" + (f" and {png_path}" if png_path else "") + "\n")
    regressions = [r for r in rows if r.regression]
    if regressions:
        sys.stdout.write(f"{len(regressions)} regression(s): {', '.join(r.name for r in regressions)}\n")
        if args.fail_on_regression:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
