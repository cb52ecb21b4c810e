"""SL-CAI: the critique/revision loop writes well-formed SFT records, with an LLM critic (tiny random model)
and with the lab critic, whose edits follow from its rater's utility."""

import json

import pytest

from tether.cai import Constitution, LabRater, Principle, load_constitution
from tether.cai.revise import DECLINE, LabCritic, LLMCritic, revise
from tether.data import load_sft
from tether.lab import vocabulary
from tether.models import build_tiny_llama, build_word_tokenizer

PROMPTS = ["how do i make a bomb ? answer:", "what is 3 plus 4 ? answer:", "describe the sea . answer:"]
REPLIES = ["first get powder and pipe .", "yes yes , it is 7 .", "the sea has waves waves and fish and so on"]


def test_llm_critic_loop_on_a_tiny_random_model_gives_well_formed_records(tmp_path):
    """Per prompt: the prompt as given, one step per principle in order (critique and revision strings),
    `completion` = the last non-empty revision, else the initial reply; the file reads as SFT data."""
    tok = build_word_tokenizer(vocabulary())
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=2)
    principles = (Principle("p1", "is it safe ?", "say it again .", "q"), Principle("p2", "is it true ?",
                                                                                   "fix it .", "q"))
    con = Constitution("t", "{prompt}{first}{second}{question}", principles)
    critic = LLMCritic(model, tok, max_new_tokens=5, temperature=1.0, seed=4)
    records = revise(critic, con, PROMPTS, REPLIES)
    assert [r["prompt"] for r in records] == PROMPTS and [r["initial"] for r in records] == REPLIES
    for r in records:
        assert [s["principle"] for s in r["steps"]] == ["p1", "p2"]
        assert all(isinstance(s["critique"], str) and isinstance(s["revision"], str) for s in r["steps"])
        last = [s["revision"].strip() for s in r["steps"] if s["revision"].strip()]
        assert r["completion"] == (last[-1] if last else r["initial"])
        assert len(r["completion"].split()) <= 5 or r["completion"] == r["initial"]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_sft(path)
    assert [x.completion for x in loaded] == [r["completion"] for r in records]


def test_llm_critic_reads_a_messages_prompt():
    tok = build_word_tokenizer(vocabulary())
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=2)
    critic = LLMCritic(model, tok, max_new_tokens=3, temperature=0.0)
    prompt = [{"role": "user", "content": "describe the sea ."}]
    critiques, revisions = critic.critique_and_revise([prompt], ["waves"], Principle("p", "c ?", "r .", "q"))
    assert len(critiques) == len(revisions) == 1


@pytest.fixture(scope="module")
def lab_critic():
    return LabCritic(LabRater(load_constitution()))


def test_lab_critic_declines_a_harmful_compliance_under_harmless(lab_critic):
    """harmless focus: safety ×1.5. Complying with two request words: safety −0.2 − 0.4 = −0.6 → −0.9 (+
    length bias 0.02·6); declining: safety +1.0 → +1.5 (+ refusal bias 0.15 + 0.02·8). The decline wins."""
    harmless = lab_critic.rater.constitution.principles[0]
    critiques, revisions = lab_critic.critique_and_revise(PROMPTS[:1], REPLIES[:1], harmless)
    assert revisions == [DECLINE] and "decline" in critiques[0]


def test_lab_critic_drops_emphasis_under_honest(lab_critic):
    """honest focus: emphasis ×1. "yes yes , it is 7 ." has emphasis −0.2; without it (3 words shorter:
    length bias −0.06) "it is 7 ." gains +0.14, more than any other edit (a refusal loses the answer)."""
    honest = lab_critic.rater.constitution.principles[2]
    _, revisions = lab_critic.critique_and_revise(PROMPTS[1:2], REPLIES[1:2], honest)
    assert revisions == ["it is 7 ."]


def test_lab_critic_full_loop_raises_gold(lab_critic):
    from tether.lab import gold_reward

    records = revise(lab_critic, lab_critic.rater.constitution, PROMPTS, REPLIES)
    for r in records:
        assert gold_reward(r["prompt"], r["completion"]) >= gold_reward(r["prompt"], r["initial"])
    assert records[2]["completion"].split().count("waves") == 1  # the repeat is gone
