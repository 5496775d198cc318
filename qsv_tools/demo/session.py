"""One demo run: models → broker + verifier worker → edge generations (streamed) → target alone → table."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

from edge_runtime.config import default_config
from edge_runtime.engine import Generation
from edge_runtime.runtime.board import round_stat_from_event
from edge_runtime.runtime.client import EdgeClient, generation_of
from qsv_tools.demo import report
from qsv_tools.demo.baseline import BaselineRun
from qsv_tools.demo.processes import DemoStack
from qsv_tools.demo.profiles import Profile
from qsv_tools.demo.steps import (
    DraftVocabulary,
    controller_settings,
    demo_prompts,
    prepare_models,
    quiet_libraries,
    say,
)
from qsv_wire.cpu import cpu_info

RULE = "─" * 100


class DemoSession:
    def __init__(self, args: argparse.Namespace, profile: Profile, prompts: int, tokens: int) -> None:
        self.args = args
        self.profile = profile
        self.prompts_n = prompts
        self.tokens_n = tokens
        self.config = default_config()
        self.precision: dict = {}  # the verifier worker's PRECISION report
        self.first_round_s: float | None = None  # worker spawn → first feedback received

    def run(self) -> int:
        args, profile = self.args, self.profile
        quiet_libraries()
        say(f"[demo] profile {profile.name}: edge {profile.draft_label} (ONNX {profile.variant}, onnxruntime, "
            f"{args.edge_threads} thread{'s' * (args.edge_threads > 1)}) → cloud {profile.target_label} "
            f"(PyTorch, precision {profile.target_dtype}, CPU, {args.cloud_threads} "
            f"thread{'s' * (args.cloud_threads > 1)})")
        export_dir = prepare_models(profile)
        slm = DraftVocabulary(export_dir)  # the board runtime loads the model itself; here: tokens and text
        prompts = demo_prompts(self.prompts_n, profile.prompt_chars)
        prompt_ids = [slm.encode(text) for _, text in prompts]
        controller, controller_text = controller_settings(args.controller, self.config)
        worker_args = ["--model", profile.target, "--dtype", profile.target_dtype, "--device", "cpu"]
        security = ("plain TCP, passwords + per-device ACLs (--no-tls)" if args.no_tls
                    else "mutual TLS, certificate CN = username, per-device ACLs")
        say(f"[demo] starting mosquitto ({security}) and the verifier worker (qsv verifier --model "
            f"{profile.target} --dtype {profile.target_dtype}) ...")
        edge_runs: list[Generation] = []
        serial_runs: list[Generation] = []
        with DemoStack(worker_args, tls=not args.no_tls, cloud_threads=args.cloud_threads,
                       workdir=args.workdir) as stack:
            say(f"[demo] broker 127.0.0.1:{stack.port}, generated config in {stack.workdir / 'broker'}; verifier "
                f"worker pid {stack.worker.pid if stack.worker else '?'} loading {profile.target} ...")
            board = stack.write_board_config(slm.model_path(profile.variant), args.edge_threads, controller,
                                             {"temperature": args.temperature, "seed": args.seed})
            edge_start_s = stack.spawn_edge(board)
            say(f"[demo] board runtime: qsv edge --config {board} (pid {stack.edge.pid if stack.edge else '?'}, "
                f"serving after {edge_start_s:.1f} s)")
            stack.wait_ready()
            self.precision = stack.precision_report() or {}
            self._say_precision()
            say(f"[demo] verifier worker ready after {stack.worker_ready_s:.1f} s")
            say(f"[demo] controller: {controller_text}")
            say(f"[demo] sampling: temperature {args.temperature}, {self.tokens_n} new tokens per prompt, "
                f"{len(prompts)} prompt{'s' * (len(prompts) > 1)}, seed {args.seed}; Q-S drafting, exact verification; "
                f"pipelining {args.pipeline}")
            with EdgeClient(stack.edge_socket) as client:
                for index, ((label, _), ids) in enumerate(zip(prompts, prompt_ids, strict=True)):
                    edge_runs.append(self._edge_prompt(stack, client, slm, index, label, ids, args.pipeline))
                    if args.serial_baseline and args.pipeline != "off":
                        serial_runs.append(self._edge_prompt(stack, client, slm, index, label, ids, "off"))
            say(RULE)
            stack.stop_edge()
            stack.stop_worker()  # frees its CPU threads and memory before the baseline runs
        # one copy of the target at a time (an fp32 1.5B model holds ~7 GB): the baselines load after the worker exits
        verifier_precision = self.precision.get("precision", profile.target_dtype)
        baselines: dict[str, list[BaselineRun]] = {}
        for name in self._baseline_precisions(verifier_precision):
            say(f"[demo] cloud-only baseline: the target alone, precision {name}, decodes the same prompts:")
            target = self._load_target(name)
            baselines[name] = self._baseline(target, prompt_ids, slm)
            del target
        say(RULE)
        say(f"SUMMARY  profile {profile.name} · {len(prompts)} prompt{'s' * (len(prompts) > 1)} × up to "
            f"{self.tokens_n} new tokens · temperature {args.temperature} · controller {args.controller} · "
            f"pipelining {args.pipeline} · CPU {cpu_info().label()}")
        summary = report.Summary(edge_runs, baselines, verifier_precision, self.precision, stack.worker_ready_s,
                                 self.first_round_s, slm.vocab_size, self.config.channel.uplink_bps, serial_runs)
        say(summary.table())
        if args.json:
            args.json.write_text(json.dumps(summary.as_dict(), indent=1) + "\n")
            say(f"[demo] figures written to {args.json}")
        return 0

    def _say_precision(self) -> None:
        report_ = self.precision
        if not report_:
            return
        rows = report_.get("rows") or []
        if rows:
            from cloud_verifier.calibration import format_table

            threads = self.args.cloud_threads
            say(f"[demo] the verifier's precision calibration (pass = one target forward over n tokens, {threads} "
                f"thread{'s' * (threads > 1)}):")
            for line in format_table(rows).splitlines():
                say("   " + line)
        say(f"[demo] verifier precision: {report_.get('reason', report_.get('precision'))}")
        timings = report_.get("timings") or {}
        if timings:
            say("[demo] verifier load: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items())
                + (" (weights from the converted cache)" if report_.get("weights_from_cache") else ""))

    def _baseline_precisions(self, verifier_precision: str) -> list[str]:
        """The verifier's precision, the calibration's fastest cloud-only precision, and with --baselines all every
        precision the calibration measured."""
        rows = self.precision.get("rows") or []
        names = [verifier_precision]
        if rows:
            fastest = max(rows, key=lambda r: r["cloud_only_tokens_per_s"])["precision"]
            names.append(fastest)
            if self.args.baselines == "all":
                names += [r["precision"] for r in rows]
        return list(dict.fromkeys(names))

    def _edge_prompt(self, stack: DemoStack, client: EdgeClient, slm, index: int, label: str,  # noqa: ANN001
                     ids: list[int], pipeline: str) -> Generation:
        """One prompt through the board runtime (``qsv edge``), its rounds printed as they stream in."""
        say(RULE)
        mode = "serial, pipelining off" if pipeline == "off" else f"pipelining {pipeline}"
        say(f"prompt {index + 1}/{self.prompts_n}: {label} ({len(ids)} tokens; {mode})")
        say(report.ROUND_HEADER)
        events: list[dict] = []
        for event in client.stream(prompt_ids=ids, max_new_tokens=self.tokens_n, seed=self.args.seed + index,
                                   pipeline=pipeline, request_id=f"prompt-{index + 1}-{pipeline}"):
            events.append(event)
            if event["event"] == "round":
                if self.first_round_s is None:
                    self.first_round_s = time.monotonic() - stack.spawned_at
                say(report.round_line(round_stat_from_event(event), event.get("text", "")))
        run = generation_of(ids, events)
        say(report.prompt_summary(run))
        say(f" text: {events[-1].get('text', '')!r}")
        return run

    def _load_target(self, precision: str):  # noqa: ANN202 - cloud_verifier.target.TargetModel (lazy torch)
        import torch

        from cloud_verifier.loading import load_target

        torch.set_num_threads(self.args.cloud_threads)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' GGUF dequantization progress bar
            loaded = load_target(self.profile.target, "cpu", precision)
        say(f" target loaded in this process in {time.perf_counter() - t0:.1f} s ({loaded.precision}"
            f"{', weights from the converted cache' if loaded.from_cache else ''})")
        return loaded.target

    def _baseline(self, target, prompt_ids: list[list[int]], slm) -> list[BaselineRun]:  # noqa: ANN001
        import torch

        from cloud_verifier import SamplingParams
        from qsv_tools.demo.baseline import run_target_alone

        runs = []
        for index, ids in enumerate(prompt_ids):
            generator = torch.Generator().manual_seed(self.args.seed + index)
            run = run_target_alone(target, ids, self.tokens_n, SamplingParams(self.args.temperature), generator,
                                   slm.eos_token_ids)
            rate = len(run.tokens) / run.decode_s if run.decode_s > 0 else 0.0
            say(f" prompt {index + 1}/{len(prompt_ids)}: {len(run.tokens)} tokens, decode {run.decode_s:.1f} s "
                f"({rate:.2f} tokens/s), prefill {run.prefill_s:.1f} s: {slm.decode(run.tokens)!r}")
            runs.append(run)
        return runs
