"""cffi build of the QSV C core into ``qsv_wire._qsv_core``.

Every public header ``csrc/qsv_*.h`` contributes the declarations between its ``/* CFFI_BEGIN */`` and
``/* CFFI_END */`` markers (plain C declarations cffi can parse: no macros, no includes), in include order; every
``csrc/qsv_*.c`` is compiled into the module. Adding a new part of the core means adding a header/source pair,
nothing here.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
_MARKED = re.compile(r"/\* CFFI_BEGIN \*/(.*?)/\* CFFI_END \*/", re.S)


def _cdefs(headers: list[Path]) -> str:
    parts = []
    for header in headers:
        blocks = _MARKED.findall(header.read_text())
        if not blocks:
            raise RuntimeError(f"{header.name}: no /* CFFI_BEGIN */ ... /* CFFI_END */ block")
        parts.extend(blocks)
    return "\n".join(parts)


def _in_include_order(headers: list[Path]) -> list[Path]:
    """Each header after the qsv_*.h headers it includes (cffi needs a type declared before its first use)."""
    names = {h.name: h for h in headers}
    done: list[Path] = []

    def visit(h: Path) -> None:
        if h in done:
            return
        for dep in re.findall(r'#include "(qsv_[^"]+\.h)"', h.read_text()):
            if dep in names and dep != h.name:
                visit(names[dep])
        done.append(h)

    for h in headers:
        visit(h)
    return done


headers = _in_include_order(sorted(CSRC.glob("qsv_*.h")))
sources = sorted(CSRC.glob("qsv_*.c"))

ffibuilder = FFI()
ffibuilder.cdef(_cdefs(headers))
ffibuilder.set_source(
    "qsv_wire._qsv_core",
    "\n".join(f'#include "{h.name}"' for h in headers),
    sources=[str(s.relative_to(CSRC.parent)) for s in sources],
    include_dirs=[str(CSRC.relative_to(CSRC.parent))],
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
