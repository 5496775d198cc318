"""What runs on a board: the config's SLM, sampling and controller, a session with the verifier group over the
config's broker, and the round engine between them. Torch-free (onnxruntime, numpy, cffi, paho-mqtt)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_runtime.config import BoardConfig
from edge_runtime.controller.factory import controller_from_config
from edge_runtime.drafter import DraftConfig, Drafter
from edge_runtime.engine import PIPELINE_MODES, Generation, PipelineChooser, RoundEngine, RoundStat
from edge_runtime.slm import OnnxSLM, slm_from_config, vocab_hash_of
from edge_runtime.transport.endpoint import endpoint_from_config
from edge_runtime.transport.remote import EdgeTransportConfig, MqttLink, RemoteVerifier, RemoteVerifierError

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 4096


class RequestError(ValueError):
    """A generation request the runtime refuses (``code`` names the reason for the client)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue. ``prompt`` is text (tokenized on the board) or ``prompt_ids`` token ids."""

    id: str = ""
    prompt: str | None = None
    prompt_ids: tuple[int, ...] | None = None
    max_new_tokens: int = 64
    seed: int | None = None  # None: the config's sampling.seed
    pipeline: str | None = None  # None: the runtime's --pipeline

    def __post_init__(self) -> None:
        if self.pipeline is not None and self.pipeline not in PIPELINE_MODES:
            raise RequestError(f"pipeline must be one of {', '.join(PIPELINE_MODES)}, got {self.pipeline!r}")
        if (self.prompt is None) == (self.prompt_ids is None):
            raise RequestError("give exactly one of prompt (text) or prompt_ids (token ids)")
        if self.prompt is not None and not self.prompt:
            raise RequestError("prompt is empty")
        if self.prompt_ids is not None and not self.prompt_ids:
            raise RequestError("prompt_ids is empty")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise RequestError(f"max_new_tokens must be in 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise RequestError(f"seed must be in 0..2^63-1, got {self.seed}")


def round_event(stat: RoundStat) -> dict:
    """A round's stats as the JSON the runtime streams (times in ms)."""
    return {
        "index": stat.index, "drafted": stat.drafted, "ell": stat.ell, "accepted": stat.accepted,
        "tokens": stat.new_tokens, "lattice_bytes": stat.lattice_bytes, "token_id_bits": stat.token_id_bits,
        "bound_bits": stat.bound_bits, "draft_ms": 1e3 * stat.draft_s, "wait_ms": 1e3 * stat.wait_s,
        "verify_ms": 1e3 * stat.verify_s, "feedback_ms": 1e3 * stat.feedback_s, "model_ms": 1e3 * stat.model_s,
        "overhead_ms": 1e3 * stat.overhead_s, "reused": stat.reused, "predraft_ms": 1e3 * stat.predraft_s,
        "predraft_hit": stat.predraft_hit,
    }


