#!/usr/bin/env bash
# Demo (for now: the C core on synthetic logits; to be replaced by the end-to-end demo).
# Installs what it needs, then quantizes a synthetic LLM-like distribution, samples from it and prints the uplink size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m edge_runtime.demo_core "$@"
