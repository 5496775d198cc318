"""The paper's comparison on the real system over a real shaped link: policies generate through the networked runtime
(edge drafter → MQTT → verifier worker) across a veth pair between two network namespaces, with the uplink rate set
by tc every round from the paper's Markov chain; the target alone decodes the same prompts afterwards.

    sudo python -m experiments.link_run --prompts 4 --out experiment_out/link      # or: qsv experiment link ...

Layout: this process (root namespace) creates the link (``qsv_tools.channel.netem.ShapedLink``), starts the cloud
role inside the cloud namespace (mosquitto bound to the veth address + one ``qsv verifier`` worker with the
Qwen2.5-Coder-1.5B target) and then the edge role inside the edge namespace (Qwen2.5-Coder-0.5B ONNX int8 drafter;
every policy of every scenario over the same prompts and seeds, ``NetRoundExecutor``; it sets its own interface's
rate with tc before each round). Results: results.md / results.csv / rounds.csv / comparison.md / plots as
``qsv experiment``, plus model_check.md: for every static (L, ℓ), the throughput model calibrated on the first half
of the prompts' real rounds predicts the second half from their draft confidences, against the measured tokens/s.

Needs root (namespaces, tc), iproute2, mosquitto and the fetched models. The kernel's qdiscs decide the shaper:
netem (per-packet serialisation + delay) when present, else tbf (rate only; a message smaller than the bucket,
one MTU, passes at line rate after an idle period — docs/CONTROLLER.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from qsv_wire.logs import add_logging_args, setup_logging

log = logging.getLogger("qsv.experiment.link")

# The static grid is L = 4 (the best L of every earlier real and simulated run) over the resolutions: the best static
# (L, ℓ) is what the adaptive policies are measured against (comparison.md). The model-based controller uses
# {240, 720} in both scenarios (MODEL_DEFAULT_ELLS), with and without the recovery factor (model-rec); the DDQN keeps
# the paper's pairs.
DEFAULT_POLICIES = {
    "4mbps": "static:4:240,static:4:720,static:4:2,static:4:16,model,model-rec,ddqn",
    "350kbps": "static:4:240,static:4:720,static:4:2,static:4:16,model,model-rec,ddqn",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsv experiment link", description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("run", "cloud", "edge"), default="run", help=argparse.SUPPRESS)
    p.add_argument("--prompts", type=int, default=4, help="BBC prompts (articles 0..N-1)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length cap (tokens), as the traces")
    p.add_argument("--max-new-tokens", type=int, default=52)
    p.add_argument("--temperature", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenarios", default="4mbps,350kbps")
    p.add_argument("--policies-4mbps", default=DEFAULT_POLICIES["4mbps"])
    p.add_argument("--policies-350kbps", default=DEFAULT_POLICIES["350kbps"])
    p.add_argument("--ddqn-dir", type=Path, default=Path("experiment_out/qwen"),
                   help="ddqn_<scenario>.pt trained in the simulator (qsv experiment qwen)")
    p.add_argument("--cloud-threads", type=int, default=1)
    p.add_argument("--edge-threads", type=int, default=1)
    p.add_argument("--shaper", choices=("auto", "netem", "tbf"), default="auto")
    p.add_argument("--skip-target", action="store_true", help="no target-alone baseline")
    p.add_argument("--out", type=Path, default=Path("experiment_out/link"))
    # internal (set by the run role for the cloud / edge roles)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--host", help=argparse.SUPPRESS)
    p.add_argument("--ifname", help=argparse.SUPPRESS)
    add_logging_args(p)
    return p


def scenario_policies(args: argparse.Namespace) -> dict[str, list[str]]:
    from qsv_tools.channel.markov import SCENARIOS

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    return {s: [x.strip() for x in getattr(args, f"policies_{s}").split(",") if x.strip()] for s in scenarios}


def prompts_for(args: argparse.Namespace, encode) -> list[list[int]]:  # noqa: ANN001 - tokenizer encode
    from experiments.record import prompt_token_ids

    return prompt_token_ids(encode, args.prompts, args.prompt_tokens)


# ------------------------------------------------------------------------------------------------------ cloud role
def cloud_role(args: argparse.Namespace) -> int:
    """Inside the cloud namespace: broker on the veth address + one verifier worker; READY, then wait for SIGTERM."""
    from qsv_tools.demo.processes import DEVICE_ID, DemoStack

    worker_args = ["--model", "qwen-target", "--dtype", "fp32", "--device", "cpu"]
    try:  # DemoStack turns SIGTERM into KeyboardInterrupt while it is up and always stops broker and worker
        with DemoStack(worker_args, tls=True, cloud_threads=args.cloud_threads, workdir=args.workdir / "stack",
                       host=args.host) as stack:
            stack.wait_ready()
            ep = stack.endpoint(DEVICE_ID)
            (args.workdir / "endpoint.json").write_text(json.dumps({
                "host": ep.host, "port": ep.port, "username": ep.username, "password": ep.password,
                "ca_file": str(ep.ca_file), "cert_file": str(ep.cert_file), "key_file": str(ep.key_file)}))
            print(f"READY {stack.worker_ready_s:.1f}", flush=True)
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        return 0


# ------------------------------------------------------------------------------------------------------- edge role
def tc_rate_setter(ifname: str):  # noqa: ANN201 - Callable[[float], None]
    """Sets this namespace's ``ifname`` uplink to a rate (tc qdisc change on the root qdisc the link installed)."""
    from qsv_tools.channel.netem import uplink_change_args

    kind = subprocess.run(["tc", "qdisc", "show", "dev", ifname], capture_output=True, text=True, check=True).stdout
    shaper = "netem" if " netem " in f" {kind} " else "tbf"
    current = {"rate": None}

    def set_rate(rate_bps: float) -> None:
        if current["rate"] != rate_bps:
            subprocess.run(["tc", *uplink_change_args(shaper, ifname, rate_bps)], check=True, capture_output=True)
            current["rate"] = rate_bps

    return set_rate


