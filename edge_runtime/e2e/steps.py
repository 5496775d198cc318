"""The demo's set-up steps: models, prompts, controller, quiet third-party output, and the printing itself."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from edge_runtime.config import BoardConfig
from edge_runtime.controller import Controller, ModelBasedController, StaticController
from edge_runtime.e2e.profiles import Profile


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def make_controller(kind: str, cfg: BoardConfig, vocab_size: int) -> tuple[Controller, str]:
    c = cfg.controller
    if kind == "static":
        return StaticController(c.static_L, c.static_ell), \
            f"static (L, ℓ) = ({c.static_L}, {c.static_ell}) from the embedded default config"
    from edge_runtime.channel.estimator import ChannelEstimator

    estimator = ChannelEstimator(prior_rate_bps=cfg.channel.uplink_bps, prior_rtt_s=cfg.channel.rtt_ms / 1e3)
    ctl = ModelBasedController(vocab_size, lengths=range(c.L_min, c.L_max + 1), ells=c.ell_set, early_stop=True,
                               channel_estimator=estimator, seed=cfg.sampling.seed, recovery=c.recovery)
    return ctl, (f"model-based adaptive as on a board with mode: model (L ∈ {c.L_min}..{c.L_max}, ℓ ∈ "
                 f"{list(c.ell_set)}, per-token early stop, recovery factor {'on' if c.recovery else 'off'}; "
                 f"verification time from the verifier's measured pass costs)")


def prepare_models(profile: Profile) -> Path:
    """Fetch both models and export the draft (all cached); returns the export directory."""
    from edge_runtime.export.onnx_export import export_model
    from edge_runtime.models.fetch import fetch

    for name in dict.fromkeys((profile.draft, profile.target)):
        t0 = time.perf_counter()
        path = fetch(name)
        say(f"[demo] model {name}: {path} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    export = export_model(profile.draft, int8=profile.variant == "int8", int4=profile.variant == "int4")
    say(f"[demo] ONNX export of {profile.draft}: {export.directory} ({time.perf_counter() - t0:.1f} s)")
    return export.directory


def demo_prompts(count: int, max_chars: int) -> list[tuple[str, str]]:
    """(label, prompt) for ``count`` BBC News articles, one category after another."""
    from edge_runtime.models.bbc import CATEGORIES, bbc_prompts, load_bbc_articles

    out = []
    for i in range(count):
        category, start = CATEGORIES[i % len(CATEGORIES)], i // len(CATEGORIES)
        article = load_bbc_articles(category)[start]
        prompt = bbc_prompts(1, max_chars=max_chars, category=category, start=start)[0]
        out.append((f"BBC {category}/{article.number:03d} {article.headline!r}", prompt))
    return out


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
