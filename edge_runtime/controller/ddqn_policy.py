"""The DDQN policy on the board: the greedy policy of a trained Q network exported to ONNX, run by onnxruntime.

No torch here. Training (:mod:`qsv_tools.ddqn_training`) runs off-board with torch and writes the board format
with ``DdqnController.export_onnx``: an ONNX graph ``state`` float32 [B, 67] → ``q`` float32 [B, actions] whose
metadata (``qsv.*`` properties) records the action grid (``ells`` × ``lengths``), the confidence window and, when
the policy was trained without the oracle channel state, the channel state rates. :func:`load_policy` picks the
board's format: ``.onnx`` → :class:`OnnxDdqnController` (torch-free); training lives in qsv_tools.ddqn_training.

The state (shared with training): the last ``WINDOW`` draft confidences of accepted draft tokens (zero-padded, most
recent last), their mean and the last one, and the uplink state (0 low / 1 high).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Controller
from .types import ChannelView, ControllerError, Decision, RoundObservation

PAPER_LENGTHS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12)
WINDOW = 64
STATE_DIM = WINDOW + 3
ONNX_INPUT = "state"
ONNX_OUTPUT = "q"
ONNX_FORMAT = 1
META_PREFIX = "qsv."


class DdqnPolicy(Controller):
    """State building and greedy action selection of the DDQN; subclasses give the Q values (``q_values``)."""

    def __init__(
        self,
        ells: Sequence[int] = (240, 720),
        lengths: Sequence[int] = PAPER_LENGTHS,
        state_of_view: Callable[[ChannelView | None], int] | None = None,
        state_rates_bps: Sequence[float] | None = None,
    ) -> None:
        """``state_rates_bps``: the rates of the channel states (low, high); when the executor gives no channel view,
        the state is the one nearest to the last measured uplink rate (ChannelEstimator)."""
        if not ells or not lengths or min(lengths) < 1 or min(ells) < 1:
            raise ControllerError("need non-empty positive ells and lengths")
        self.ells = tuple(int(e) for e in ells)
        self.lengths = tuple(int(L) for L in lengths)
        self.actions = [(L, e) for e in self.ells for L in self.lengths]
        self.estimator = None
        self.state_rates_bps = tuple(float(r) for r in state_rates_bps) if state_rates_bps else None
        if self.state_rates_bps:
            from edge_runtime.channel.estimator import ChannelEstimator

            self.estimator = ChannelEstimator(prior_rate_bps=float(np.mean(self.state_rates_bps)),
                                              state_rates_bps=self.state_rates_bps)
        self.state_of_view = state_of_view or self._state_of_view
        self._window: deque[float] = deque(maxlen=WINDOW)
        self.name = "ddqn"

    def _state_of_view(self, view: ChannelView | None) -> int:
        if view is not None and view.state is not None:
            return int(view.state)
        if self.estimator is not None and self.estimator.rounds:
            return int(self.estimator.view(use_last=True).state or 0)
        return 0

    def state(self, channel: ChannelView | None) -> np.ndarray:
        w = np.zeros(WINDOW, dtype=np.float32)
        if self._window:
            vals = np.fromiter(self._window, dtype=np.float32)
            w[-vals.size:] = vals
            stats = (float(vals.mean()), float(vals[-1]))
        else:
            stats = (0.0, 0.0)
        return np.concatenate([w, np.array([*stats, float(self.state_of_view(channel))], dtype=np.float32)])

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """Q values [B, actions] (float32) of states [B, STATE_DIM]."""
        raise NotImplementedError

    def act(self, state: np.ndarray) -> int:
        """The greedy action (index into ``actions``) of one state."""
        return int(np.argmax(self.q_values(state[None])[0]))

    def choose(self, channel: ChannelView | None = None) -> Decision:
        length, ell = self.actions[self.act(self.state(channel))]
        return Decision(length, ell)

    def observe(self, obs: RoundObservation) -> None:
        self._window.extend(float(c) for c in obs.confidences[:obs.accepted])
        if self.estimator is not None and obs.elapsed_s is not None and obs.uplink_bits > 0:
            self.estimator.observe_round(obs.uplink_bits, obs.elapsed_s, obs.verify_s)

    def reset(self) -> None:
        self._window.clear()

    def onnx_metadata(self) -> dict[str, str]:
        """The ``qsv.*`` metadata an ONNX export of this policy carries."""
        meta: dict[str, Any] = {"format": ONNX_FORMAT, "kind": "ddqn", "ells": list(self.ells),
                                "lengths": list(self.lengths), "window": WINDOW}
        if self.state_rates_bps:
            meta["state_rates_bps"] = list(self.state_rates_bps)
        return {META_PREFIX + k: json.dumps(v) for k, v in meta.items()}


class OnnxDdqnController(DdqnPolicy):
    """Greedy DDQN policy from an ONNX export (``DdqnController.export_onnx``), on onnxruntime's CPU provider.

    ``state_rates_bps`` overrides the rates recorded in the file (None: use the recorded ones, if any)."""

    def __init__(self, path: str | Path, state_of_view: Callable[[ChannelView | None], int] | None = None,
                 state_rates_bps: Sequence[float] | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ControllerError(f"DDQN policy {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise ControllerError(f"{path}: not a loadable ONNX model: {exc}") from None
        custom = session.get_modelmeta().custom_metadata_map
        meta: dict[str, Any] = {}
        for key, value in custom.items():
            if key.startswith(META_PREFIX):
                try:
                    meta[key[len(META_PREFIX):]] = json.loads(value)
                except ValueError:
                    raise ControllerError(f"{path}: metadata {key} is not JSON: {value!r}") from None
        if meta.get("kind") != "ddqn" or "ells" not in meta or "lengths" not in meta:
            raise ControllerError(f"{path} is not a QSV DDQN policy (no qsv.kind/ells/lengths metadata; export it "
                                  f"with DdqnController.export_onnx)")
        if meta.get("window") != WINDOW:
            raise ControllerError(f"{path}: window {meta.get('window')} != {WINDOW}")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != [ONNX_INPUT] or outputs[0].name != ONNX_OUTPUT:
            raise ControllerError(f"{path}: expected input {ONNX_INPUT!r} and output {ONNX_OUTPUT!r}, got "
                                  f"{[i.name for i in inputs]} → {[o.name for o in outputs]}")
        rates = state_rates_bps if state_rates_bps is not None else meta.get("state_rates_bps")
        super().__init__(meta["ells"], meta["lengths"], state_of_view=state_of_view, state_rates_bps=rates)
        self.path = path
        self.session = session
        self.metadata = meta
        n_out = outputs[0].shape[-1] if outputs[0].shape else None
        if isinstance(n_out, int) and n_out != len(self.actions):
            raise ControllerError(f"{path}: {n_out} Q outputs but {len(self.actions)} actions in the metadata")

    def q_values(self, states: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(states, dtype=np.float32).reshape(-1, STATE_DIM)
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]


def load_policy(path: str | Path, **kw: Any) -> DdqnPolicy:
    """A trained DDQN policy in the board's format, ``.onnx`` → :class:`OnnxDdqnController` (onnxruntime, no
    torch). A ``.pt`` training checkpoint is refused with the command that converts it. ``kw`` go to the
    constructor (``state_of_view``, ``state_rates_bps``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxDdqnController(path, **kw)
    if suffix in (".pt", ".pth"):
        raise ControllerError(f"{path}: a torch training checkpoint; a board runs the ONNX policy: convert it with "
                              f"`qsv experiment ddqn-onnx {path}` and point policy_path at the .onnx")
    raise ControllerError(f"{path}: unknown DDQN policy format {suffix!r} (a board takes .onnx)")
