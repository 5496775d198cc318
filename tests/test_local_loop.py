"""End to end in one process: ONNX drafter (Q-S, C core) + cloud_verifier.verify_round + PyTorch target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from cloud_verifier.target import TargetModel
from edge_runtime.drafter import DraftConfig, Drafter
from edge_runtime.slm import OnnxSLM
from qsv_tools.export.tiny import tiny_causal_lm, tiny_export
from qsv_tools.local_loop import run_local_loop, target_greedy

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]

PROMPT = [5, 3, 8, 1, 9, 2]



def two_token_law(model, vocab: int) -> np.ndarray:
    """P(t1, t2 | PROMPT) at temperature 1, as a (V, V) array."""
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([PROMPT])).logits[0, -1].double(), -1).numpy()
        batch = torch.tensor([PROMPT + [t] for t in range(vocab)])
        p2 = torch.softmax(model(batch).logits[:, -1].double(), -1).numpy()
    return p1[:, None] * p2


def test_greedy_loop_equals_target_greedy():
    """Temperature 0: the output is the target's own greedy decoding, token for token, whatever the drafts."""
    vocab, seed = 64, 31
    target = TargetModel(tiny_causal_lm("qwen2", vocab_size=vocab, seed=seed, logit_scale=4.0), device="cpu")
    _, export = tiny_export("qwen2", vocab_size=vocab, seed=seed, logit_scale=4.0, noise=0.5)
    reference = target_greedy(target, PROMPT, 24)
    for draft_length in (1, 3, 5):
        drafter = Drafter(OnnxSLM(export.directory), DraftConfig(ell=240, temperature=0.0), seed=0)
        result = run_local_loop(drafter, target, PROMPT, 24, draft_length, torch.Generator().manual_seed(0))
        assert result.tokens == reference
        # the check means something only if drafts were both accepted and rejected
        assert 0 < result.accepted < result.drafted


@pytest.mark.slow
@pytest.mark.parametrize(("pipeline", "draft_len"), [("off", 2), ("always", 1)])
def test_output_law_of_first_two_tokens_is_the_targets(pipeline, draft_len):
    """Temperature 1, ℓ = 8 (q̂ far from q), V = 12: the law of the first two output tokens equals the target's
    p(t1) p(t2 | t1). G-test over the 144 pairs (cells with expectation < 5 pooled), 1,000 runs with seeds
    0..999; the test fails below p = 0.001. Run serially (L = 2) and with pre-drafting to full depth during every
    wait (L = 1, so that the second token comes from a pre-draft whenever the first round's guess was right): the
    law must hold on both paths."""
    vocab, seed, runs = 12, 41, 1000
    target_model = tiny_causal_lm("llama", vocab_size=vocab, seed=seed, logit_scale=3.0)
    target = TargetModel(target_model, device="cpu")
    draft_model, export = tiny_export("llama", vocab_size=vocab, seed=seed, logit_scale=3.0, noise=0.8)
    slm = OnnxSLM(export.directory)
    slm.eos_token_ids = []
    config = DraftConfig(ell=8, temperature=1.0, record_stats=False)
    counts = np.zeros((vocab, vocab), np.int64)
    accepted = drafted = hits = misses = 0
    for run in range(runs):
        drafter = Drafter(slm, config, seed=run)
        result = run_local_loop(drafter, target, PROMPT, 3, draft_len, torch.Generator().manual_seed(run),
                                pipeline=pipeline)
        counts[result.tokens[0], result.tokens[1]] += 1
        hits += drafter.speculation.hits
        misses += drafter.speculation.rounds - drafter.speculation.hits
        accepted, drafted = accepted + result.accepted, drafted + result.drafted
    assert 0 < accepted < drafted  # both branches of verification were exercised
    if pipeline == "always":  # pre-drafts were both kept and thrown away
        assert hits > 50 and misses > 50, (hits, misses)
    law = two_token_law(target_model, vocab)
    expected = law.ravel() * runs
    observed = counts.ravel()
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    exp *= obs.sum() / exp.sum()
    g_stat, pvalue = stats.power_divergence(obs, exp, lambda_="log-likelihood")
    assert pvalue > 1e-3, f"G = {g_stat:.1f}, p = {pvalue:.2g}"
    # the drafter's own law is far from the target's, so a loop that leaked draft bias would fail this test
    draft_law = two_token_law(draft_model, vocab)
    assert 0.5 * np.abs(draft_law - law).sum() > 0.1


@pytest.mark.parametrize("temperature", [0.0, 0.5])
def test_same_seed_same_tokens_with_pipelining_on_or_off(temperature):
    """Pre-drafting changes no token: serial, pre-drafting to full depth before looking at the verdict, and
    "auto" against a verifier on its own thread give the same tokens for seeds 0..5 (L = 3, ℓ = 16, 40 tokens),
    and the pipelined runs kept some pre-drafts and discarded others."""
    vocab, seed = 64, 51
    target_model = tiny_causal_lm("qwen2", vocab_size=vocab, seed=seed, logit_scale=6.0)
    _, export = tiny_export("qwen2", vocab_size=vocab, seed=seed, logit_scale=6.0, noise=0.05)
    slm = OnnxSLM(export.directory)
    slm.eos_token_ids = []
    config = DraftConfig(ell=16, temperature=temperature)
    hits = discarded = 0
    for run in range(6):
        outputs = {}
        for pipeline, threaded in (("off", False), ("always", False), ("auto", True)):
            drafter = Drafter(slm, config, seed=run)
            result = run_local_loop(drafter, TargetModel(target_model, device="cpu"), PROMPT, 40, 3,
                                    torch.Generator().manual_seed(run), pipeline=pipeline, threaded=threaded)
            outputs[pipeline] = result.tokens
            if pipeline == "always":
                hits += drafter.speculation.hits
                discarded += drafter.speculation.rounds - drafter.speculation.hits
                assert sum(r.reused for r in result.rounds) == drafter.speculation.reused_tokens
        assert outputs["always"] == outputs["off"] and outputs["auto"] == outputs["off"], run
    assert hits > 0 and discarded > 0, (hits, discarded)


def _hf_folder(path, seed: int, words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tiny_causal_lm("llama", vocab_size=len(words), seed=seed, logit_scale=4.0).save_pretrained(path)
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token=words[0], eos_token=words[1]).save_pretrained(path)
    return path


def test_qsv_local_cli_runs_a_pair_and_refuses_mismatched_tokenizers(tmp_path, monkeypatch, capsys):
    from qsv_tools.local_loop import main

    monkeypatch.setenv("QSV_CACHE", str(tmp_path / "cache"))
    words = ["<unk>", "</s>"] + [w.strip(".,") for w in "Ad sales boost Time Warner profit Quarterly profits at US "
                                 "media giant TimeWarner jumped Article Summary".split()] + [f"w{i}" for i in range(40)]
    draft = _hf_folder(tmp_path / "draft", 1, words)
    target = _hf_folder(tmp_path / "target", 1, words)
    args = ["--draft", str(draft), "--draft-variant", "fp32", "--max-new-tokens", "6", "-L", "2", "--temperature", "0"]
    assert main([*args, "--target", str(target)]) == 0
    out = capsys.readouterr().out
    assert "overall acceptance" in out
    swapped = _hf_folder(tmp_path / "swapped", 1, [words[0], words[1], *reversed(words[2:])])
    assert main([*args, "--target", str(swapped)]) == 1
    assert "different tokenizers" in capsys.readouterr().err
