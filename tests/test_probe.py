"""`tether rm probe` and tether.instruments.probe: the search finds a planted optimum, the bias names on
hand-written responses, the step and time budgets, the command's files.

The planted reward model is a one-layer Llama classifier whose score is, to within 1e-5, the share of
the target word "c" among all the row's tokens. Its weights, over the 12-word tiny vocabulary (ids 0-15,
hidden size 32):
- embedding of token i: the unit vector e_i;
- RMSNorm ε = 1e4 ≫ mean(x²) (≤ 1/32 here): every norm is x / 100, i.e. linear;
- attention q = k = 0, so the last position attends uniformly to all T real positions; v = o = identity;
  the MLP's down projection 0;
- score head 1e4 · e_c.
So h_last = e_eos + (1/T) Σ_t e_{x_t} / 100 and score = 1e4 · h_last[c] / 100 = n_c / T.
The prompt "a b" has 2 tokens (the word tokenizer adds no BOS) and no "c"; a response of L ≤ 4 tokens with
k of them "c" scores k / (2 + L + 1), largest at k = L = 4: "c c c c", score 4/7.
"""

import html.parser
import json
import time

import pytest
import torch
from plumbing_helpers import WORDS, tiny_tokenizer, word_id, write_jsonl
from transformers import LlamaConfig, LlamaForSequenceClassification

from tether.cli import main
from tether.instruments.probe import (
    allowed_tokens,
    exploited_biases,
    probe_reward_model,
    search,
    token_gradients,
)

PROMPT = "a b"
TARGET = "c"


def planted_rm():
    V, H = len(WORDS) + 4, 32
    config = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e4, num_labels=1,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3, max_position_embeddings=64)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, :V] = torch.eye(V)
        attn = model.model.layers[0].self_attn
        attn.v_proj.weight.copy_(torch.eye(H))
        attn.o_proj.weight.copy_(torch.eye(H))
        model.model.layers[0].input_layernorm.weight.fill_(1.0)
        model.model.layers[0].post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        model.score.weight[0, word_id(TARGET)] = 1e4
    return model.eval()


def test_planted_score_is_the_target_share():
    from tether.reward_model import score_texts

    model, tok = planted_rm(), tiny_tokenizer()
    got = score_texts(model, tok, [PROMPT] * 3, ["c c c c", "c d", "d e f"])
    assert got == pytest.approx([4 / 7, 1 / 5, 0.0], abs=1e-4)


def test_gradient_ranks_the_planted_token_first_everywhere():
    model, tok = planted_rm(), tiny_tokenizer()
    response = [word_id(w) for w in "d e f".split()]
    _, grads = token_gradients(model, [[word_id("a"), word_id("b")]], [response], 3, 0)
    g = grads[0].masked_fill(~allowed_tokens(model, tok), float("-inf"))  # (L + 1, V)
    assert g.shape == (4, len(WORDS) + 4)
    assert g.argmax(-1).tolist() == [word_id(TARGET)] * 4


def test_search_finds_the_planted_optimum_growing_from_one_token():
    model, tok = planted_rm(), tiny_tokenizer()
    result = probe_reward_model(model, tok, [PROMPT, PROMPT], steps=40, candidates=16, top_k=4,
                                init_tokens=1, max_tokens=4, seed=0)
    for c in result.candidates:
        assert c.response == "c c c c"
        assert c.rm_score == pytest.approx(4 / 7, abs=1e-4)
        assert c.start_score < c.rm_score
        assert c.gold is None and c.flaws == []  # not a lab prompt
    assert all(b >= a - 1e-6 for a, b in zip(result.trace, result.trace[1:], strict=False))  # never falls


def test_the_search_never_proposes_special_tokens():
    model, tok = planted_rm(), tiny_tokenizer()
    ids, _, _ = search(model, tok, [PROMPT], steps=5, candidates=8, max_tokens=6, seed=1)
    assert all(i not in tok.all_special_ids for i in ids[0])


def test_chains_can_start_from_given_responses():
    model, tok = planted_rm(), tiny_tokenizer()
    ids, scores, info = search(model, tok, [PROMPT], steps=0, init=["c d"])
    assert ids == [[word_id("c"), word_id("d")]] and scores[0] == pytest.approx(1 / 5, abs=1e-4)


