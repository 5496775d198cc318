"""Q-S drafter on a real onnxruntime SLM (tiny exported model) and the real C core."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from edge_runtime.drafter import QS, SQ, DraftConfig, Drafter, DrafterError, q_distribution
from edge_runtime.slm import OnnxSLM
from qsv_tools.export.tiny import tiny_export

pytestmark = pytest.mark.filterwarnings("ignore")

VOCAB = 64
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def exported():
    return tiny_export("llama", vocab_size=VOCAB, seed=21, logit_scale=6.0)


@pytest.fixture
def slm(exported):
    return OnnxSLM(exported[1].directory)


def torch_next_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


def test_round_record_is_consistent(slm):
    drafter = Drafter(slm, DraftConfig(ell=240, temperature=1.0), seed=1)
    drafter.start(PROMPT)
    record = drafter.draft(5)
    assert record.length == 5 == len(record.points) == len(record.entropies) == len(record.confidences)
    for token, point in zip(record.tokens, record.points, strict=True):
        assert point.ell == 240 and point.vocab_size == VOCAB
        assert point.count_of(token) > 0  # Q-S: every draft lies in the support of the q̂ it was drawn from
    assert all(0.0 < c <= 1.0 for c in record.confidences)
    assert all(0.0 <= h <= np.log2(VOCAB) + 1e-9 for h in record.entropies)
    assert record.core_seconds > 0 and record.slm_seconds > 0


def test_same_seed_same_drafts(exported):
    rounds = []
    for _ in range(2):
        drafter = Drafter(OnnxSLM(exported[1].directory), DraftConfig(ell=16, temperature=1.0), seed=42)
        drafter.start(PROMPT)
        rounds.append(drafter.draft(6).tokens)
    assert rounds[0] == rounds[1]


def test_greedy_drafts_follow_the_argmax_chain(exported, slm):
    model, _ = exported
    drafter = Drafter(slm, DraftConfig(ell=240, temperature=0.0), seed=0)
    drafter.start(PROMPT)
    record = drafter.draft(6)
    seq = list(PROMPT)
    for token in record.tokens:
        assert token == int(np.argmax(torch_next_logits(model, seq)))
        seq.append(token)
    assert record.confidences == [1.0] * 6 and record.entropies == [0.0] * 6


def test_stops_at_eos(exported, slm):
    model, _ = exported
    first = int(np.argmax(torch_next_logits(model, PROMPT)))
    slm.eos_token_ids = [first]
    drafter = Drafter(slm, DraftConfig(temperature=0.0), seed=0)
    drafter.start(PROMPT)
    record = drafter.draft(5)
    assert record.tokens == [first] and record.hit_eos


@pytest.mark.parametrize("accepted", [0, 2, 4])
def test_feedback_rolls_back_and_continues_from_the_right_state(exported, slm, accepted):
    model, _ = exported
    drafter = Drafter(slm, DraftConfig(ell=240, temperature=1.0), seed=3)
    drafter.start(PROMPT)
    record = drafter.draft(4)
    correction = 17
    committed = drafter.feedback(accepted, correction)
    assert committed == record.tokens[:accepted] + [correction]
    assert drafter.committed == PROMPT + committed and slm.length == len(drafter.committed)
    np.testing.assert_allclose(drafter._logits, torch_next_logits(model, drafter.committed), atol=1e-4)
    assert drafter.draft(2).length == 2  # and the next round runs


@pytest.mark.parametrize("record_stats", [True, False])
def test_per_token_early_stop(exported, slm, record_stats):
    """should_continue is asked after each token but the last, with that token's confidence; False ends the round
    there, before the SLM computes another token; the cache stays consistent and the drafts equal the full round's
    prefix (same seed)."""
    config = DraftConfig(ell=240, temperature=1.0, record_stats=record_stats)
    full = Drafter(OnnxSLM(exported[1].directory), config, seed=5)
    full.start(PROMPT)
    reference = full.draft(6)
    asked: list[tuple[float, int]] = []

    def stop_after_three(confidence: float, position: int) -> bool:
        asked.append((confidence, position))
        return position < 3

    drafter = Drafter(slm, config, seed=5)
    drafter.start(PROMPT)
    forwards_before = slm.length
    record = drafter.draft(6, should_continue=stop_after_three)
    assert record.length == 3 and record.stopped_early
    assert record.tokens == reference.tokens[:3]
    assert [p for _, p in asked] == [1, 2, 3]
    for (confidence, _), token, point in zip(asked, record.tokens, record.points, strict=True):
        expected = record.confidences[record.tokens.index(token)] if record_stats else point.count_of(token) / 240
        assert confidence == pytest.approx(expected) and 0.0 < confidence <= 1.0
    assert slm.length == forwards_before + 2  # drafts 1..2 were fed; the 3rd was never computed on
    committed = drafter.feedback(3, 11)
    assert committed == record.tokens + [11] and slm.length == len(drafter.committed)
    never: list[int] = []
    assert drafter.draft(2, should_continue=lambda c, p: never.append(p) or True).length == 2
    assert never == [1]  # not asked after the last token of the round


def test_out_of_order_use_is_rejected(slm):
    drafter = Drafter(slm, DraftConfig(), seed=0)
    with pytest.raises(DrafterError, match="start"):
        drafter.draft(2)
    drafter.start(PROMPT)
    with pytest.raises(DrafterError, match="no round"):
        drafter.feedback(0, 1)
    drafter.draft(3)
    with pytest.raises(DrafterError, match="feedback"):
        drafter.draft(1)
    with pytest.raises(DrafterError, match="outside"):
        drafter.feedback(4, 1)
    with pytest.raises(ValueError, match="mode"):
        DraftConfig(mode="xy")


def _first_token_counts(slm, config: DraftConfig, trials: int) -> tuple[np.ndarray, object]:
    counts = np.zeros(VOCAB, np.int64)
    drafter = Drafter(slm, config, seed=2024)
    point = None
    for trial in range(trials):
        drafter.seed = 2024 + trial  # draws are keyed by (seed, round, position): one seed per trial
        drafter.start(PROMPT)
        record = drafter.draft(1)
        counts[record.tokens[0]] += 1
        point = record.points[0]
        drafter._pending = None  # discard the round: the next start() begins afresh
    return counts, point


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    support = probs > 0
    assert counts[~support].sum() == 0
    return float(stats.chisquare(counts[support], probs[support] * counts.sum()).pvalue)


def test_qs_draft_law_is_qhat(slm):
    """Q-S draws x ~ q̂ exactly: chi-square against q̂, 3,000 draws, seed 2024, reject below p = 0.001."""
    counts, point = _first_token_counts(slm, DraftConfig(ell=16, temperature=1.0, mode=QS), 3000)
    assert _chi2_pvalue(counts, point.probs()) > 1e-3


def test_sq_draft_law_is_q(exported, slm):
    """S-Q draws x ~ q (not q̂): chi-square against q, 3,000 draws, seed 2024, reject below p = 0.001."""
    model, _ = exported
    counts, _ = _first_token_counts(slm, DraftConfig(ell=16, temperature=1.0, mode=SQ), 3000)
    q = q_distribution(torch_next_logits(model, PROMPT), 1.0)
    keep = q * counts.sum() >= 5  # pool the small-expectation cells
    observed, expected = counts[keep], q[keep] * counts.sum()
    if (~keep).any():
        observed = np.append(observed, counts[~keep].sum())
        expected = np.append(expected, q[~keep].sum() * counts.sum())
    expected *= observed.sum() / expected.sum()  # float rounding of Σq
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("next_length", [1, 2, 4])
def test_a_pre_draft_of_any_depth_changes_no_token_and_leaves_the_cache_exact(exported, steps, next_length):
    """Round 1 drafts 3 tokens; during its "wait" the drafter pre-drafts ``steps`` forwards (feed x_L, feed the guess,
    then round 2's drafts, up to 4); the verdict accepts all 3 and answers with the guessed token (a hit) or another
    one (a miss). Round 2 (``next_length`` tokens) and the state after it equal a drafter that never pre-drafted:
    same tokens, same lattice points, same cache length, and the same logits for what comes next."""
    model, export = exported
    config = DraftConfig(ell=16, temperature=0.8)
    for hit in (True, False):
        serial, piped = (Drafter(OnnxSLM(export.directory), config, seed=11) for _ in range(2))
        for d in (serial, piped):
            d.start(PROMPT)
        first = serial.draft(3)
        assert piped.draft(3).tokens == first.tokens
        for _ in range(steps):
            piped.speculate(4)
        guess = piped._pre.guess if piped._pre is not None and piped._pre.guess is not None else 7
        bonus = guess if hit else (guess + 1) % VOCAB
        assert serial.feedback(3, bonus) == piped.feedback(3, bonus)
        a, b = serial.draft(next_length), piped.draft(next_length)
        assert a.tokens == b.tokens and [p.counts.tolist() for p in a.points] == [p.counts.tolist() for p in b.points]
        assert a.messages == b.messages
        serial.feedback(a.length, 5)
        piped.feedback(b.length, 5)
        assert serial.committed == piped.committed and piped.slm.length == len(piped.committed)
        np.testing.assert_allclose(piped._logits, torch_next_logits(model, piped.committed), atol=1e-4)
    assert piped.speculation.rounds >= (1 if steps else 0)
