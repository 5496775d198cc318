"""QSV cloud verifier: exact rejection sampling against the large model, sessions and batching."""

from cloud_verifier.sampling import (
    EXACT_ORDER,
    INEXACT_ORDER,
    SamplingParams,
    VerificationError,
    VerifyResult,
    target_probs,
    verify_round,
)

__version__ = "0.1.0"

__all__ = [
    "EXACT_ORDER",
    "INEXACT_ORDER",
    "SamplingParams",
    "VerificationError",
    "VerifyResult",
    "target_probs",
    "verify_round",
]
