"""The C core's Python API as the board uses it (a stable public path).

It is defined once, in :mod:`qsv_wire.core` (the wire package both roles share), and re-exported here unchanged:
``from edge_runtime.core import quantize_logits, sample, encode, decode, Quantizer`` keeps working.
"""

from qsv_wire.core import *  # noqa: F403
from qsv_wire.core import __all__  # noqa: F401
