"""Build of the QSV package; the C core in csrc/ is compiled by cffi into edge_runtime._qsv_core."""

from setuptools import find_packages, setup

setup(
    name="qsv",
    version="0.1.0",
    description="Edge-cloud speculative decoding with quantize-then-sample (arXiv 2507.00605)",
    packages=find_packages(include=["edge_runtime", "edge_runtime.*", "cloud_verifier", "cloud_verifier.*",
                                    "experiments", "experiments.*", "qsv", "qsv.*"]),
    python_requires=">=3.10",
    setup_requires=["cffi>=1.16"],
    cffi_modules=["csrc/build_core.py:ffibuilder"],
    install_requires=["cffi>=1.16", "numpy>=1.24"],
    include_package_data=True,
    entry_points={"console_scripts": ["qsv=qsv.cli:main"]},
)
