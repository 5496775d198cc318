"""End-to-end exactness of the service: the first token the verifier commits follows the target model's p.

3,000 boards open the same prompt, each drafts two tokens from the C core's lattice point (ℓ = 4, far from q) of a
second tiny model with its own seed, and the service verifies the rounds in batches of 100 (one padded forward each).
Pearson chi-square of the first committed token (x_1 if accepted, else the residual draw) against the target's p at
the prompt's end (cells with expected count < 5 pooled); must pass at significance 1e-3 with the fixed seeds.
Control (the test's power): S-Q boards (x_1 drawn from q, q̂ still sent; a draft outside supp(q̂) counted as accepted,
α = min(1, p/0) = 1) must be rejected at p < 1e-6.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import LlamaConfig, LlamaForCausalLM

from cloud_verifier.sampling import SamplingParams, target_probs
from cloud_verifier.service import ServiceConfig, VerifierService
from cloud_verifier.target import TargetModel
from cloud_verifier.weight_cache import convert_model
from qsv_wire import core
from qsv_wire.protocol import DraftRound, Feedback, OpenSession
from qsv_wire.protocol import SamplingParams as WireSampling

VOCAB, ELL, BOARDS, CHUNK = 64, 4, 3000, 100
PROMPT = [3, 14, 15, 9, 26]


def tiny(seed: int, scale: float) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


def first_token_counts(order: str, boards: int = BOARDS, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Counts of the first committed token over ``boards`` sessions, and the target's p at the prompt's end as the
    target computes it in ``precision`` (the law the verifier is exact with respect to)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        target = TargetModel(convert_model(tiny(0, 6.0), precision), precision=precision)
        drafter = tiny(1, 6.0)
        params = SamplingParams(temperature=1.0)
        with torch.no_grad():
            alone = target.forward_round(target.prefill(PROMPT[:-1]), PROMPT[-1:])  # a 1-token pass, as cloud-only
            p1 = target_probs(alone.logits[-1], params).numpy()
            q1_logits = drafter(torch.tensor([PROMPT])).logits[0, -1].numpy()
            point1 = core.quantize_logits(q1_logits, ELL)
            q1 = torch.softmax(torch.from_numpy(q1_logits).double(), -1).numpy()
            second = {}
            for tok in range(VOCAB):
                if point1.count_of(tok) or order == "sq":
                    logits = drafter(torch.tensor([PROMPT + [tok]])).logits[0, -1].numpy()
                    second[tok] = core.quantize_logits(logits, ELL)
        service = VerifierService(target, ServiceConfig(max_sessions=boards, memory_budget_bytes=1 << 32))
        counts = np.zeros(VOCAB, dtype=np.int64)
        rng = np.random.default_rng(2024)
        for start in range(0, boards, CHUNK):
            msgs = []
            for sid in range(start, start + CHUNK):
                seed = int.from_bytes(hashlib.sha256(f"exact:{sid}".encode()).digest()[:4], "little")
                service.open(OpenSession("b", sid, tuple(PROMPT), WireSampling(seed=seed), VOCAB, b"\0" * 32))
                if order == "qs":
                    x1 = core.sample(point1, int(rng.integers(0, ELL)))
                else:  # S-Q: the board samples from q and still sends q̂ (drafts outside supp(q̂) are refused)
                    x1 = int(rng.choice(VOCAB, p=q1 / q1.sum()))
                    if point1.count_of(x1) == 0:
                        counts[x1] += 1  # what an S-Q verifier with α = min(1, p/0) = 1 would commit
                        continue
                x2 = core.sample(second[x1], int(rng.integers(0, ELL)))
                msgs.append(DraftRound(sid, 0, len(PROMPT), VOCAB, ELL, 0, (x1, x2), (point1, second[x1])))
            for msg, fb in zip(msgs, service.verify_many(msgs), strict=True):
                assert isinstance(fb, Feedback), fb
                counts[msg.tokens[0] if fb.accepted >= 1 else fb.next_token] += 1
            for sid in range(start, start + CHUNK):
                service.close(sid)
        return counts, p1
    finally:
        torch.set_num_threads(before)


def chi_square_pooled(counts: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    n = counts.sum()
    expected = n * p
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    result = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    return float(result.statistic), float(result.pvalue), float(0.5 * np.abs(counts / n - p).sum())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_service_output_follows_the_target(precision: str, record_property) -> None:
    """In each precision path the committed token follows that path's own p (int8: per-token activation ranges,
    so the 1-token pass above and the verifier's 3-token round pass give the same row)."""
    counts, p1 = first_token_counts("qs", precision=precision)
    statistic, pvalue, tv = chi_square_pooled(counts, p1)
    line = f"[service QS {precision}] chi2={statistic:.1f} p-value={pvalue:.3g} TV={tv:.4f} boards={BOARDS}"
    print(line)
    record_property("service_qs_pvalue", pvalue)
    assert counts[p1 == 0].sum() == 0
    assert pvalue > 1e-3, line


def test_sq_control_is_rejected(record_property) -> None:
    counts, p1 = first_token_counts("sq", boards=1000)
    statistic, pvalue, tv = chi_square_pooled(counts, p1)
    line = f"[service SQ control] chi2={statistic:.1f} p-value={pvalue:.3g} TV={tv:.4f} boards=1000"
    print(line)
    record_property("service_sq_pvalue", pvalue)
    assert pvalue < 1e-6, line
