"""Load the target for serving: precision chosen by calibration (or pinned), weights from the converted cache.

``load_target("qwen-target")`` on a warm machine reads the cached calibration and the chosen precision's cached
weights, and returns in seconds; on a cold one it dequantizes the GGUF once, builds every available precision from
those dense weights, measures each one's cost curve and fidelity (calibration.py), keeps the chosen one, and writes
both caches. HF model folders are loaded directly (no conversion cache) and converted in memory.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cloud_verifier import precision as prec
from cloud_verifier.calibration import (
    FIDELITY_CONTINUATION,
    FIDELITY_PROMPT,
    Assumptions,
    Calibration,
    CalibrationCache,
    CalibrationKey,
    Choice,
    CostCurve,
    choose,
    format_table,
    measure_curve,
    next_token_probs,
    total_variation,
)
from cloud_verifier.target import TargetModel, resolve_device
from cloud_verifier.weight_cache import (
    ConvertedWeights,
    ModelSource,
    WeightCache,
    convert_tensors,
    dense_from_gguf,
    vocab_info,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedTarget:
    target: TargetModel
    vocab_hash: bytes | None
    precision: str
    curve: CostCurve
    choice: Choice | None  # None when pinned
    from_cache: bool  # weights came from the converted-weight cache
    timings: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        how = "pinned" if self.choice is None else self.choice.reason
        return f"{self.precision} ({prec.describe(self.precision)}); {how}"


@dataclass
class _Dense:
    """The dense float32 weights and the tokenizer facts, each read on first use and kept for the rest of a load."""

    source: ModelSource
    _value: tuple[Any, dict[str, torch.Tensor]] | None = None
    _vocab: tuple[str, list[int], Any] | None = None

    def __call__(self) -> tuple[Any, dict[str, torch.Tensor]]:
        if self._value is None:
            self._value = dense_from_gguf(self.source) if self.source.gguf_file else _dense_from_folder(self.source)
        return self._value

    def vocab(self) -> tuple[str, list[int], Any]:
        """(vocab hash, EOS ids, tokenizer); reading a GGUF's tokenizer takes ~14 s for Qwen."""
        if self._vocab is None:
            self._vocab = vocab_info(self.source)
        return self._vocab