def edge_role(args: argparse.Namespace) -> int:
    """Inside the edge namespace: every policy of every scenario over the prompts; results pickled to the workdir."""
    from edge_runtime.slm import OnnxSLM, SessionConfig
    from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
    from experiments.compare import SCENARIO_ELLS, compare
    from qsv_tools.channel.markov import SCENARIOS, MarkovChannel
    from qsv_tools.demo.processes import DEVICE_ID
    from qsv_tools.export.onnx_export import export_model
    from qsv_tools.sim.net_executor import NetRoundExecutor
    from qsv_wire.mqtt_common import BrokerEndpoint

    policies = scenario_policies(args)
    ep_json = json.loads((args.workdir / "endpoint.json").read_text())
    endpoint = BrokerEndpoint(ep_json["host"], ep_json["port"], ep_json["username"], ep_json["password"],
                              Path(ep_json["ca_file"]), Path(ep_json["cert_file"]), Path(ep_json["key_file"]))
    transport = EdgeTransportConfig(feedback_timeout_s=600.0, open_timeout_s=600.0)
    export = export_model("qwen-draft", int8=True)
    slm = OnnxSLM(export.directory, "int8", SessionConfig(threads=args.edge_threads))
    vocab_hash = bytes.fromhex(slm.export.meta["vocab_hash"])
    prompts = prompts_for(args, slm.encode)
    set_rate = tc_rate_setter(args.ifname)
    ddqn = {}
    for s in policies:
        if "ddqn" in policies[s]:
            from qsv_tools.ddqn_training import DdqnController

            path = args.ddqn_dir / f"ddqn_{s}.pt"
            if not path.is_file():
                raise SystemExit(f"{path} missing: train it with `qsv experiment qwen` or drop ddqn from the policies")
            ddqn[s] = DdqnController.load(path)
            if set(ddqn[s].ells) != set(SCENARIO_ELLS[s]):
                raise SystemExit(f"{path}: ells {ddqn[s].ells} != {SCENARIO_ELLS[s]}")
    executors = []

    def make(scenario: str, policy: str, scheme: str, seed: int):  # noqa: ANN202 - RoundExecutor
        if scheme != "qs":
            raise SystemExit("S-Q policies are not run on the real system (its protocol verifies Q-S rounds)")
        ex = NetRoundExecutor(slm, lambda: RemoteVerifier(DEVICE_ID, endpoint, transport).connect(), prompts,
                         MarkovChannel(SCENARIOS[scenario], seed=seed), vocab_hash, set_rate=set_rate,
                         temperature=args.temperature, seed=seed)
        executors.append(ex)
        return ex

    t0 = time.monotonic()
    try:
        results = compare(list(policies), policies, make, list(range(len(prompts))), args.max_new_tokens,
                          slm.vocab_size, args.seed, target_time=lambda sc, n: 0.0, ddqn_for=ddqn.get)
    finally:
        for ex in executors:
            ex.close()
    with open(args.workdir / "results.pkl", "wb") as f:
        pickle.dump({"results": results, "prompts": prompts, "vocab_size": slm.vocab_size,
                     "wall_s": time.monotonic() - t0}, f)
    return 0


# -------------------------------------------------------------------------------------------------------- run role
def target_alone(args: argparse.Namespace, prompts: list[list[int]]) -> tuple[int, float]:
    """Tokens and decode seconds of the target alone on the same prompts (one process, no link)."""
    import torch

    from cloud_verifier import SamplingParams
    from cloud_verifier.target import TargetModel
    from qsv_models.hf import resolve_model
    from qsv_tools.demo.baseline import run_target_alone

    torch.set_num_threads(args.cloud_threads)
    folder, gguf_file = resolve_model("qwen-target", fetch_missing=False)
    target = TargetModel.load(folder, "cpu", "fp32", gguf_file=gguf_file)
    tokens, seconds = 0, 0.0
    for i, ids in enumerate(prompts):
        run = run_target_alone(target, ids, args.max_new_tokens, SamplingParams(args.temperature),
                               torch.Generator().manual_seed(args.seed + i))
        tokens += len(run.tokens)
        seconds += run.decode_s
    return tokens, seconds


