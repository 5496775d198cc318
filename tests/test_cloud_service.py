"""VerifierService end to end with tiny random-weight models: greedy exactness, eviction + resync, idempotent and
out-of-order rounds, bad requests, batching equivalence, the scheduler, idle expiry.

The "board" is the edge's real Drafter (C core quantizer + Q-S sampling) on a second tiny torch model, its lattice
points codec-encoded as on the wire. The verifier's randomness is a function of (seed, position) and the board keeps
its own state across an eviction, so a run interrupted by evictions and resyncs must produce exactly the tokens of an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cloud_verifier.sampling import SamplingParams
from cloud_verifier.service import ServiceConfig, ServiceErrorCode, VerifierErrorReply, VerifierService
from cloud_verifier.target import TargetModel
from edge_runtime.drafter import DraftConfig, Drafter
from qsv_tools.torch_slm import TorchSLM
from qsv_wire import codec
from qsv_wire.core import quantize_probs
from qsv_wire.protocol import DraftRound, ErrorCode, Feedback, OpenSession
from qsv_wire.protocol import SamplingParams as WireSampling

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (tests/conftest.py)

VOCAB = 96
HASH = hashlib.sha256(b"tiny-vocab").digest()


def tiny_llama(seed: int, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharpen the random logits so drafts are sometimes accepted and rows are not flat
        model.lm_head.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def target() -> TargetModel:
    return TargetModel(tiny_llama(0))


@pytest.fixture(scope="module")
def drafter() -> LlamaForCausalLM:
    return tiny_llama(1, hidden=16, layers=1)


class Board:
    """A simulated board: the real edge :class:`Drafter` (Q-S through the C core) on a tiny torch SLM; lattice points
    travel codec-encoded, as on the wire."""

    def __init__(self, drafter_model: LlamaForCausalLM, session_id: int, prompt: list[int], params: SamplingParams,
                 seed: int, draft_len: int = 3, ell: int = 16, device: str = "board-1") -> None:
        self.session_id, self.params, self.seed, self.device = session_id, params, seed, device
        self.draft_len, self.ell = draft_len, ell
        config = DraftConfig(ell=ell, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                             record_stats=False)
        self.drafter = Drafter(TorchSLM(drafter_model), config, seed=seed)
        self.drafter.start(prompt)
        self.seq = 0

    @property
    def history(self) -> list[int]:
        return self.drafter.committed

    def open_msg(self, resync: bool = False) -> OpenSession:
        wire = WireSampling(self.params.temperature, self.params.top_k, self.params.top_p, self.seed)
        return OpenSession(self.device, self.session_id, tuple(self.history), wire, VOCAB, HASH, self.seq, resync)

    def draft(self) -> DraftRound:
        rnd = self.drafter.draft(self.draft_len)
        blobs = tuple(codec.encode(p, VOCAB, self.ell) for p in rnd.points)
        self.last_points = list(rnd.points)
        return DraftRound(self.session_id, self.seq, len(self.history), VOCAB, self.ell, 0, tuple(rnd.tokens), blobs)

    def retry(self, msg: DraftRound) -> DraftRound:
        """The same drafts again (after a resync), at the current sequence number."""
        return DraftRound(msg.session_id, self.seq, msg.position, msg.vocab_size, msg.ell, msg.codec_mode,
                          msg.tokens, msg.lattice)

    def apply(self, msg: DraftRound, fb: Feedback) -> None:
        assert fb.round_seq == msg.round_seq and fb.position == len(self.history)
        self.drafter.feedback(fb.accepted, fb.next_token)
        self.seq += 1


def run_board(service: VerifierService, board: Board, new_tokens: int, between_rounds=None) -> list[int]:
    """Drive a board until it has ``new_tokens`` more tokens; resync on EVICTED / UNKNOWN_SESSION."""
    target_len = len(board.history) + new_tokens
    assert service.open(board.open_msg()) == len(board.history)
    resyncs = 0
    while len(board.history) < target_len:
        msg = board.draft()
        reply = service.verify(msg)
        while isinstance(reply, VerifierErrorReply):
            assert reply.reason is ServiceErrorCode.EVICTED, reply
            assert reply.code is ErrorCode.UNKNOWN_SESSION
            resyncs += 1
            assert service.open(board.open_msg(resync=True)) == len(board.history)
            msg = board.retry(msg)
            reply = service.verify(msg)
        board.apply(msg, reply)
        if between_rounds is not None:
            between_rounds(board)
    board.resyncs = resyncs
    return board.history[:target_len]


def greedy_reference(model: LlamaForCausalLM, prompt: list[int], new_tokens: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def make_service(target: TargetModel, **overrides) -> VerifierService:
    cfg = ServiceConfig(vocab_hash=HASH, **overrides)
    return VerifierService(target, cfg)


PROMPT = [5, 17, 33, 2, 71, 40]



def test_greedy_verification_reproduces_target_greedy_text(target, drafter) -> None:
    service = make_service(target)
    board = Board(drafter, 1, PROMPT, SamplingParams(temperature=0.0), seed=0, draft_len=4, ell=16)
    out = run_board(service, board, 40)
    assert out == greedy_reference(target.model, PROMPT, 40)
    stats = service.session_stats(1)
    assert 0 < stats["acceptance_rate"] < 1, "the test should exercise both acceptance and rejection"
    assert stats["emitted"] >= 40 and stats["rounds"] < 40


def test_eviction_and_resync_loses_and_duplicates_nothing(target, drafter) -> None:
    params = SamplingParams(temperature=1.0)
    reference = run_board(make_service(target), Board(drafter, 7, PROMPT, params, seed=11), 30)

    service = make_service(target, max_sessions=1)
    other = Board(drafter, 8, [1, 2, 3], params, seed=3)
    rounds = {"n": 0}

    def evict_now_and_then(board: Board) -> None:
        rounds["n"] += 1
        if rounds["n"] % 3 == 0:  # another board opens: with max_sessions=1 this evicts session id 7
            assert service.open(other.open_msg()) == 3

    board = Board(drafter, 7, PROMPT, params, seed=11)
    out = run_board(service, board, 30, between_rounds=evict_now_and_then)
    assert board.resyncs >= 2, "the run should have been evicted and resynced"
    assert out == reference


def test_duplicate_round_is_idempotent_and_out_of_order_is_refused(target, drafter) -> None:
    service = make_service(target)
    board = Board(drafter, 3, PROMPT, SamplingParams(temperature=0.8), seed=4)
    service.open(board.open_msg())
    msg = board.draft()
    first = service.verify(msg)
    assert isinstance(first, Feedback)
    board.apply(msg, first)
    history = service.history(3)
    assert service.verify(msg) == first  # retransmission: stored feedback, nothing re-verified
    assert service.history(3) == history
    skipped = DraftRound(3, board.seq + 1, len(board.history), VOCAB, 16, 0, msg.tokens, msg.lattice)
    reply = service.verify(skipped)
    assert isinstance(reply, VerifierErrorReply) and reply.reason is ServiceErrorCode.OUT_OF_ORDER
    assert reply.code is ErrorCode.DESYNC
    stale = DraftRound(3, board.seq, len(board.history) - 1, VOCAB, 16, 0, msg.tokens, msg.lattice)
    assert service.verify(stale).reason is ServiceErrorCode.OUT_OF_ORDER  # right seq, wrong position
    assert service.history(3) == history
    nxt = board.draft()
    assert isinstance(service.verify(nxt), Feedback)


def _bad_rounds(board: Board) -> list[tuple[DraftRound, ServiceErrorCode]]:
    good = board.draft()
    pts = list(good.lattice)
    outside = next(t for t in range(VOCAB) if board.last_points[0].count_of(t) == 0)
    wrong_ell = quantize_probs(np.full(VOCAB, 1.0 / VOCAB), 8)

    def with_(**kw) -> DraftRound:
        fields = dict(session_id=good.session_id, round_seq=good.round_seq, position=good.position,
                      vocab_size=good.vocab_size, ell=good.ell, codec_mode=0, tokens=good.tokens, lattice=good.lattice)
        fields.update(kw)
        return DraftRound(**fields)

    return [
        (with_(session_id=999), ServiceErrorCode.UNKNOWN_SESSION),
        (with_(tokens=(1,) * 40, lattice=(pts[0],) * 40), ServiceErrorCode.ROUND_TOO_LARGE),
        (with_(tokens=(outside,) + good.tokens[1:]), ServiceErrorCode.MALFORMED_LATTICE),
        (with_(lattice=(wrong_ell,) + good.lattice[1:]), ServiceErrorCode.MALFORMED_LATTICE),
        (with_(lattice=(b"\x00\x01garbage",) + good.lattice[1:]), ServiceErrorCode.MALFORMED_LATTICE),
        (with_(lattice=good.lattice[:-1]), ServiceErrorCode.MALFORMED_ROUND),
        (with_(vocab_size=VOCAB + 1), ServiceErrorCode.VOCAB_MISMATCH),
        (with_(round_seq=5), ServiceErrorCode.OUT_OF_ORDER),
    ]


def test_bad_requests_get_clear_errors_and_leave_sessions_untouched(target, drafter) -> None:
    params = SamplingParams(temperature=0.9, top_k=20)
    reference = run_board(make_service(target), Board(drafter, 2, PROMPT, params, seed=8), 12)

    service = make_service(target)
    victim = Board(drafter, 1, [9, 9, 9], SamplingParams(temperature=0.0), seed=1)
    service.open(victim.open_msg())
    for msg, reason in _bad_rounds(victim):
        before = service.history(1)
        reply = service.verify(msg)
        assert isinstance(reply, VerifierErrorReply), msg
        assert reply.reason is reason, (reason, reply)
        assert reply.message.startswith(reason.name) and reply.code is reason.wire
        assert service.history(1) == before

    bad_open = [
        (OpenSession("b", 4, (1, 2), WireSampling(), VOCAB + 4, HASH), ServiceErrorCode.VOCAB_MISMATCH),
        (OpenSession("b", 4, (1, 2), WireSampling(), VOCAB, b"\x00" * 32), ServiceErrorCode.VOCAB_MISMATCH),
        (OpenSession("b", 4, (1, VOCAB), WireSampling(), VOCAB, HASH), ServiceErrorCode.BAD_PARAMS),
        # bad sampling values never reach the service: SamplingParams refuses them where they are made (decode)
        (OpenSession("b", 4, (), WireSampling(), VOCAB, HASH), ServiceErrorCode.HISTORY_TOO_LARGE),
    ]
    for msg, reason in bad_open:
        reply = service.open(msg)
        assert isinstance(reply, VerifierErrorReply) and reply.reason is reason, (msg, reply)
    assert 4 not in service.sessions

    # the other sessions are unaffected: the same board run gives the same tokens as on a clean service
    assert run_board(service, Board(drafter, 2, PROMPT, params, seed=8), 12) == reference
    assert service.metrics.value("errors_total", reason="MALFORMED_LATTICE") == 3


def test_batched_rounds_equal_one_at_a_time(target, drafter) -> None:
    params = [SamplingParams(temperature=1.0), SamplingParams(temperature=0.0), SamplingParams(temperature=0.7,
                                                                                               top_p=0.9)]
    prompts = [PROMPT, [4, 4], list(range(20, 45)), [88]]
    solo_service, batch_service = make_service(target), make_service(target)
    solo = [Board(drafter, i, p, params[i % 3], seed=i) for i, p in enumerate(prompts)]
    batch = [Board(drafter, i, p, params[i % 3], seed=i) for i, p in enumerate(prompts)]
    for s, b in zip(solo, batch, strict=True):
        solo_service.open(s.open_msg())
        batch_service.open(b.open_msg())
    for _ in range(6):
        msgs = [b.draft() for b in batch]
        replies = batch_service.verify_many(msgs)
        for b, m, r in zip(batch, msgs, replies, strict=True):
            b.apply(m, r)
        for s in solo:
            m = s.draft()
            s.apply(m, solo_service.verify(m))
    assert [s.history for s in solo] == [b.history for b in batch]
    assert batch_service.metrics._hists["batch_size"].counts[2] == 6  # six forwards of 4 rounds (bucket ≤ 4)


def test_scheduler_batches_concurrent_boards(target, drafter) -> None:
    service = make_service(target, max_batch=8, max_wait_s=0.05)
    boards = [Board(drafter, 100 + i, [i + 1, 7, 9], SamplingParams(temperature=1.0), seed=i) for i in range(6)]
    reference = [run_board(make_service(target), Board(drafter, b.session_id, [i + 1, 7, 9], b.params, seed=i), 10)
                 for i, b in enumerate(boards)]
    results: dict[int, list[int]] = {}
    with service:
        threads = [threading.Thread(target=lambda b=b: results.__setitem__(b.session_id, run_board(service, b, 10)))
                   for b in boards]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert [results[b.session_id] for b in boards] == reference
    hist = service.metrics._hists["batch_size"]
    assert sum(hist.counts[1:]) > 0, "some forwards should have carried more than one round"
    assert service.scheduler.items == service.metrics.value("rounds_total")


def test_idle_sessions_expire_and_report_evicted(target, drafter) -> None:
    now = {"t": 0.0}
    service = VerifierService(target, ServiceConfig(vocab_hash=HASH, idle_timeout_s=10.0), clock=lambda: now["t"])
    board = Board(drafter, 5, PROMPT, SamplingParams(temperature=0.0), seed=0)
    service.open(board.open_msg())
    now["t"] = 11.0
    assert service.expire_idle() == [5]
    msg = board.draft()
    reply = service.verify(msg)
    assert reply.reason is ServiceErrorCode.EVICTED and "idle" in reply.message
    assert service.open(board.open_msg(resync=True)) == len(board.history)
    service.close(5)
    assert service.verify(msg).reason is ServiceErrorCode.UNKNOWN_SESSION


def test_memory_budget_evicts_least_recently_used(target, drafter) -> None:
    one = target.prefill(PROMPT[:-1]).nbytes
    service = make_service(target, memory_budget_bytes=int(2.5 * one))
    for sid in (1, 2, 3):
        service.open(Board(drafter, sid, PROMPT, SamplingParams(), seed=sid).open_msg())
    assert 1 not in service.sessions and 2 in service.sessions and 3 in service.sessions
    assert service.sessions.kv_bytes <= 2.5 * one
    reply = service.verify(Board(drafter, 1, PROMPT, SamplingParams(), seed=1).draft())
    assert reply.reason is ServiceErrorCode.EVICTED and "memory" in reply.message


@pytest.mark.parametrize("limit", ["memory", "count"])
def test_the_heaviest_device_pays_for_eviction(target, drafter, limit: str) -> None:
    """A quiet device's older session survives another device opening more than fits: that device's own least
    recently used session goes (plain LRU would evict the quiet one)."""
    one = target.prefill(PROMPT[:-1]).nbytes
    limits = {"memory_budget_bytes": int(3.5 * one)} if limit == "memory" else {"max_sessions": 3}
    service = make_service(target, **limits)
    service.open(Board(drafter, 10, PROMPT, SamplingParams(), seed=10, device="quiet").open_msg())
    for sid in (1, 2, 3):
        service.open(Board(drafter, sid, PROMPT, SamplingParams(), seed=sid, device="heavy").open_msg())
    assert 10 in service.sessions and 1 not in service.sessions
    assert 2 in service.sessions and 3 in service.sessions
    reply = service.verify(Board(drafter, 1, PROMPT, SamplingParams(), seed=1, device="heavy").draft())
    assert reply.reason is ServiceErrorCode.EVICTED


def test_bad_round_inside_a_batch_leaves_the_others_exact(target, drafter) -> None:
    params = SamplingParams(temperature=1.0)
    solo_service, batch_service = make_service(target), make_service(target)
    solo = [Board(drafter, i, PROMPT[: 3 + i], params, seed=20 + i) for i in range(3)]
    batch = [Board(drafter, i, PROMPT[: 3 + i], params, seed=20 + i) for i in range(3)]
    for s, b in zip(solo, batch, strict=True):
        solo_service.open(s.open_msg())
        batch_service.open(b.open_msg())
    msgs = [b.draft() for b in batch]
    broken = DraftRound(1, msgs[1].round_seq, msgs[1].position, VOCAB, 16, 0, msgs[1].tokens,
                        (b"\xff\xff",) + msgs[1].lattice[1:])
    replies = batch_service.verify_many([msgs[0], broken, msgs[2], msgs[0]])  # + a retransmission of round 0
    assert replies[1].reason is ServiceErrorCode.MALFORMED_LATTICE
    assert replies[3] == replies[0], "a duplicate in the same batch is answered with the stored feedback"
    for i in (0, 2):
        alone = solo_service.verify(solo[i].draft())
        assert (alone.accepted, alone.next_token) == (replies[i].accepted, replies[i].next_token)
        np.testing.assert_allclose(alone.accept_probs, replies[i].accept_probs, rtol=1e-5)
    assert batch_service.history(1) == solo[1].history


def test_rounds_past_the_model_context_are_refused(target, drafter) -> None:
    service = make_service(target)
    limit = target.max_positions
    assert limit == 512
    too_long = OpenSession("b", 9, tuple([3] * (limit + 1)), WireSampling(), VOCAB, HASH)
    assert service.open(too_long).reason is ServiceErrorCode.HISTORY_TOO_LARGE
    board = Board(drafter, 9, [3] * (limit - 2), SamplingParams(temperature=0.0), seed=0, draft_len=3)
    assert service.open(board.open_msg()) == limit - 2
    reply = service.verify(board.draft())
    assert reply.reason is ServiceErrorCode.HISTORY_TOO_LARGE and "context" in reply.message
    assert service.history(9) == [3] * (limit - 2)


def test_replies_encode_on_the_wire(target, drafter) -> None:
    from qsv_wire.protocol import ErrorReply, decode, encode

    service = make_service(target)
    board = Board(drafter, 12, PROMPT, SamplingParams(temperature=1.0), seed=2)
    service.open(board.open_msg())
    msg = decode(encode(board.draft()))  # the round as the transport hands it over (lattice points as bytes)
    feedback = service.verify(msg)
    back = decode(encode(feedback))
    assert (back.accepted, back.next_token, back.position) == (feedback.accepted, feedback.next_token, msg.position)
    err = service.verify(msg.__class__(**{**msg.__dict__, "session_id": 77}))
    wire = decode(encode(err))
    assert isinstance(wire, ErrorReply) and wire.code is ErrorCode.UNKNOWN_SESSION
    assert wire.message.startswith("UNKNOWN_SESSION")
