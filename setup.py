"""Build of the QSV package; the C core in csrc/ is compiled by cffi into edge_runtime._qsv_core."""

from setuptools import find_packages, setup

setup(
    name="qsv",
    version="0.1.0",
    description="Edge-cloud speculative decoding with quantize-then-sample (arXiv 2507.00605)",
    packages=find_packages(include=["edge_runtime", "edge_runtime.*", "cloud_verifier", "cloud_verifier.*",
                                    "experiments", "experiments.*"]),
    python_requires=">=3.10",
    setup_requires=["cffi>=1.16"],
    cffi_modules=["csrc/build_core.py:ffibuilder"],
    install_requires=["cffi>=1.16", "numpy>=1.24"],
    include_package_data=True,
    entry_points={"console_scripts": ["qsv-experiment=experiments.compare:main",
                                        "qsv-config=edge_runtime.config:main",
                                        "qsv-flash=edge_runtime.flashing.flasher:main",
                                        "qsv-board-agent=edge_runtime.flashing.agent:main",
                                        "qsv-bench=edge_runtime.bench.cli:main",
                                        "qsv-certs=edge_runtime.broker.cli:certs_main",
                                        "qsv-broker=edge_runtime.broker.cli:broker_main",
                                        "qsv-verifier-mqtt=cloud_verifier.mqtt_service:main",
                                        "cloud_verifier=cloud_verifier.cli:main",
                                        "qsv-demo-mqtt=edge_runtime.transport.demo:main",
                                        "qsv-models=edge_runtime.models.cli:main",
                                        "qsv-export=edge_runtime.export.cli:main",
                                        "qsv-local=edge_runtime.local_loop:main",
                                        "qsv-demo=edge_runtime.e2e.cli:main"]},
)
