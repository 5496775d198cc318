"""A verifier worker serving the toy verifier of ``doubles.toy``: ``qsv verifier``'s command line
(cloud_verifier.mqtt_service) with the handler given by the test instead of a model option. Started by the
``spawn_verifier`` fixture (tests/conftest.py); prints ``READY <worker-id>`` once subscribed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the doubles package

from cloud_verifier.mqtt_service import main  # noqa: E402
from doubles.toy import ToyModel, ToyVerifier  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], handler=ToyVerifier(ToyModel())))
