"""The loaded C core (``qsv_wire._qsv_core``): its version check and the one map from its error codes to exceptions.

Every Python caller of the C functions goes through here: ``ffi`` / ``lib`` come from this module, and every return
code goes through ``check``. The C library has one error space (csrc/qsv_base.h): 0 or a documented value >= 0 on
success, a negative ``enum qsv_error`` on failure.
"""

from __future__ import annotations

from qsv_wire._qsv_core import ffi, lib

# The C API this binding is written against: QSV_VERSION_NUMBER of csrc/qsv_base.h (major*10000 + minor*100 + patch).
EXPECTED_VERSION = 10000


def _version_text(number: int) -> str:
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def check_version(number: int, expected: int = EXPECTED_VERSION) -> None:
    """ImportError unless the loaded library is the version this binding expects (a stale build of the extension)."""
    if int(number) != expected:
        raise ImportError(
            f"qsv_wire._qsv_core is the QSV C core {_version_text(int(number))}, but this Python code needs "
            f"{_version_text(expected)}: the compiled extension is stale. Rebuild it: `pip install -e .` (or "
            f"scripts/bootstrap.sh) from the repository root."
        )


check_version(lib.qsv_version_number())


class CoreError(ValueError):
    """Invalid input for the C core (bad value), or an error code from it."""

    __module__ = "qsv_wire.core"  # public as edge_runtime.core too (re-exported)


class CodecError(ValueError):
    """Malformed, truncated or out-of-range data, or arguments that do not fit together (V, ell, mode)."""

    __module__ = "qsv_wire.codec"


# codes that only the codec returns: about a message or a lattice point, or arguments of the codec
_CODEC_CODES = frozenset({lib.QSV_ERR_ARG, lib.QSV_ERR_POINT, lib.QSV_ERR_TRUNCATED, lib.QSV_ERR_MALFORMED,
                          lib.QSV_ERR_RANGE, lib.QSV_ERR_TRAILING})  # fmt: skip


def error_name(code: int) -> str:
    """The C library's static description of a code."""
    return ffi.string(lib.qsv_error_name(code)).decode()


def check(rc: int, what: str, error: type[ValueError] | None = None) -> int:
    """``rc`` when it is not an error; else raise ``error`` (default: CodecError for the codec's codes, CoreError for
    the others) naming ``what``, the code's description and its value."""
    if rc >= 0:
        return rc
    cls = error or (CodecError if rc in _CODEC_CODES else CoreError)
    raise cls(f"{what}: {error_name(rc)} (error {rc})")
