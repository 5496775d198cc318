"""Build of the QSV package; the C core in csrc/ is compiled by cffi into qsv_wire._qsv_core."""

import os

from setuptools import find_packages, setup

# Packages by role: qsv_wire (wire format + C core, both roles), edge_runtime (the board), cloud_verifier (the
# verifier service), qsv_models (model registry and loading), qsv_tools (broker/PKI, demo, simulator, export),
# experiments, and the qsv command. QSV_ROLE=edge or QSV_ROLE=cloud builds a package with that role's code only (a
# board image: the runtime and the wire format, nothing else); the default holds every command.
ROLE_PACKAGES = {
    "edge": ["qsv_wire", "edge_runtime", "firmware_configs", "qsv"],
    "cloud": ["qsv_wire", "cloud_verifier", "qsv_models", "qsv"],
    "all": ["qsv_wire", "edge_runtime", "cloud_verifier", "qsv_models", "qsv_tools", "experiments", "qsv",
            "firmware_configs"],
}
ROLE = os.environ.get("QSV_ROLE", "all")
if ROLE not in ROLE_PACKAGES:
    raise SystemExit(f"QSV_ROLE={ROLE!r}: use one of {', '.join(ROLE_PACKAGES)}")
PACKAGES = find_packages(include=[name for top in ROLE_PACKAGES[ROLE] for name in (top, top + ".*")])

setup(
    name="qsv",
    version="0.1.0",  # = qsv_wire.__version__
    description="Edge-cloud speculative decoding with quantize-then-sample (arXiv 2507.00605)",
    packages=PACKAGES,
    package_data={name: files for name, files in {"firmware_configs": ["schema.json", "*.yaml"],
                                                    "qsv_tools.broker": ["qsv_auth_plugin.c"]}.items()
                  if name in PACKAGES},
    python_requires=">=3.10",
    setup_requires=["cffi>=1.16"],
    cffi_modules=["csrc/build_core.py:ffibuilder"],
    # What every role needs: the C core, the wire format, board configs, MQTT. Roles add their own (extras):
    #   QSV_ROLE=edge pip install .[edge]    a board: onnxruntime SLM, tokenizer, serial flashing (no torch)
    #   QSV_ROLE=cloud pip install .[cloud]  a verifier: PyTorch target (the CPU wheel: torch==2.13.0), transformers
    # requirements.txt pins the versions the tests and benchmarks ran with (scripts/bootstrap.sh installs it).
    install_requires=["cffi>=1.16", "numpy>=1.24", "paho-mqtt>=2.0,<3", "pyyaml>=6", "jsonschema>=4.18"],
    extras_require={
        "edge": ["onnxruntime>=1.17", "tokenizers>=0.15", "pyserial>=3.5", "tqdm>=4"],
        "cloud": ["torch==2.13.0", "transformers>=5", "gguf>=0.10", "accelerate>=1", "tokenizers>=0.15", "tqdm>=4"],
        "tools": ["onnx>=1.16", "onnxscript>=0.1", "matplotlib>=3.8", "scipy>=1.11", "pytest>=8", "pytest-timeout>=2",
                  "hypothesis>=6", "ruff>=0.5", "import-linter>=2"],
    },
    include_package_data=True,
    options={"build": {"build_base": f"build/{ROLE}"}},  # one build folder per role: no other role's files leak in
    entry_points={"console_scripts": ["qsv=qsv.cli:main"]},
)
