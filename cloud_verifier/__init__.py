"""QSV cloud verifier: exact rejection sampling against the large model, sessions and batching."""

__version__ = "0.1.0"
