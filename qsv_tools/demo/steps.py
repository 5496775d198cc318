"""The demo's set-up steps: models, prompts, controller, quiet third-party output, and the printing itself."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from edge_runtime.config import BoardConfig
from qsv_tools.demo.profiles import Profile


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class DraftVocabulary:
    """The drafter export's tokenizer and vocabulary facts, without loading the model (``qsv edge`` does that)."""

    def __init__(self, export_dir: Path) -> None:
        from tokenizers import Tokenizer

        from edge_runtime.slm_meta import load_export

        self.export = load_export(export_dir)
        meta = self.export.meta
        self.vocab_size = int(meta["vocab_size"])
        self.eos_token_ids = [int(t) for t in meta.get("eos_token_ids", [])]
        self.tokenizer = Tokenizer.from_file(str(self.export.directory / meta["tokenizer"]))

    def model_path(self, variant: str) -> Path:
        return self.export.directory / self.export.meta["files"][variant]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=False))


def controller_settings(kind: str, cfg: BoardConfig) -> tuple[dict, str]:
    """The board config's ``controller`` section for the demo's ``--controller`` choice, and a description."""
    c = cfg.controller
    section = {"mode": kind, "L_min": c.L_min, "L_max": c.L_max, "ell_set": list(c.ell_set), "static_L": c.static_L,
               "static_ell": c.static_ell, "recovery": c.recovery}
    if kind == "static":
        return section, f"static (L, ℓ) = ({c.static_L}, {c.static_ell}) from the embedded default config"
    return section, (f"model-based adaptive as on a board with mode: model (L ∈ {c.L_min}..{c.L_max}, ℓ ∈ "
                     f"{list(c.ell_set)}, per-token early stop, recovery factor {'on' if c.recovery else 'off'}; "
                     f"verification time from the verifier's measured pass costs)")


def prepare_models(profile: Profile) -> Path:
    """Fetch both models and export the draft (all cached); returns the export directory."""
    from qsv_models.fetch import fetch
    from qsv_tools.export.onnx_export import export_model

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
    from qsv_models.bbc import CATEGORIES, bbc_prompts, load_bbc_articles

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
