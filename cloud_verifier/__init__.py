"""QSV cloud verifier: exact rejection sampling against the large model, sessions and batching."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from qsv_wire import __version__  # noqa: F401  (one version for every role)

__all__ = [
    "EXACT_ORDER",
    "INEXACT_ORDER",
    "SamplingParams",
    "VerificationError",
    "VerifyResult",
    "target_probs",
    "verify_round",
]

if TYPE_CHECKING:
    from cloud_verifier.sampling import (
        EXACT_ORDER,
        INEXACT_ORDER,
        SamplingParams,
        VerificationError,
        VerifyResult,
        target_probs,
        verify_round,
    )


def __getattr__(name: str) -> object:
    """Lazy re-exports: importing a submodule (e.g. the MQTT worker with the echo verifier) does not load torch."""
    if name in __all__:
        return getattr(importlib.import_module("cloud_verifier.sampling"), name)
    raise AttributeError(f"module 'cloud_verifier' has no attribute {name!r}")
