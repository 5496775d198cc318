#!/usr/bin/env bash
# The test command: bootstrap, lint, the import contract, C checks (warnings as errors, sanitizers, bounded fuzzing, aarch64 under qemu),
# then the Python test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source .venv/bin/activate
echo "[test] ruff"
ruff check .
echo "[test] import contract (pyproject.toml [tool.importlinter])"
lint-imports --no-cache
if [ -f csrc/Makefile ]; then
  echo "[test] C core: -Wall -Wextra -Werror, ASan+UBSan, fuzzing, aarch64 under qemu"
  make -s -C csrc ci
fi
echo "[test] pytest"
python -m pytest -q "$@"
