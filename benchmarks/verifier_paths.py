"""Every CPU path the verifier could run the target in, side by side in one process: pass costs and fidelity.

The kept paths (cloud_verifier.precision: fp32, bf16, int8 with per-token activation ranges) and the ones measured
and dropped: PyTorch's stock dynamic int8 (one activation scale per pass: not row-independent), int8 weight-only
(``_weight_int8pack_mm``, bf16 activations) and int4 weight-only (``_weight_int4pack_mm_for_cpu``, groups of 32,
bf16 activations). For each: c(1), c(5), c(13) in ms (one pass over n tokens after a 200-token history, min of 3
interleaved repeats), c(5)/c(1), and the mean total-variation distance from fp32 on the calibration text.

    python benchmarks/verifier_paths.py [--model qwen-target] [--threads 1] [--paths fp32,bf16,int8,...]
    python benchmarks/verifier_paths.py --device cuda        # on a GPU machine: fp32, bf16, fp16
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch
from torch import nn

from cloud_verifier import precision as prec
from cloud_verifier.calibration import FIDELITY_CONTINUATION, FIDELITY_PROMPT, measure_curve, next_token_probs
from cloud_verifier.target import TargetModel
from cloud_verifier.weight_cache import ModelSource, convert_tensors, dense_from_gguf, vocab_info

PATHS = ("fp32", "bf16", "int8", "fp16", "torch-dynamic-int8", "int8-weight-only", "int4-weight-only")
CUDA_PATHS = ("fp32", "bf16", "fp16")


class WeightOnlyInt8(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = prec.quantize_weight(linear.weight)
        self.out_features = q.shape[0]
        self.q, self.scale = q, scale.to(torch.bfloat16)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.q, self.scale)
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


class WeightOnlyInt4(nn.Module):
    def __init__(self, linear: nn.Linear, group: int = 32) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        out_f, in_f = w.shape
        self.out_features = out_f
        g = w.reshape(out_f, in_f // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = (hi - lo).clamp(min=1e-8) / 15
        q = torch.clamp(torch.round((g - lo) / scale), 0, 15).to(torch.int32).reshape(out_f, in_f)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8)
        zero = lo + scale * 8
        self.scales_zeros = torch.stack([scale.squeeze(-1).t(), zero.squeeze(-1).t()], -1).contiguous().to(
            torch.bfloat16)
        self.group = group
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, x.shape[-1]), self.packed, self.group,
                                                        self.scales_zeros)
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def build(path: str, config, dense: dict[str, torch.Tensor], device: str) -> TargetModel:  # noqa: ANN001
    if path in ("fp32", "bf16", "int8", "fp16"):
        return TargetModel(convert_tensors(config, dense, path).build(), device, precision=path)
    model = convert_tensors(config, dense, "fp32" if path == "torch-dynamic-int8" else "bf16").build()
    if path == "torch-dynamic-int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    else:
        wrap = WeightOnlyInt8 if path == "int8-weight-only" else WeightOnlyInt4
        for name in prec.linear_names(model):
            prec.set_submodule(model, name, wrap(model.get_submodule(name)))
    return TargetModel(model, "cpu", precision=path)


def main(argv: list[str] | None = None) -> int:
    from qsv_wire.logs import add_logging_args, setup_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen-target")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", help=f"comma-separated (default on a CPU: all but fp16; on CUDA: {','.join(CUDA_PATHS)})")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the GPU benchmark of the verifier's precisions)")
    add_logging_args(p)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    default = CUDA_PATHS if cuda else tuple(x for x in PATHS if x != "fp16")
    paths = [x for x in (args.paths.split(",") if args.paths else default) if x]
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or args.threads < 1:
        p.error(f"unknown paths {unknown}; choose from {', '.join(PATHS)}" if unknown else "--threads must be >= 1")
    setup_logging(args)
    torch.set_num_threads(args.threads)
    try:
        source = ModelSource.resolve(args.model)
    except FileNotFoundError as exc:
        p.error(str(exc))
    print(f"# {args.model} · {args.threads} thread(s) · CPU {prec.cpu_info().model} "
          f"[{' '.join(prec.cpu_info().key_flags())}] · torch {torch.__version__}", flush=True)
    config, dense = dense_from_gguf(source)
    tokenizer = vocab_info(source)[2]
    prompt_len = len(tokenizer.encode(FIDELITY_PROMPT))
    text = tokenizer.encode(FIDELITY_PROMPT + FIDELITY_CONTINUATION)
    reference = None
    print(f"{'path':20s} {'build s':>8s} {'c(1) ms':>8s} {'c(5) ms':>8s} {'c(13) ms':>9s} {'c5/c1':>6s} "
          f"{'TV vs fp32':>10s}", flush=True)
    for path in ["fp32"] + [x for x in paths if x != "fp32"]:
        t0 = time.perf_counter()
        target = build(path, config, dense, args.device)
        built = time.perf_counter() - t0
        probs = next_token_probs(target, text, prompt_len).cpu()
        reference = probs if reference is None else reference
        tv = float(((probs - reference).abs().sum(-1) / 2).mean())
        curve = measure_curve(target, 13)
        if path in paths:
            print(f"{path:20s} {built:8.1f} {curve.cost_ms(1):8.1f} {curve.cost_ms(5):8.1f} {curve.cost_ms(13):9.1f} "
                  f"{curve.cost_ms(5) / curve.cost_ms(1):6.2f} {tv:10.4f}", flush=True)
        del target, probs
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
