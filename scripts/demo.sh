#!/usr/bin/env bash
# The end-to-end demo on the embedded default config (no config file needed):
#   bootstrap → fetch + export the models (cached) → mosquitto broker from a generated config (mutual TLS) →
#   verifier worker (Qwen2.5-Coder-1.5B-Instruct, PyTorch on CPU) → edge runtime (Qwen2.5-Coder-0.5B, ONNX int8,
#   onnxruntime) over MQTT on BBC News prompts, streamed round by round → the target decoding alone on the same
#   prompts → summary table (tokens/s, speedup, acceptance, uplink bytes per draft token vs the paper's bound).
# Options go to `qsv demo` (qsv demo --help), e.g.
#   bash scripts/demo.sh --quick            # SmolLM2-135M drafts for itself: small download, a few minutes
#   bash scripts/demo.sh --prompts 1 --max-new-tokens 16 --controller model --no-tls --target-dtype bf16
# The C core demo (synthetic logits, no models) is `python -m qsv_tools.demo_core`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/qsv demo "$@"
