"""``qsv export``: turn a causal LM (registry name, GGUF file or HF folder) into a cached ONNX model with KV cache."""

from __future__ import annotations

import argparse
import sys

from qsv_models.registry import model_ref
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging

OPSET_MIN, OPSET_MAX = 14, 23  # torch.onnx's range (scaled dot-product attention needs >= 14)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsv export", description=__doc__)
    parser.add_argument("model", type=model_ref,
                        help="qwen-draft | qwen-target | smollm2 | path to .gguf | HF model folder")
    parser.add_argument("--int8", action="store_true", help="also write a dynamically int8-quantized model")
    parser.add_argument("--int4", action="store_true", help="also write a 4-bit weight-only model (MatMulNBits)")
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--opset", type=cliargs.int_range(OPSET_MIN, OPSET_MAX), default=18,
                        help=f"ONNX opset ({OPSET_MIN}..{OPSET_MAX}; default 18)")
    parser.add_argument("--out", type=cliargs.output_dir, default=None, help="export root (default <cache>/onnx)")
    parser.add_argument("--force", action="store_true", help="re-export even if cached")
    add_logging_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    from qsv_tools.export.onnx_export import ExportError, ExportOptions, export_model  # torch

    try:
        result = export_model(args.model, ExportOptions(args.exporter, args.opset), int8=args.int8, root=args.out,
                              force=args.force, int4=args.int4)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"qsv export: {exc}", file=sys.stderr)
        return 1
    for variant, diff in result.meta["max_abs_diff"].items():
        print(f"{variant}: max |logits_onnx - logits_torch| = {diff:.3g} (prefill, 4 decode steps, one 3-token step)")
    print(result.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