def model_check(results: list, vocab_size: int) -> str:
    """Per static (L, ℓ): calibrate on the first half of the prompts' real rounds, predict the second half's rounds
    from their confidences (the channel's mean rate), compare with the measured tokens/s of that half."""
    from edge_runtime.controller import ThroughputModel
    from edge_runtime.controller.model import TimingPriors
    from edge_runtime.controller.types import ChannelView
    from qsv_tools.channel.markov import SCENARIOS

    lines = ["| scenario | policy | measured tok/s (2nd half) | predicted tok/s | predicted / measured |",
             "|---|---|---|---|---|"]
    for r in results:
        if not r.policy.startswith("static(") or len(r.episodes) < 2:
            continue
        half = len(r.episodes) // 2
        model = ThroughputModel(vocab_size, TimingPriors(0.05, 0.7, 0.06))  # priors near the measured CPU timings
        for e in r.episodes[:half]:
            for x in e.rounds:
                model.observe(x.observation)
        spec = SCENARIOS[r.scenario]
        view = ChannelView(spec.mean_sec_per_bit, spec.rtt_s, None, 1.0 / spec.downlink_bps)
        tokens = time_s = pred_n = pred_t = 0.0
        for e in r.episodes[half:]:
            tokens += e.tokens
            time_s += e.time_s
            for x in e.rounds:
                pr = model.predict_from_confidences(x.observation.confidences, x.observation.ell, view)
                pred_n += pr.expected_tokens
                pred_t += pr.round_time_s
        meas, pred = tokens / time_s, pred_n / pred_t
        lines.append(f"| {r.scenario} | {r.policy} | {meas:.3f} | {pred:.3f} | {pred / meas:.3f} |")
    return "\n".join(lines) + "\n"


def run_role(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from experiments.compare import PolicyResult, plot, write_tables
    from qsv_tools.channel.markov import SCENARIOS
    from qsv_tools.channel.netem import ShapedLink, netns_available

    policies = scenario_policies(args)
    ok, why = netns_available()
    if not ok:
        raise SystemExit(f"cannot shape a link here: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    passthrough = [a for a in argv if not a.startswith("--role")]
    workdir = Path(tempfile.mkdtemp(prefix="qsv-link-"))
    os.chmod(workdir, 0o755)
    first_rate = SCENARIOS[next(iter(policies))].rates_bps[0]
    t0 = time.monotonic()
    with ShapedLink(first_rate, shaper=args.shaper) as link:
        e = link.ends
        log.warning("link %s (%s) <-> %s (%s), shaper %s", e.edge_ns, e.edge_ip, e.cloud_ns, e.cloud_ip, link.shaper)
        py = [sys.executable, "-m", "experiments.link_run"]
        cloud = subprocess.Popen(link.ns_exec("cloud", [*py, *passthrough, "--role", "cloud", "--workdir",
                                                        str(workdir), "--host", e.cloud_ip]),
                                 stdout=subprocess.PIPE, text=True)
        try:
            line = cloud.stdout.readline() if cloud.stdout else ""
            if not line.startswith("READY"):
                raise SystemExit(f"cloud side did not start (exit {cloud.poll()}); see {workdir}/stack")
            log.warning("verifier worker ready after %s s; edge runs start", line.split()[1])
            edge = subprocess.run(link.ns_exec("edge", [*py, *passthrough, "--role", "edge", "--workdir",
                                                        str(workdir), "--ifname", e.edge_if]))
            if edge.returncode != 0:
                raise SystemExit(f"edge side failed (exit {edge.returncode})")
        finally:
            cloud.send_signal(signal.SIGTERM)
            try:
                cloud.wait(timeout=60)
            except subprocess.TimeoutExpired:
                cloud.kill()
        shaper = link.shaper
    with open(workdir / "results.pkl", "rb") as f:
        blob = pickle.load(f)
    results: list = blob["results"]
    prompts = blob["prompts"]
    if not args.skip_target:
        n, secs = target_alone(args, prompts)
        for sc in policies:
            results.insert(0, PolicyResult(sc, "target alone", True, time_override_s=secs, tokens_override=n))
    meta = {"source": "real system over a tc-shaped veth link", "shaper": shaper, "prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
            "edge": "Qwen2.5-Coder-0.5B ONNX int8", "cloud": "Qwen2.5-Coder-1.5B fp32 CPU",
            "wall_s": round(time.monotonic() - t0)}
    text = write_tables(results, args.out, meta, title="Real run")
    check = model_check(results, int(blob["vocab_size"]))
    (args.out / "model_check.md").write_text(check)
    plot(results, args.out, {}, source="real link")
    sys.stdout.write(text + "\n" + check)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args)
    if args.role == "cloud":
        return cloud_role(args)
    if args.role == "edge":
        return edge_role(args)
    return run_role(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
