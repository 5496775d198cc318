"""The edge runtime imports and runs without torch / transformers (a board has onnxruntime, numpy, cffi, paho-mqtt,
pyserial, tokenizers, pyyaml, jsonschema only).

The parent process (which has torch) exports a tiny causal LM and a DDQN policy to ONNX; a child process that hides
torch and transformers behind a ``sys.meta_path`` finder then imports the runtime modules, loads the SLM the way a
board config names it, drafts tokens with the Drafter, and builds every shipped board config's controller. Any
attempt to import torch or transformers during that, even one that is caught and swallowed, fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")  # the exporters' deprecation / tracer warnings (parent side)

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers")

RUNTIME_MODULES = (
    "edge_runtime.slm",
    "edge_runtime.drafter",
    "edge_runtime.config",
    "edge_runtime.controller",
    "edge_runtime.controller.factory",
    "edge_runtime.controller.ddqn_policy",
    "edge_runtime.slm_meta",
    "edge_runtime.transport.remote",
    "edge_runtime.transport.endpoint",
    "edge_runtime.engine",
    "edge_runtime.runtime.board",
    "edge_runtime.runtime.api",
    "edge_runtime.runtime.client",
    "edge_runtime.runtime.cli",
    "qsv.cli",
    "qsv_wire.core",
    "qsv_wire.codec",
    "qsv_wire.protocol",
)

CHILD = textwrap.dedent('''
    import importlib.abc
    import json
    import sys
    import traceback

    BLOCKED = {blocked!r}
    attempts = []


    class HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append((name, "".join(traceback.format_stack(limit=12))))
                raise ImportError(f"{{name}} is not installed on the board (hidden by test_torch_free)")
            return None


    sys.meta_path.insert(0, HideTorch())
    args = json.loads(sys.argv[1])
    report = {{"imported": [], "errors": {{}}}}

    def check(step):
        if attempts:
            name, stack = attempts[0]
            raise SystemExit(f"{{step}} tried to import {{name}}:\\n{{stack}}")
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        if leaked:
            raise SystemExit(f"{{step}}: {{leaked}} in sys.modules")

    for module in args["modules"]:
        __import__(module)
        check(f"import {{module}}")
        report["imported"].append(module)

    import dataclasses

    import numpy as np

    from edge_runtime.config import ModelConfig, OrtOptions, load_config
    from edge_runtime.controller import Controller, OnnxDdqnController
    from edge_runtime.controller.factory import controller_from_config
    from edge_runtime.drafter import DraftConfig, Drafter
    from edge_runtime.slm import OnnxSLM, slm_from_config

    # the SLM as a board config names it: one .onnx file of an export
    slm = slm_from_config(ModelConfig(onnx_path=args["onnx_path"], onnxruntime=OrtOptions(intra_op_threads=1)))
    logits = slm.prefill([3, 1, 4, 1, 5])
    assert logits.shape == (slm.vocab_size,) and np.isfinite(logits).all()
    assert slm.forward([9, 2]).shape == (2, slm.vocab_size)
    slm.rollback(5)
    assert slm.length == 5
    assert OnnxSLM.from_file(args["onnx_path"]).variant == "fp32"
    check("SLM load and forward")

    drafter = Drafter(slm, DraftConfig(ell=240, temperature=1.0), seed=3)
    drafter.start([3, 1, 4, 1, 5])
    record = drafter.draft(4)
    assert record.length == 4 and all(0 <= t < slm.vocab_size for t in record.tokens)
    drafter.feedback(2, record.tokens[2])
    record = drafter.draft(3)
    assert record.length == 3
    report["drafted"] = record.tokens
    check("drafting")

    # every shipped board config's controller section (ddqn ones get the test's ONNX policy)
    report["controllers"] = {{}}
    for path in args["configs"]:
        cfg = load_config(path)
        if cfg.controller.mode == "ddqn":
            cfg = dataclasses.replace(cfg, controller=dataclasses.replace(cfg.controller,
                                                                          policy_path=args["policy_path"]))
        ctl = controller_from_config(cfg, slm.vocab_size)
        assert isinstance(ctl, Controller)
        if cfg.controller.mode == "ddqn":
            assert isinstance(ctl, OnnxDdqnController)
        decision = ctl.choose(None)
        assert decision.ell in cfg.controller.ell_set, (path, decision)
        report["controllers"][path] = [cfg.controller.mode, type(ctl).__name__, decision.max_draft, decision.ell]
        check(f"controller of {{path}}")
    print(json.dumps(report))
''').format(blocked=BLOCKED)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny LM export and a DDQN policy in ONNX, made here with torch (exporting is off-board work)."""
    pytest.importorskip("torch")
    from qsv_tools.ddqn_training import DdqnController
    from qsv_tools.export.tiny import tiny_export

    _, export = tiny_export("llama", vocab_size=64, seed=21, logit_scale=6.0)
    policy = DdqnController((240, 720), seed=1).export_onnx(tmp_path_factory.mktemp("policy") / "ddqn.onnx")
    return {"onnx_path": str(export.fp32_path), "policy_path": str(policy)}


def run_child(args: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, f"torch-free child failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_runs_without_torch(artifacts: dict[str, str]) -> None:
    configs = sorted(str(p) for p in (ROOT / "firmware_configs").glob("*.yaml"))
    assert len(configs) >= 5
    report = run_child({"modules": list(RUNTIME_MODULES), "configs": configs, **artifacts})
    assert report["imported"] == list(RUNTIME_MODULES)
    assert len(report["drafted"]) == 3
    modes = {mode for mode, *_ in report["controllers"].values()}
    assert {"static", "ddqn"} <= modes
    assert all(kind == "OnnxDdqnController" for mode, kind, *_ in report["controllers"].values() if mode == "ddqn")


def test_the_guard_catches_torch(artifacts: dict[str, str]) -> None:
    """The child fails when something it imports wants torch (here: the training module of the DDQN)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = {"modules": ["qsv_tools.ddqn_training"], "configs": [], **artifacts}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode != 0 and "torch is not installed on the board" in proc.stderr
