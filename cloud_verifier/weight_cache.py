"""Converted-weight cache: a GGUF target is dequantized once and stored as safetensors in the precision it runs in.

Dequantizing the 1.5B Q4_K_M GGUF with transformers takes about a minute and reading its tokenizer from the GGUF
another 14 s; a verifier that did both at every start would be out for minutes after each restart. The first load
(or ``qsv verifier-check --model NAME``) writes, per (GGUF sha256, precision):

    <cache>/converted/<gguf sha256[:16]>/<precision>/
        model.safetensors   the tensors the precision's model is built from (int8: the quantized Linear layers'
                            int8 weights ``<layer>.qweight``, float32 scales ``<layer>.wscale`` and row sums
                            ``<layer>.wsum``; the rest float32)
        meta.json           format version, source sha256, precision, library versions, the config, the vocab hash
                            and EOS ids, and the size and sha256 of model.safetensors

Each file is written to a temporary name, fsynced and renamed, meta.json last, so a reader sees a complete entry or
none. A load checks the library versions, the size and the sha256 of model.safetensors against meta.json; any
mismatch, a truncated or corrupt file or an unreadable meta.json is logged as a warning and the entry is rebuilt from
the GGUF, never a crash. The model is built on the meta device and the cached tensors are assigned to it, so a warm
load costs reading the file (and, for int8, packing the weights for the GEMM kernels).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cloud_verifier import precision as prec
from qsv_models.fetch import sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
QWEIGHT, WSCALE, WSUM = ".qweight", ".wscale", ".wsum"


class CacheError(RuntimeError):
    """A cache entry that cannot be used (missing, stale, corrupt); the caller rebuilds it."""


def library_versions() -> dict[str, str]:
    import safetensors
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "format": str(FORMAT_VERSION)}


@dataclass
class ModelSource:
    """Where a target's weights come from: a GGUF file (cached conversions) or a HF folder (loaded directly)."""

    folder: Path
    gguf_file: str | None
    sha256: str | None = None  # of the GGUF file; None: computed on first use

    @property
    def path(self) -> Path:
        return self.folder / self.gguf_file if self.gguf_file else self.folder

    def digest(self) -> str:
        if self.sha256 is None:
            if not self.gguf_file:
                raise CacheError("only GGUF sources have a converted-weight cache")
            self.sha256 = sha256_file(self.path)
        return self.sha256

    @classmethod
    def resolve(cls, name_or_path: str | Path, fetch_missing: bool = False) -> ModelSource:
        """A registry name (its pinned sha256 is used when it has one), a ``.gguf`` file or a HF folder."""
        from qsv_models.hf import resolve_model
        from qsv_models.registry import MODELS

        folder, gguf_file = resolve_model(name_or_path, fetch_missing=fetch_missing)
        spec = MODELS.get(str(name_or_path))
        if gguf_file and not (folder / gguf_file).is_file():
            raise FileNotFoundError(f"model {name_or_path} is not fetched yet: run qsv models fetch {name_or_path}"
                                    if spec else f"no such GGUF file: {folder / gguf_file}")
        return cls(folder, gguf_file, spec.sha256 if spec is not None else None)


@dataclass
class ConvertedWeights:
    """A model's config and the tensors of one precision (from the cache or converted in memory)."""

    precision: str
    config: Any  # transformers PretrainedConfig
    tensors: dict[str, torch.Tensor]
    tied: dict[str, str] = field(default_factory=dict)  # name → name it shares storage with
    vocab_hash: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    integrity: Future | None = None  # sha256 check of the cache file, running while the model is built

    def build(self) -> nn.Module:
        """The model in eval mode, built on the meta device and given these tensors (no copy of float tensors).
        Tensors read from the cache are only trusted once their file's sha256 matched: CacheError otherwise."""
        model = build_model(self.config, self.tensors, self.precision, self.tied)
        if self.integrity is not None and not self.integrity.result():
            raise CacheError("the cache file does not match its sha256 in meta.json")
        return model


# ------------------------------------------------------------------------------------------ dense → precision


