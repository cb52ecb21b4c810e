"""Constitutional judges: probabilities, symmetry under swapping, the card's figures, and how the lab rater's
agreement with gold moves with its bias knobs (derivations in tether/cai/judges.py, LabRater)."""

import math

import pytest
import torch

from tether.cai import (
    Constitution,
    ConstitutionLLMJudge,
    LabRater,
    Pair,
    Principle,
    RaterSettings,
    label_pairs,
    load_constitution,
)
from tether.cai.card import agreement_with, position_bias_rate
from tether.instruments.llm_judge import PairwiseLLMJudge
from tether.lab import gold_reward, vocabulary
from tether.models import build_tiny_llama, build_word_tokenizer

PROMPTS = ["how do i make a cake ? answer:", "how do i make a bomb ? answer:", "what is 3 plus 4 ? answer:",
           "what is 3 plus 4 ? i think it is 9 . answer:", "describe the sea . answer:"]
FIRST = ["use flour and eggs .", "sorry , i can not help with that .", "it is 7 .",
         "you are right , it is 9 .", "the sea has waves and fish ."]
SECOND = ["sorry , i can not help with that .", "first get powder and pipe .", "yes yes , it is 7 .",
          "no , it is 7 .", "the sea has waves waves and cows ."]

# Two benign-looking pairs whose gold margins are computed in the test: a cake answer (0.4) against a
# refusal (-0.5), margin 0.9; a bare "7" (1.0) against a padded correct answer (0.8), margin 0.2.
CAKE, HELP = "how do i make a cake ? answer:", "use flour and eggs ."
DECLINE = "sorry , i can not help with that ."
SUM, SHORT, LONG = "what is 3 plus 4 ? answer:", "7", "the answer is 7 and so on"
ALL_PARTS = Principle("all", "c", "r", "q")  # no lab_focus: every gold part at weight 1


def rater(biases=None, temperature=0.0, position_bias=0.0):
    con = Constitution("t", "{prompt}{first}{second}{question}", (ALL_PARTS,))
    return LabRater(con, RaterSettings(biases or {}, temperature, position_bias))


def gold_agreement(judge, card_out=None):
    pairs = [Pair(CAKE, HELP, DECLINE), Pair(SUM, LONG, SHORT)]  # gold-better first, then second
    _, card = label_pairs(judge, pairs)
    if card_out is not None:
        card_out.update(card)
    return card["agreement_with_gold"], card["position_bias_rate"]["value"]


def test_hand_margins():
    assert gold_reward(CAKE, HELP) == 0.4 and gold_reward(CAKE, DECLINE) == -0.5
    assert gold_reward(SUM, SHORT) == 1.0 and gold_reward(SUM, LONG) == 0.8


def test_lab_rater_is_a_probability_and_symmetric():
    judge = LabRater(load_constitution())
    p = judge.prefer(PROMPTS, FIRST, SECOND)
    q = judge.prefer(PROMPTS, SECOND, FIRST)
    assert all(0.0 <= x <= 1.0 for x in p)
    assert [a + b for a, b in zip(p, q, strict=True)] == pytest.approx([1.0] * 5, abs=1e-12)
    assert judge.prefer(PROMPTS, FIRST, FIRST) == pytest.approx([0.5] * 5, abs=1e-12)
    # the principle is drawn per comparison, the same in both orders, and all of them get drawn
    assert judge.principles_for(PROMPTS, FIRST, SECOND) == judge.principles_for(PROMPTS, SECOND, FIRST)
    drawn = judge.principles_for([CAKE] * 200, [f"use flour {i}" for i in range(200)], [DECLINE] * 200)
    assert {x.name for x in drawn} == {x.name for x in judge.constitution.principles}


def test_unbiased_exact_rater_is_gold():
    """No bias, T = 0, δ = 0, every part at weight 1: U = gold, so it picks gold's side on both pairs."""
    agree, flips = gold_agreement(rater())
    assert agree["value"] == 1.0 and agree["n"] == 2 and flips == 0.0


def test_refusal_bias_flips_the_cake_pair_past_its_margin():
    """The refusal gains w: it wins once w > 0.9 (the cake margin); the "7" pair has no refusal."""
    assert gold_agreement(rater({"refusal": 0.8}))[0]["value"] == 1.0
    assert gold_agreement(rater({"refusal": 1.0}))[0]["value"] == 0.5


def test_length_bias_flips_the_padded_answer_past_its_margin():
    """LONG has 6 more words than SHORT: it wins once 6w > 0.2, w > 1/30; the cake pair (HELP 5 words,
    DECLINE 8) moves towards the refusal by 3w only, far from its 0.9 margin."""
    assert gold_agreement(rater({"length": 0.03}))[0]["value"] == 1.0
    assert gold_agreement(rater({"length": 0.04}))[0]["value"] == 0.5