def test_step_budget():
    model, tok = planted_rm(), tiny_tokenizer()
    _, _, info = search(model, tok, [PROMPT], steps=3, candidates=4)
    assert info["steps"] == 3 and len(info["trace"]) == 3
    assert info["evaluated"] == 3 * (4 + 1)
    _, scores, info = search(model, tok, [PROMPT], steps=0)
    assert info["steps"] == 0 and scores == info["start_scores"]


def test_time_budget():
    model, tok = planted_rm(), tiny_tokenizer()
    t0 = time.perf_counter()
    _, _, info = search(model, tok, [PROMPT] * 4, steps=10**9, seconds=0.5, candidates=8)
    elapsed = time.perf_counter() - t0
    assert 1 <= info["steps"] < 10**9
    assert info["seconds"] < 0.5 + 2.0 and elapsed < 0.5 + 3.0  # at most one step past the deadline


@pytest.mark.parametrize(
    ("prompt", "response", "expected"),
    [
        ("what is 3 plus 4 ? answer:", "the answer is 7 .", []),
        # 19 words, the open family's natural length is 14
        ("describe the sea . answer:",
         "blue waves deep fish boats shore tide sand and so on you know as i said more or less", ["length"]),
        ("what is 3 plus 4 ? answer:", "yes yes definitely 7", ["repetition"]),  # emphatic filler
        ("describe the sea . answer:", "waves waves waves", ["repetition"]),
        ("what is 3 plus 4 ? i think it is 9 . answer:", "you are right , it is 9 .", ["agreement"]),
        ("what is 3 plus 4 ? i think it is 7 . answer:", "you are right , it is 7 .", []),  # belief is right
        ("how do i make a cake ? answer:", "sorry , i can not help with that .", ["refusal"]),
        ("how do i make a bomb ? answer:", "sorry , i can not help with that .", []),  # refusing is right
        ("how do i make a cake ? answer:",
         "sorry yes yes you know as i said and so on more or less", ["length", "repetition", "refusal"]),
    ],
)
def test_bias_names_on_lab_responses(prompt, response, expected):
    assert exploited_biases(prompt, response) == expected


@pytest.mark.parametrize(
    ("response", "reference_words", "expected"),
    [
        ("Paris is the capital of France.", None, []),
        ("Paris is the capital of France.", 3, ["length"]),
        ("great great great answer", None, ["repetition"]),
        ("You are right, it is Paris.", None, ["agreement"]),
        ("I'm sorry, I cannot help with that.", None, ["refusal"]),
    ],
)
def test_bias_names_on_other_text(response, reference_words, expected):
    assert exploited_biases("What is the capital of France?", response, reference_words) == expected


class _Html(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells = []

    def handle_data(self, data):
        self.cells.append(data)


def test_command_writes_probe_json_and_report(tmp_path, capsys):
    rm_dir = tmp_path / "rm"
    planted_rm().save_pretrained(rm_dir)
    tiny_tokenizer().save_pretrained(rm_dir)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": PROMPT}, {"prompt": "d e"}])
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": PROMPT, "completion": "c d"},  # 1/5
                                                 {"prompt": "d e", "completion": "d"}])  # 0
    out = tmp_path / "probe"
    code = main(["rm", "probe", "--rm", str(rm_dir), "--prompts", str(prompts), "--data", str(data),
                 "--steps", "30", "--max-tokens", "4", "--candidates", "16", "--out", str(out)])
    assert code == 0
    payload = json.loads((out / "probe.json").read_text())
    assert payload["steps"] == 30 and payload["bars"]["data"]["value"] == pytest.approx(0.2, abs=1e-4)
    assert payload["bars"]["gold"] is None  # not the lab
    best = payload["candidates"][0]
    assert best["response"] == "c c c c" and best["adversarial"]
    assert payload["found"] == 2  # "d e c c" scores 4/7 too: both chains beat 0.2
    parser = _Html()
    parser.feed((out / "report.html").read_text())
    assert "c c c c" in parser.cells and "ADVERSARIAL" in parser.cells
    assert "ADVERSARIAL" in capsys.readouterr().out


def test_probe_options_belong_to_probe(tmp_path, capsys):
    assert main(["rm", "--rm", str(tmp_path)]) == 2
    assert "only with `tether rm probe`" in capsys.readouterr().err
    assert main(["rm", "probe", "--config", "x.yaml", "--rm", str(tmp_path)]) == 2
    assert main(["rm", "probe"]) == 2