def skeleton(config: Any, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def convert_tensors(config: Any, dense: dict[str, torch.Tensor], precision: str) -> ConvertedWeights:
    """The tensors of ``precision`` from a float32 state dict (the dense weights dequantized from the GGUF)."""
    precision = prec.canonical(precision)
    model = skeleton(config, torch.float32)
    linears = set(prec.linear_names(model))
    tied = _tied_names(dense)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in dense.items():
        if name in tied:
            continue
        module, _, leaf = name.rpartition(".")
        if precision == "int8" and module in linears and leaf == "weight":
            _put_int8(out, module, tensor)
        elif precision == "int8":
            out[name] = tensor.float()
        else:
            out[name] = tensor.to(prec.torch_dtype(precision))
    if precision == "int8":  # a tied head is quantized on its own: the embedding stays float
        for name, target in tied.items():
            module, _, leaf = name.rpartition(".")
            if module in linears and leaf == "weight":
                _put_int8(out, module, dense[target])
        tied = {n: t for n, t in tied.items() if n.rpartition(".")[0] not in linears}
    return ConvertedWeights(precision, config, out, tied)


def convert_model(model: nn.Module, precision: str) -> nn.Module:
    """A dense float transformers model in ``precision``, through the same tensors a cache entry holds."""
    return convert_tensors(model.config, dict(model.state_dict()), precision).build()


def _put_int8(out: dict[str, torch.Tensor], module: str, weight: torch.Tensor) -> None:
    q, scale = prec.quantize_weight(weight)
    out[module + QWEIGHT], out[module + WSCALE], out[module + WSUM] = q, scale, prec.weight_row_sums(q, scale)


def _tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    tied = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            tied[name] = seen[key]
        else:
            seen[key] = name
    return tied


def build_model(config: Any, tensors: dict[str, torch.Tensor], precision: str, tied: dict[str, str]) -> nn.Module:
    precision = prec.canonical(precision)
    model = skeleton(config, prec.torch_dtype(precision))
    state = dict(tensors)
    if precision == "int8":
        jobs = []
        for name in prec.linear_names(model):
            q, scale = state.pop(name + QWEIGHT, None), state.pop(name + WSCALE, None)
            if q is None or scale is None:
                raise CacheError(f"int8 weights of {name} missing")
            jobs.append((name, q, scale, state.pop(name + ".bias", None), state.pop(name + WSUM, None)))
        # packing the weights for the GEMM kernels is most of a warm load; the packing op releases the GIL
        jobs.sort(key=lambda job: -job[1].numel())  # largest first: no lone big layer at the end of the pool
        ranges = prec.RowRanges()
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            layers = list(pool.map(lambda job: prec.int8_linear(*job[1:4], shared=ranges, row_sums=job[4]), jobs))
        for (name, *_), layer in zip(jobs, layers, strict=True):
            prec.set_submodule(model, name, layer)
    for name, target in tied.items():
        if target not in state:
            raise CacheError(f"tied tensor {name} refers to missing {target}")
        state[name] = state[target]
    unexpected = _assign(model, state)
    if unexpected:
        raise CacheError(f"unexpected tensors: {unexpected[:5]}")
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise CacheError(f"tensors missing for {still_meta[:5]} (and {max(0, len(still_meta) - 5)} more)")
    _materialize_buffers(model, config)
    return model.eval()


def _assign(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Put each tensor in place of the parameter or buffer of that name (no copy); returns names with no such slot.
    (``load_state_dict`` would ask the quantized layers for state of their own.)"""
    unexpected = []
    for name, tensor in state.items():
        module_name, _, leaf = name.rpartition(".")
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            unexpected.append(name)
            continue
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        elif leaf in module._buffers:
            module._buffers[leaf] = tensor
        else:
            unexpected.append(name)
    return unexpected


def _materialize_buffers(model: nn.Module, config: Any) -> None:
    """Non-persistent buffers (rotary frequencies) are computed at construction; rebuild modules left on meta."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            try:
                fresh = type(module)(config=config)
            except TypeError as exc:
                raise CacheError(f"cannot rebuild {name} ({type(module).__name__}) off the meta device") from exc
            if any(b.is_meta for b in fresh.buffers()):
                raise CacheError(f"{name} still has meta buffers after rebuilding")
            prec.set_submodule(model, name, fresh)


def dense_from_gguf(source: ModelSource) -> tuple[Any, dict[str, torch.Tensor]]:
    """(config, float32 state dict) dequantized from the GGUF by transformers (about a minute for 1.5B)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import GgufConfig

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(source.folder, gguf_file=source.gguf_file, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    config = model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    log.info("dequantized %s in %.1f s", source.path, time.perf_counter() - t0)
    return config, state


def vocab_info(source: ModelSource) -> tuple[str, list[int], Any]:
    """(vocab hash, EOS ids, tokenizer) from the model's tokenizer (read from the GGUF: ~14 s for Qwen, hence
    cached with the converted weights)."""
    from qsv_models.hf import load_tokenizer
    from qsv_models.vocab import vocab_hash

    tokenizer = load_tokenizer(source.path)
    eos = tokenizer.eos_token_id
    return vocab_hash(tokenizer), [] if eos is None else [int(eos)], tokenizer


# ------------------------------------------------------------------------------------------------------ on disk


class WeightCache:
    """The converted-weight cache under ``root`` (default: <model cache>/converted)."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from qsv_models.registry import cache_dir

            root = cache_dir() / "converted"
        self.root = Path(root)

    def entry(self, source: ModelSource, precision: str) -> Path:
        return self.root / source.digest()[:16] / prec.canonical(precision)

    def load(self, source: ModelSource, precision: str, verify: bool = True) -> ConvertedWeights:
        """The cached tensors; CacheError if the entry is missing, stale or corrupt."""
        from safetensors.torch import load_file

        entry = self.entry(source, precision)
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except FileNotFoundError:
            raise CacheError(f"no cache entry at {entry}") from None
        except (OSError, ValueError) as exc:
            raise CacheError(f"unreadable {entry / 'meta.json'}: {exc}") from None
        if meta.get("versions") != library_versions() or meta.get("source_sha256") != source.digest():
            raise CacheError(f"{entry} was written for {meta.get('versions')} / {meta.get('source_sha256')}")
        path = entry / "model.safetensors"
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CacheError(f"{path}: {exc}") from None
        if size != meta.get("size"):
            raise CacheError(f"{path} has {size} bytes, meta.json says {meta.get('size')}")
        integrity = None
        if verify:  # hashing (GIL released) overlaps reading the tensors and building the model
            expected = meta.get("sha256")
            integrity = _HASHER.submit(lambda: sha256_file(path) == expected)
        try:
            tensors = load_file(path)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
            raise CacheError(f"{path}: {exc}") from None
        from transformers import AutoConfig

        config_dict = dict(meta["config"])
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        return ConvertedWeights(meta["precision"], config, tensors, meta.get("tied", {}), meta.get("vocab_hash"),
                                meta.get("eos_token_ids", []), integrity)

    def save(self, source: ModelSource, weights: ConvertedWeights) -> Path:
        """Write an entry atomically (tensors, then meta.json); returns its directory."""
        from safetensors.torch import save_file

        entry = self.entry(source, weights.precision)
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "meta.json").unlink(missing_ok=True)  # the entry is invalid until the new meta lands
        path = entry / "model.safetensors"
        tmp = _tmp_name(path)
        try:
            save_file({k: v.contiguous() for k, v in weights.tensors.items()}, str(tmp))
            _fsync(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {
            "format": FORMAT_VERSION, "precision": weights.precision, "source_sha256": source.digest(),
            "source": str(source.path), "versions": library_versions(), "config": weights.config.to_dict(),
            "tied": weights.tied, "vocab_hash": weights.vocab_hash, "eos_token_ids": weights.eos_token_ids,
            "size": path.stat().st_size, "sha256": sha256_file(path),
        }
        _atomic_write_text(entry / "meta.json", json.dumps(meta, indent=1))
        _fsync_dir(entry)
        return entry

    def remove(self, source: ModelSource, precision: str) -> None:
        shutil.rmtree(self.entry(source, precision), ignore_errors=True)

    def get_or_build(self, source: ModelSource, precision: str,
                     dense: Callable[[], tuple[Any, dict[str, torch.Tensor]]] | None = None,
                     verify: bool = True,
                     vocab: Callable[[], tuple[str, list[int], Any]] | None = None) -> tuple[ConvertedWeights, bool]:
        """(weights, True if they came from the cache). A missing or bad entry is rebuilt from ``dense()`` (default:
        dequantize the GGUF) and saved; a bad one is reported with a warning first. Cached weights are verified
        while ``build()`` runs; ``build_model`` below handles a mismatch found then."""
        try:
            return self.load(source, precision, verify=verify), True
        except CacheError as exc:
            if (self.entry(source, precision) / "meta.json").exists() or "no cache entry" not in str(exc):
                log.warning("converted-weight cache entry unusable, rebuilding: %s", exc)
        return self.rebuild(source, precision, dense, vocab), False

    def rebuild(self, source: ModelSource, precision: str,
                dense: Callable[[], tuple[Any, dict[str, torch.Tensor]]] | None = None,
                vocab: Callable[[], tuple[str, list[int], Any]] | None = None) -> ConvertedWeights:
        config, state = (dense or (lambda: dense_from_gguf(source)))()
        weights = convert_tensors(config, state, precision)
        weights.vocab_hash, weights.eos_token_ids = (vocab or (lambda: vocab_info(source)))()[:2]
        self.save(source, weights)
        return weights

    def build_model(self, source: ModelSource, precision: str,
                    dense: Callable[[], tuple[Any, dict[str, torch.Tensor]]] | None = None,
                    vocab: Callable[[], tuple[str, list[int], Any]] | None = None,
                    ) -> tuple[nn.Module, ConvertedWeights, bool]:
        """(model, weights, from cache): ``get_or_build`` then ``build``; an entry whose sha256 turns out not to
        match while the model was built is rebuilt with a warning."""
        weights, hit = self.get_or_build(source, precision, dense, vocab=vocab)
        try:
            return weights.build(), weights, hit
        except CacheError as exc:
            if not hit:
                raise
            log.warning("converted-weight cache entry unusable, rebuilding: %s", exc)
        weights = self.rebuild(source, precision, dense, vocab)
        return weights.build(), weights, False


_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qsv-cache-sha256")


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
