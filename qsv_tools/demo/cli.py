"""``qsv demo`` (``bash scripts/demo.sh``): QSV end to end on one machine, on real models and BBC News prompts.

1. models: fetch the draft and target models (cached), export the draft to ONNX (cached);
2. a mosquitto broker from a generated config (dev CA, mutual TLS, passwords, per-device ACLs; ``--no-tls``: plain
   TCP with passwords + ACLs) and one verifier worker process (``qsv verifier``: PyTorch target model, CPU);
3. the edge runtime (ONNX SLM on onnxruntime + C core + codec) drafts with quantize-then-sample over MQTT; every
   round is printed as it completes (L, ℓ, accepted, committed tokens, uplink bytes, times, text);
4. the target alone decodes the same prompts autoregressively in this process (same model, dtype, thread count and
   sampling), after the worker has exited;
5. a table: tokens/s and speedup, acceptance, uplink bytes per draft token vs the paper's fixed-length bound.

Everything runs from the embedded default config (``edge_runtime.config.default_config``); no file is needed. All
processes are stopped on exit, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence

from edge_runtime.config import default_config
from qsv_tools.demo.profiles import PROFILES, get_profile
from qsv_tools.demo.steps import say
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.demo")


def build_parser() -> argparse.ArgumentParser:
    cfg = default_config()
    p = argparse.ArgumentParser(prog="qsv demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="qwen",
                   help="qwen: Qwen2.5-Coder 0.5B → 1.5B (the paper-like pair); smollm2: SmolLM2-135M → itself")
    p.add_argument("--quick", action="store_true", help="same as --profile smollm2")
    p.add_argument("--prompts", type=cliargs.positive_int, help="number of BBC News prompts (default: the profile's)")
    p.add_argument("--max-new-tokens", type=cliargs.positive_int,
                   help="new tokens per prompt (default: the profile's)")
    p.add_argument("--target-dtype", choices=("auto", "fp32", "bf16", "int8"),
                   help="precision of the verifier's target (default auto: measured by the verifier at start, "
                        "cloud_verifier.calibration)")
    p.add_argument("--draft-variant", choices=("fp32", "int8", "int4"),
                   help="ONNX variant of the edge SLM (default: the profile's)")
    p.add_argument("--baselines", choices=("fastest", "all"), default="fastest",
                   help="cloud-only runs: in the verifier's precision and the fastest measured one, or in all")
    p.add_argument("--json", type=cliargs.output_file, help="write the summary figures to this JSON file")
    p.add_argument("--temperature", type=cliargs.non_negative_float, default=cfg.sampling.temperature)
    p.add_argument("--seed", type=cliargs.seed, default=cfg.sampling.seed)
    p.add_argument("--controller", choices=("static", "model"), default="static",
                   help="static: (L, ℓ) of the default config; model: the adaptive model-based controller")
    p.add_argument("--pipeline", choices=("auto", "on", "off", "always"), default="auto",
                   help="the board runtime pre-drafts the next round while the verifier works (docs/EDGE.md)")
    p.add_argument("--serial-baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also run every prompt with pipelining off, to show both ratios")
    p.add_argument("--no-tls", action="store_true", help="plain TCP to the broker (still passwords + ACLs)")
    p.add_argument("--edge-threads", type=cliargs.positive_int, default=1, help="onnxruntime threads of the edge SLM")
    p.add_argument("--cloud-threads", type=cliargs.positive_int, default=1,
                   help="torch threads of the verifier and of the baseline")
    p.add_argument("--workdir", type=cliargs.output_dir,
                   help="keep broker files and the worker log here (default: temporary)")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C must stop the demo and everything it started, also when it was launched with SIGINT ignored
    # (`nohup … &`, some CI runners): Python keeps an inherited SIG_IGN unless told otherwise
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    profile = get_profile("smollm2" if args.quick else args.profile)
    if args.target_dtype:
        profile = dataclasses.replace(profile, target_dtype=args.target_dtype)
    if args.draft_variant:
        profile = dataclasses.replace(profile, variant=args.draft_variant)
    prompts_n = args.prompts if args.prompts is not None else profile.prompts
    tokens_n = args.max_new_tokens if args.max_new_tokens is not None else profile.new_tokens
    if prompts_n < 1 or tokens_n < 1 or args.edge_threads < 1 or args.cloud_threads < 1:
        parser.error("--prompts, --max-new-tokens and the thread counts must be >= 1")
    if args.json is not None and not args.json.parent.is_dir():  # checked now, not after minutes of generation
        parser.error(f"--json: no directory {args.json.parent}")
    setup_logging(args)
    from qsv_tools.demo.session import DemoSession

    try:
        return DemoSession(args, profile, prompts_n, tokens_n).run()
    except KeyboardInterrupt:
        say("\n[demo] interrupted; all demo processes stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