def _dense_from_folder(source: ModelSource) -> tuple[Any, dict[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32)
    return model.config, {k: v.detach() for k, v in model.state_dict().items()}


def load_target(name_or_path: str | Path, device: str = "auto", precision: str = prec.AUTO,
                assume: Assumptions | None = None, context: int = 200, reps: int = 3,
                fetch_missing: bool = False, recalibrate: bool = False, weight_cache: WeightCache | None = None,
                calibration_cache: CalibrationCache | None = None,
                say: Callable[[str], None] = log.info) -> LoadedTarget:
    """The target ready to serve (see the module docstring). ``precision``: ``auto`` or a name (precision.py);
    ``recalibrate``: measure again even if a calibration for this machine is cached (e.g. one taken under load)."""
    t_start = time.perf_counter()
    assume = assume or Assumptions()
    precision = prec.canonical(precision)
    dev = resolve_device(device)
    if precision != prec.AUTO:
        prec.check_supported(precision, dev)
    source = ModelSource.resolve(name_or_path, fetch_missing=fetch_missing)
    cached_weights = source.gguf_file is not None
    wcache = weight_cache or WeightCache()
    ccache = calibration_cache or CalibrationCache()
    max_n = assume.max_draft_len + 1
    cpu = prec.cpu_info()
    key = CalibrationKey(source.digest() if cached_weights else str(source.path), cpu.model, cpu.key_flags(),
                         torch.__version__, torch.get_num_threads(), str(dev), context, max_n)
    cal = None if recalibrate else ccache.load(key)
    dense = _Dense(source)
    candidates = prec.available(dev)
    timings: dict[str, float] = {}
    measured_model: dict[str, tuple[TargetModel, ConvertedWeights]] = {}

    if precision == prec.AUTO and (cal is None or not cal.complete):
        say(f"[verifier] calibrating precisions {', '.join(candidates)} on {cpu.model} "
            f"({' '.join(cpu.key_flags()) or 'no SIMD flags read'}), {torch.get_num_threads()} thread(s) ...")
        t0 = time.perf_counter()
        cal = _calibrate(dense, candidates, key, dev, context, reps, max_n, measured_model, assume)
        ccache.save(cal)
        timings["calibration_s"] = time.perf_counter() - t0
    choice = choose(cal.curves, cal.fidelity, assume) if precision == prec.AUTO else None
    chosen = choice.precision if choice else precision
    if choice is not None:
        say("[verifier] precision calibration (cached)" if "calibration_s" not in timings
            else "[verifier] precision calibration")
        say(format_table(choice.rows))
        say(f"[verifier] chosen: {choice.reason}")

    t0 = time.perf_counter()
    if chosen in measured_model:
        target, weights = measured_model.pop(chosen)
        from_cache = False
        if cached_weights:
            weights.vocab_hash, weights.eos_token_ids, _ = dense.vocab()
            wcache.save(source, weights)
    else:
        model, weights, from_cache = _build(source, chosen, dense, wcache, cached_weights)
        target = TargetModel(model, dev, precision=chosen)
    measured_model.clear()
    timings["weights_s"] = time.perf_counter() - t0

    if cal is None or chosen not in cal.curves:  # pinned without a cached curve (or --recalibrate): measure it alone
        t0 = time.perf_counter()
        curve = measure_curve(target, max_n, context, reps)
        cal = cal or ccache.load(key) or Calibration(key, {}, {}, complete=False, measured_at=time.time())
        cal.curves[chosen] = curve
        ccache.save(cal)
        timings["curve_s"] = time.perf_counter() - t0
    curve = cal.curves[chosen]

    vocab_hash = _vocab_hash(weights, dense)
    timings["total_s"] = time.perf_counter() - t_start
    log.info("target %s ready in %.1f s (%s)", source.path, timings["total_s"],
             ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return LoadedTarget(target, vocab_hash, chosen, curve, choice, from_cache, timings)


def load_target_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                          say: Callable[[str], None] = log.info) -> LoadedTarget:
    """``load_target`` with the flags of ``calibration.add_precision_args`` (and ``--model``, ``--device``,
    ``--fetch`` where the command has it); a model that is not there or a precision the device cannot run ends the
    command with one line and exit code 2."""
    try:
        return load_target(args.model, args.device, args.dtype, Assumptions(max_tv=args.max_tv),
                           fetch_missing=getattr(args, "fetch", False), recalibrate=args.recalibrate, say=say)
    except (FileNotFoundError, prec.PrecisionError) as exc:
        parser.error(str(exc))


def _build(source: ModelSource, precision: str, dense: _Dense, wcache: WeightCache,
           cached_weights: bool) -> tuple[torch.nn.Module, ConvertedWeights, bool]:
    if cached_weights:
        return wcache.build_model(source, precision, dense=dense, vocab=dense.vocab)
    config, state = dense()
    weights = convert_tensors(config, state, precision)
    return weights.build(), weights, False


def _vocab_hash(weights: ConvertedWeights, dense: _Dense) -> bytes | None:
    """From the cache entry when it has one, else from the tokenizer (read once per load, shared with calibration)."""
    if weights.vocab_hash:
        return bytes.fromhex(weights.vocab_hash)
    try:
        digest = dense.vocab()[0]
    except (OSError, ValueError, TypeError) as exc:
        log.warning("no tokenizer for %s (%s): sessions are not checked for a vocab match", dense.source.path, exc)
        return None
    return bytes.fromhex(digest)


def _calibrate(dense: _Dense, candidates: list[str], key: CalibrationKey, dev: torch.device, context: int,
               reps: int, max_n: int, keep: dict[str, tuple[TargetModel, ConvertedWeights]],
               assume: Assumptions) -> Calibration:
    """Measure every candidate from the dense weights; the fastest-looking model is kept in ``keep`` (one at a
    time, so at most two models are in memory besides the dense weights)."""
    config, state = dense()
    try:
        tokenizer = dense.vocab()[2]
        prompt_len = len(tokenizer.encode(FIDELITY_PROMPT))
        text_ids = tokenizer.encode(FIDELITY_PROMPT + FIDELITY_CONTINUATION)
    except (OSError, ValueError, TypeError):
        vocab = int(config.vocab_size)  # no tokenizer: a fixed pseudo-random text of ids
        prompt_len, text_ids = 32, [(7919 * i + 13) % vocab for i in range(64)]
    curves: dict[str, CostCurve] = {}
    fidelity: dict[str, float] = {}
    reference = None
    order = ["fp32"] + [c for c in candidates if c != "fp32"] if "fp32" in candidates else list(candidates)
    for name in order:
        t0 = time.perf_counter()
        weights = convert_tensors(config, state, name)
        target = TargetModel(weights.build(), dev, precision=name)
        probs = next_token_probs(target, text_ids, prompt_len)
        if reference is None:
            reference = probs
        fidelity[name] = total_variation(probs, reference)
        curves[name] = measure_curve(target, max_n, context, reps)
        log.info("calibrated %s in %.1f s: pass(1) %.1f ms, pass(5) %.1f ms, TV %.4f", name,
                 time.perf_counter() - t0, curves[name].cost_ms(1), curves[name].cost_ms(min(5, max_n)),
                 fidelity[name])
        keep.clear()
        if choose(curves, fidelity, assume).precision == name:
            keep[name] = (target, weights)
        del target, weights
    return Calibration(key, curves, fidelity, complete=True, measured_at=time.time())
