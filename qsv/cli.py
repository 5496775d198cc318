"""``qsv``: one console script, one subcommand per role.

``qsv <command> [options]`` imports the command's module only when that command runs and hands it the remaining
arguments (``module.main(argv)``), so ``qsv --help`` and ``qsv <command> --help`` of the light commands stay fast and
``qsv edge`` / ``qsv config`` / ``qsv flash`` never import torch. Every module's own ``main(argv)`` stays callable
(tests, ``python -m``); its parser's prog is ``qsv <command>``, so usage and error lines name the command as typed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    function: str
    summary: str
    group: str


COMMANDS: dict[str, Command] = {
    "edge": Command("edge_runtime.runtime.cli", "main",
                    "edge runtime on a board: draft with the SLM, verify remotely over MQTT (--config PATH)", "run"),
    "verifier": Command("cloud_verifier.mqtt_service", "main",
                        "verifier worker on MQTT (PyTorch target, or --echo)", "run"),
    "verifier-check": Command("cloud_verifier.cli", "main",
                              "load + calibrate the verifier's target, build its caches, print the configuration",
                              "run"),
    "broker": Command("qsv_tools.broker.cli", "broker_main",
                      "generate a secured mosquitto setup for a fleet and run it", "run"),
    "board-agent": Command("edge_runtime.flashing.agent", "main",
                           "board side of flashing: receive configs, apply them, supervise `qsv edge`", "run"),
    "certs": Command("qsv_tools.broker.cli", "certs_main", "development CA + per-client certificates", "setup"),
    "config": Command("edge_runtime.config", "main", "validate board configs, print the defaults", "setup"),
    "flash": Command("edge_runtime.flashing.flasher", "main", "send a board config over a serial line", "setup"),
    "models": Command("qsv_models.cli", "main", "fetch / list the pinned models", "setup"),
    "export": Command("qsv_tools.export.cli", "main", "export a model to ONNX (+ int8 / int4)", "setup"),
    "demo": Command("qsv_tools.demo.cli", "main",
                    "the whole system on one machine: broker, verifier, edge runtime, report", "try"),
    "local": Command("qsv_tools.local_loop", "main",
                     "drafter + verifier in one process (no transport) on BBC prompts", "try"),
    "bench": Command("edge_runtime.bench.cli", "main", "profile a board with its config; JSON + PNG report", "measure"),
    "experiment": Command("experiments.compare", "main",
                          "controller comparisons (simulator; record, qwen, link, paired, recovery, ddqn-onnx)",
                          "measure"),
}

GROUPS = {"run": "services", "setup": "setup and provisioning", "try": "try it", "measure": "measure"}


def _version() -> str:
    from qsv_wire import __version__

    return __version__


def usage() -> str:
    lines = ["usage: qsv [-h] [--version] <command> [options]", "",
             "QSV: edge-cloud speculative decoding with quantize-then-sample.", ""]
    width = max(map(len, COMMANDS))
    for group, title in GROUPS.items():
        lines.append(f"{title}:")
        lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items() if cmd.group == group]
        lines.append("")
    lines += ["options:", "  -h, --help  show this help and exit", "  --version   print the version and exit", "",
              "`qsv <command> --help` shows a command's options."]
    return "\n".join(lines) + "\n"


def _fail(message: str) -> int:
    sys.stderr.write(f"qsv: {message}\n")
    return 2


def resolve(name: str) -> Callable[[list[str]], int | None]:
    """The command's ``main``; importing its module is deferred to here. Raises ModuleNotFoundError."""
    cmd = COMMANDS[name]
    return getattr(importlib.import_module(cmd.module), cmd.function)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(usage())
        return _fail("a command is required")
    head, rest = args[0], args[1:]
    if head in ("-h", "--help") or (head == "help" and not rest):
        sys.stdout.write(usage())
        return 0
    if head == "help":  # `qsv help flash` = `qsv flash --help`
        head, rest = rest[0], ["--help"]
    if head == "--version":
        sys.stdout.write(f"qsv {_version()}\n")
        return 0
    if head not in COMMANDS:
        what = "option" if head.startswith("-") else "command"
        return _fail(f"unknown {what} {head!r}; commands: {', '.join(COMMANDS)} (qsv --help)")
    try:
        func = resolve(head)
    except ModuleNotFoundError as exc:
        top = COMMANDS[head].module.split(".")[0]
        if importlib.util.find_spec(top) is None:
            return _fail(f"{head}: not part of this installation ({top} is not installed: qsv was installed for one "
                         "role, QSV_ROLE=edge or cloud); install qsv without QSV_ROLE for every command")
        return _fail(f"{head}: {COMMANDS[head].module} cannot be imported ({exc}); is this checkout complete and "
                     "installed (pip install -e .)?")
    rc = func(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
