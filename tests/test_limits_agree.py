"""One set of limits: the Python constants and the protocol's table agree with the C headers they stand for."""

from __future__ import annotations

import re
from pathlib import Path

from qsv_wire import codec, core, reference
from qsv_wire.protocol import DEFAULT_LIMITS

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _c_constant(header: str, name: str) -> int:
    text = (CSRC / header).read_text()
    m = re.search(rf"\b{name}\s*=\s*(\d+)\s*[,}}]", text) or re.search(rf"#define\s+{name}\s+\(?(.+?)\)?\s*$", text,
                                                                         re.M)
    assert m, f"{name} not found in {header}"
    return int(eval(m.group(1).replace("u", ""), {}))  # noqa: S307 - a literal or a shift from our own header


def test_python_constants_equal_the_c_headers() -> None:
    quant_ell, quant_vocab = _c_constant("qsv_quant.h", "QSV_MAX_ELL"), _c_constant("qsv_quant.h", "QSV_MAX_VOCAB")
    codec_ell, codec_vocab = (_c_constant("qsv_codec.h", "QSV_CODEC_MAX_ELL"),
                              _c_constant("qsv_codec.h", "QSV_CODEC_MAX_VOCAB"))
    assert core.MAX_ELL == reference.MAX_ELL == quant_ell == codec.MAX_ELL == codec_ell == 65535
    assert core.MAX_VOCAB == reference.MAX_VOCAB == quant_vocab
    assert codec.MAX_VOCAB == codec_vocab


def test_the_protocol_table_stays_within_what_the_c_core_can_do() -> None:
    assert DEFAULT_LIMITS.max_ell <= core.MAX_ELL
    assert DEFAULT_LIMITS.max_vocab_size == core.MAX_VOCAB <= codec.MAX_VOCAB  # a draft comes from the quantizer
    assert DEFAULT_LIMITS.max_draft_len <= 255  # a u8 on the wire
