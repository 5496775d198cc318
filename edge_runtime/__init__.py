"""QSV edge runtime: what runs on a board. The ONNX drafter (SLM) with quantize-then-sample drafting, the round
engine, the adaptive controller, the MQTT link to the verifier, board configs, serial flashing and the on-device
bench. The wire format it speaks lives in :mod:`qsv_wire`."""

from qsv_wire import __version__  # noqa: F401  (one version for every role)
