"""``python -m qsv <command> ...``: the same as the ``qsv`` console script."""

import sys

from qsv.cli import main

sys.exit(main())
