"""The real parts over MQTT: the round engine with the Drafter (C core quantizer + Q-S sampler; its small model is
a seeded toy, as TorchSLM's cache rollback is broken with this transformers version), the lattice codec, the MQTT
link, and the batching PyTorch VerifierService (tiny random Llama) behind two MQTT workers. A worker that stops
mid-generation leaves the token stream identical to the fault-free networked run (the verifier draws from (seed,
position), the drafter from (seed, round, position), pre-drafting on); ``tiny_llama`` is unused by the drafter for
that reason. The same faults on the whole real stack (kill -9 of worker processes, the SmolLM2 pair, the board
runtime) are in tests/test_faults.py."""

from __future__ import annotations

import hashlib

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from doubles.toy import ToyModel, ToySLM  # noqa: E402

from cloud_verifier.mqtt_service import MqttVerifierService, WorkerConfig  # noqa: E402
from cloud_verifier.service import ServiceConfig, VerifierService  # noqa: E402
from cloud_verifier.target import TargetModel  # noqa: E402
from edge_runtime.controller import StaticController  # noqa: E402
from edge_runtime.drafter import DraftConfig, Drafter  # noqa: E402
from edge_runtime.engine import RoundEngine  # noqa: E402
from edge_runtime.transport.remote import EdgeTransportConfig, MqttLink, RemoteVerifier  # noqa: E402

VOCAB = 96
HASH = hashlib.sha256(b"tiny-vocab").digest()
PROMPT = [5, 17, 33, 2, 71]
N_TOKENS, L = 48, 4


def tiny_llama(seed: int) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def target() -> TargetModel:
    return TargetModel(tiny_llama(0), "cpu")


def generate_tokens(drafter: Drafter, remote: RemoteVerifier, max_new_tokens: int, seed: int,
                    vocab_hash: bytes) -> list[int]:
    engine = RoundEngine(drafter, MqttLink(remote), StaticController(L, drafter.config.ell), vocab_hash=vocab_hash)
    return engine.generate(PROMPT, max_new_tokens, seed).tokens


def make_worker(broker, target: TargetModel, worker_id: str, group: str) -> MqttVerifierService:  # noqa: ANN001
    core = VerifierService(target, ServiceConfig(vocab_hash=HASH, worker_id=worker_id, max_wait_s=0.0005)).start()
    return MqttVerifierService(core, broker.endpoint("verifier"), WorkerConfig(worker_id, group=group)).start()


def generate(broker, device: str, stop_worker_at: int | None = None, workers=()) -> tuple[list[int], RemoteVerifier]:  # noqa: ANN001
    drafter = Drafter(ToySLM(ToyModel(vocab_size=VOCAB, seed=3, scale=3.0)), DraftConfig(ell=240, temperature=0.8),
                      seed=7)
    remote = RemoteVerifier(device, broker.endpoint(device),
                            EdgeTransportConfig(feedback_timeout_s=0.5, open_timeout_s=1.0)).connect()
    if stop_worker_at is not None:  # stop the worker that holds the session after a few rounds
        send = remote.send

        def send_with_fault(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if remote.stats.rounds == stop_worker_at:
                next(w for w in workers if w.config.worker_id == remote.worker_id).stop()
            return send(*args, **kwargs)

        remote.send = send_with_fault  # type: ignore[method-assign]
    try:
        tokens = generate_tokens(drafter, remote, N_TOKENS, seed=99, vocab_hash=HASH)
    finally:
        remote.disconnect()
    return tokens, remote


def test_real_parts_survive_a_worker_loss(mosquitto_broker, target: TargetModel) -> None:
    workers = [make_worker(mosquitto_broker, target, "rp-1", "g-rp"), make_worker(mosquitto_broker, target, "rp-2",
                                                                                  "g-rp")]
    try:
        clean, clean_remote = generate(mosquitto_broker, "dev-a")
        assert len(clean) == N_TOKENS and clean_remote.stats.resyncs == 0
        faulty, remote = generate(mosquitto_broker, "dev-b", stop_worker_at=4, workers=workers)
        assert remote.stats.resyncs >= 1
    finally:
        for w in workers:
            w.stop()
    assert faulty == clean
    assert clean_remote.stats.rounds < N_TOKENS  # some drafts were accepted (more than one token per round)
