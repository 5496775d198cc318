"""Build the controller a board config asks for (controller.mode: static | model | ddqn)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Controller, StaticController
from .model_based import ModelBasedController
from .types import ControllerError

if TYPE_CHECKING:
    from edge_runtime.config import BoardConfig


def controller_from_config(cfg: BoardConfig, vocab_size: int) -> Controller:
    """``static``: (static_L, static_ell). ``model``: throughput-model controller over L_min..L_max × ell_set with
    channel priors from ``channel`` (``recovery``: the recovery factor). ``ddqn``: learned policy loaded from
    ``policy_path``: ``.onnx`` (the board format, onnxruntime, no torch); a ``.pt`` training checkpoint is
    refused with the command that converts it."""
    from edge_runtime.channel.estimator import ChannelEstimator

    c = cfg.controller
    if c.mode == "static":
        return StaticController(c.static_L, c.static_ell)
    if c.mode == "model":
        est = ChannelEstimator(prior_rate_bps=cfg.channel.uplink_bps, prior_rtt_s=cfg.channel.rtt_ms / 1e3)
        return ModelBasedController(vocab_size, lengths=range(c.L_min, c.L_max + 1), ells=c.ell_set,
                                    channel_estimator=est, seed=cfg.sampling.seed, recovery=c.recovery)
    if c.mode == "ddqn":
        path: Path | None = cfg.resolve_path(c.policy_path)
        if path is None:
            raise ControllerError("controller.mode ddqn needs controller.policy_path (trained weights)")
        if not path.is_file():
            raise ControllerError(f"controller.policy_path {path} does not exist")
        from .ddqn_policy import load_policy

        ctl = load_policy(path)
        if set(ctl.ells) - set(c.ell_set):
            raise ControllerError(f"policy {path} uses ell {list(ctl.ells)} outside ell_set {list(c.ell_set)}")
        return ctl
    raise ControllerError(f"unknown controller.mode {c.mode!r} (static | model | ddqn)")
