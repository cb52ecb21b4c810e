"""The pairwise LLM judge on a tiny random Llama, and a policy evaluated against itself."""

import pytest
import torch
from instrument_helpers import lab_items, lab_tokenizer

from tether.instruments.llm_judge import PairwiseLLMJudge
from tether.instruments.policy import evaluate_policy
from tether.models import build_tiny_llama

TEMPLATE = "{prompt} {first} or {second}"  # lab words only; the answer is read right after the second
PROMPTS = ["what is 3 plus 4 ? answer:", "describe the sea . answer:", "how do i make a cake ? answer:"]
FIRST = ["it is 7 .", "blue waves", "flour eggs sugar"]
SECOND = ["it is 9 .", "sorry", "i can not help with that ."]


@pytest.fixture(scope="module")
def judge():
    tok = lab_tokenizer()
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=5)
    with torch.no_grad():  # embeddings (tied to the LM head) of std 1, not 0.02: logits far from uniform
        weights = torch.randn(len(tok), 16, generator=torch.Generator().manual_seed(0))
        model.get_input_embeddings().weight.copy_(weights)
    return PairwiseLLMJudge(model, tok, template=TEMPLATE, answers=("yes", "no"), batch_size=2)


def test_swapping_responses_gives_one_minus_p(judge):
    """P(x over y) = ½[P_A(x, y) + 1 − P_A(y, x)], P(y over x) = ½[P_A(y, x) + 1 − P_A(x, y)]: they sum to 1
    (exactly in arithmetic; here up to float32 rounding, the two orders sitting in differently padded
    batches)."""
    p = judge.prefer(PROMPTS, FIRST, SECOND)
    q = judge.prefer(PROMPTS, SECOND, FIRST)
    assert all(a == pytest.approx(1 - b, abs=1e-6) for a, b in zip(p, q, strict=True))
    assert any(abs(a - 0.5) > 1e-4 for a in p)  # a random model still has opinions


def test_identical_responses_are_a_tie_and_batching_changes_nothing(judge):
    """x against x: ½[P_A(x, x) + 1 − P_A(x, x)] = ½ (up to float32 rounding across padded batches). Left
    padding must not change any probability."""
    assert judge.prefer(PROMPTS, FIRST, FIRST) == pytest.approx([0.5] * 3, abs=1e-6)
    one = PairwiseLLMJudge(
        judge.model, judge.tokenizer, template=TEMPLATE, answers=("yes", "no"), batch_size=1
    )
    assert one.prefer(PROMPTS, FIRST, SECOND) == pytest.approx(judge.prefer(PROMPTS, FIRST, SECOND), abs=1e-5)


def test_answers_must_be_distinct_tokens():
    tok = lab_tokenizer()
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError):
        PairwiseLLMJudge(model, tok, answers=("yes", "yes"))


def test_policy_against_itself_has_zero_kl_and_even_odds(judge):
    """The same random model as policy and base, independently sampled: KL(π‖π) = 0 exactly (closed form
    per token) and, the LLM judge being symmetric, E[win-rate] = ½ — inside its 95% interval."""
    tok = judge.tokenizer
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=9)
    items = lab_items(tok, PROMPTS * 8)
    res = evaluate_policy(model, model, tok, items, judge=judge, lab=True, max_new_tokens=6)
    ins = res["instruments"]
    assert ins["kl_from_base"]["value"] == 0.0 and ins["kl_from_base"]["n"] == 24
    lo, hi = ins["win_rate_vs_base"]["ci95"]
    assert lo <= 0.5 <= hi and ins["win_rate_vs_base"]["judge"] == "llm"
    assert ins["rm_reward_scale"]["value"] is None and "reward model" in ins["rm_reward_scale"]["reason"]