class TextStream:
    """Decoded text of a growing token list, handed out as deltas (multi-byte characters may span tokens; when
    the text so far changes, the whole new text is handed out)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self.decode = decode
        self.text = ""

    def delta(self, tokens: Sequence[int]) -> str:
        text = self.decode(tokens)
        new = text[len(self.text):] if text.startswith(self.text) else text
        self.text = text
        return new


_MS_FIELDS = {"draft_ms": "draft_s", "wait_ms": "wait_s", "verify_ms": "verify_s", "feedback_ms": "feedback_s",
              "model_ms": "model_s", "overhead_ms": "overhead_s", "predraft_ms": "predraft_s"}


def round_stat_from_event(event: dict) -> RoundStat:
    """The inverse of :func:`round_event` (a client rebuilding the board's per-round stats)."""
    fields = {k: v for k, v in event.items() if k in RoundStat.__dataclass_fields__}
    fields.update({s_name: event[ms_name] / 1e3 for ms_name, s_name in _MS_FIELDS.items()})
    fields["new_tokens"] = list(event["tokens"])
    return RoundStat(**fields)


def summary_event(run: Generation) -> dict:
    n = len(run.tokens)
    return {
        "tokens": run.tokens, "rounds": len(run.rounds), "prefill_ms": 1e3 * run.prefill_s,
        "decode_ms": 1e3 * run.decode_s, "tokens_per_s": n / run.decode_s if run.decode_s > 0 else 0.0,
        "acceptance": run.acceptance_rate, "tokens_per_round": run.tokens_per_round,
        "predraft_hit_rate": run.predraft_hit_rate, "precision": run.precision, "stopped_by_eos": run.stopped_by_eos,
    }


class BoardRuntime:
    """One board: loads the config's model and controller, keeps a session with the verifier group, runs one
    generation at a time (callers on several threads queue on a lock)."""

    def __init__(self, cfg: BoardConfig, pipeline: str = "auto", transport: EdgeTransportConfig | None = None,
                 slm: OnnxSLM | None = None) -> None:
        self.config = cfg
        self.endpoint = endpoint_from_config(cfg)  # credentials read (and refused) before the model loads
        self.slm = slm or slm_from_config(cfg)
        if self.slm.tokenizer is None:
            log.warning("no tokenizer: requests must give prompt_ids")
        self.controller = controller_from_config(cfg, self.slm.vocab_size)
        s, c = cfg.sampling, cfg.controller
        self.draft_config = DraftConfig(ell=c.static_ell, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        self.vocab_hash = self._vocab_hash()
        self.transport = transport or EdgeTransportConfig()
        self.pipeline = pipeline
        self.chooser = PipelineChooser()  # "auto" pipelining learns across generations
        self.remote: RemoteVerifier | None = None
        self.generations = 0
        self.last_error = ""
        self.started = time.time()
        self._lock = threading.Lock()

    def _vocab_hash(self) -> bytes:
        vocab_hash = vocab_hash_of(self.config, self.slm)
        if vocab_hash == bytes(32):
            log.warning("the export has no vocab_hash: the verifier cannot check that the vocabularies match")
        return vocab_hash

    # ----------------------------------------------------------------------------------------------- connection
    def connect(self) -> None:
        """Connect to the broker (raises RemoteVerifierError when refused or unreachable)."""
        if self.remote is not None:
            return
        remote = RemoteVerifier(self.config.broker.client_id or self.config.device.id, self.endpoint, self.transport)
        remote.connect()
        self.remote = remote
        log.info("connected to %s as %s", self.config.broker.url, self.config.device.id)

    def close(self) -> None:
        with self._lock:
            if self.remote is not None:
                self.remote.disconnect()
                self.remote = None

    # ----------------------------------------------------------------------------------------------- generation
    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.prompt_ids is not None:
            bad = [t for t in request.prompt_ids if not 0 <= t < self.slm.vocab_size]
            if bad:
                raise RequestError(f"token id {bad[0]} outside the vocabulary 0..{self.slm.vocab_size - 1}")
            return list(request.prompt_ids)
        if self.slm.tokenizer is None:
            raise RequestError("this board has no tokenizer: send prompt_ids")
        assert request.prompt is not None
        ids = self.slm.encode(request.prompt)
        if not ids:
            raise RequestError("the prompt has no tokens")
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.slm.decode(token_ids) if self.slm.tokenizer is not None else ""

    def generate(self, request: GenerationRequest,
                 on_round: Callable[[Generation, RoundStat], None] | None = None) -> Generation:
        ids = self.prompt_ids(request)
        with self._lock:
            if self.remote is None:
                self.connect()
            assert self.remote is not None
            seed = self.config.sampling.seed if request.seed is None else request.seed
            drafter = Drafter(self.slm, self.draft_config, seed=seed)
            engine = RoundEngine(drafter, MqttLink(self.remote), self.controller, request.pipeline or self.pipeline,
                                 self.vocab_hash, chooser=self.chooser)
            try:
                run = engine.generate(ids, request.max_new_tokens, seed, on_round)
            except RemoteVerifierError as exc:
                self.last_error = str(exc)
                raise
            self.generations += 1
            return run

    def health(self) -> dict:
        remote = self.remote
        return {
            "status": "ok", "pid": os.getpid(), "device": self.config.device.id, "config": self.config.source,
            "broker": self.config.broker.url, "connected": remote is not None and remote.client.is_connected(),
            "worker": remote.worker_id if remote is not None else None, "generations": self.generations,
            "model": str(self.slm.export.directory / self.slm.export.meta["files"][self.slm.variant]),
            "controller": self.controller.name, "pipeline": self.pipeline, "uptime_s": time.time() - self.started,
            "last_error": self.last_error,
        }
