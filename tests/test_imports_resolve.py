"""Every first-party ``from X import Y`` in the repository resolves, also the ones inside functions and in scripts no
test runs (benchmarks/, experiments/): a moved or renamed name fails here, not in a user's hands."""

from __future__ import annotations

import ast
import importlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("qsv_wire", "edge_runtime", "cloud_verifier", "qsv_models", "qsv_tools", "qsv", "experiments",
               "firmware_configs")

pytestmark = pytest.mark.filterwarnings("ignore")


def _python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in out.split()]


def _unresolved(path: Path) -> list[str]:
    missing = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] in FIRST_PARTY):
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        try:
            module = importlib.import_module(node.module)
        except ImportError as exc:
            missing.append(f"{where}: {node.module} ({exc})")
            continue
        for alias in node.names:
            if alias.name == "*" or hasattr(module, alias.name):
                continue
            try:
                importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
                missing.append(f"{where}: {alias.name} from {node.module}")
    return missing


def test_every_first_party_from_import_resolves() -> None:
    files = _python_files()
    assert len(files) > 150  # the whole tree was read
    missing = [line for path in files for line in _unresolved(path)]
    assert not missing, "\n".join(missing)