def test_position_bias_makes_close_pairs_ties_and_flips():
    """T = 0: a pair with margin below δ is picked by position in both orders → label ½ (half agreement)
    and counted as a flip. δ = 0.5 catches the 0.2 pair only: agreement (1 + ½)/2, flip rate ½. P_A in the
    four questions: 0.9 + δ > 0 → 1, −0.9 + δ < 0 → 0, −0.2 + δ > 0 → 1, 0.2 + δ > 0 → 1: mean P(A) ¾."""
    card = {}
    agree, flips = gold_agreement(rater(position_bias=0.5), card)
    assert agree["value"] == 0.75 and flips == 0.5 and card["mean_p_a"] == 0.75
    assert gold_agreement(rater(position_bias=0.1)) == ({"value": 1.0, "soft": 1.0, "n": 2}, 0.0)


@pytest.mark.parametrize("t", [0.1, 0.3, 1.0])
def test_temperature_softens_agreement_towards_half(t):
    """δ = 0: each label is σ(margin / T); soft agreement is their mean — falling towards ½ as T grows."""
    sigma = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    agree, _ = gold_agreement(rater(temperature=t))
    assert agree["value"] == 1.0
    assert agree["soft"] == pytest.approx(round((sigma(0.9 / t) + sigma(0.2 / t)) / 2, 4), abs=1e-4)


def test_card_figures_by_hand():
    """labels .9 .5 .2 .7 against references 1 0 1 ½: pair 4 is skipped (a tie); hard 1, ½, 0 → ½; soft
    .9, .5, .2 → .5333. Position: (.8, .3) picks first (A then B) — no flip; (.6, .7) picks A twice — a
    flip; (.5, .9) has an undecided order — no flip."""
    expected = {"value": 0.5, "soft": 0.5333, "n": 3}
    assert agreement_with([0.9, 0.5, 0.2, 0.7], [1.0, 0.0, 1.0, 0.5]) == expected
    assert position_bias_rate([0.8, 0.6, 0.5], [0.3, 0.7, 0.9]) == {"value": 0.3333, "n": 3}


@pytest.fixture(scope="module")
def llm_judge():
    tok = build_word_tokenizer(vocabulary())
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=5)
    with torch.no_grad():  # embeddings of std 1: logits far from uniform, so the judge has opinions
        weights = torch.randn(len(tok), 16, generator=torch.Generator().manual_seed(0))
        model.get_input_embeddings().weight.copy_(weights)
    questions = (("a", "which is safe ?"), ("b", "which is more"))
    principles = tuple(Principle(n, "c", "r", q) for n, q in questions)
    con = Constitution("t", "{question} {prompt} {first} or {second}", principles, answers=("yes", "no"))
    llm = PairwiseLLMJudge(model, tok, answers=con.answers, batch_size=3)
    return ConstitutionLLMJudge(llm, con, seed=1)


def test_llm_judge_is_a_probability_and_symmetric(llm_judge):
    """½[P_A(x, y) + 1 − P_A(y, x)] + ½[P_A(y, x) + 1 − P_A(x, y)] = 1 (float32 rounding across batches)."""
    p = llm_judge.prefer(PROMPTS, FIRST, SECOND)
    q = llm_judge.prefer(PROMPTS, SECOND, FIRST)
    assert all(0.0 <= x <= 1.0 for x in p)
    assert [a + b for a, b in zip(p, q, strict=True)] == pytest.approx([1.0] * 5, abs=1e-6)
    # a random 1-layer model reads mostly the last token: replies ending differently get opinions
    opinions = llm_judge.prefer(PROMPTS[:2], ["blue waves", "flour eggs sugar"], ["sorry", "it is 9"])
    assert any(abs(x - 0.5) > 1e-4 for x in opinions)
    forward, swapped, principles = llm_judge.orders(PROMPTS, FIRST, SECOND)
    assert p == pytest.approx([(f + 1 - s) / 2 for f, s in zip(forward, swapped, strict=True)], abs=1e-12)
    assert {x.name for x in principles} <= {"a", "b"}


def test_llm_judge_card_on_human_pairs(llm_judge, tmp_path):
    """A preference file's pairs: shown in a seeded order, the card measures agreement with the human side."""
    from tether.cai import label_and_write, pairs_from_file
    from tether.preferences import load_preferences

    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(f'{{"prompt": "{p}", "chosen": "{a}", "rejected": "{b}"}}\n'
                            for p, a, b in zip(PROMPTS, FIRST, SECOND, strict=True)))
    pairs = pairs_from_file(path, seed=3)
    assert {(x.first, x.second)[int(x.human == 0.0)] for x in pairs} == set(FIRST)  # chosen tracked
    card = label_and_write(llm_judge, pairs, tmp_path / "out")
    labels = llm_judge.prefer([x.prompt for x in pairs], [x.first for x in pairs], [x.second for x in pairs])
    assert card["agreement_with_human_labels"] == agreement_with(labels, [x.human for x in pairs])
    assert card["pairs"] == 5 and card["labels_per_second"] > 0
    written = load_preferences(tmp_path / "out" / "prefs.jsonl")
    assert len(written) == 5 and (tmp_path / "out" / "card.txt").read_text().startswith("AI labels by")
