"""`tether rm` and tether.reward_model on a tiny random Llama: pooling under padding, tokenisation, the loss
against a hand computation, learning a separable preference, resume, bad input.

The preference set is separable by construction but not at first sight: chosen and rejected have the same
length, one of them contains the word "a", and the prompt's first word says whether that one is preferred
("b") or not ("c"); a reward model must relate prompt and response to rank the pairs.
"""

import argparse
import json
import math
import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch
from plumbing_helpers import WORDS, tiny_tokenizer, write_jsonl, write_model_dir
from safetensors.torch import load_file

from tether.commands import rm as rm_command
from tether.config import RMConfig, RMDataConfig, load_config
from tether.errors import DataError, TetherError
from tether.preferences import PairTokens, collate_pairs, load_preferences, tokenize_preferences
from tether.reward_model import (
    create_reward_model,
    encode_pair_text,
    load_reward_model,
    score_texts,
    sequence_scores,
    token_scores,
    training_settings,
)
from tether.rewards import load_reward
from tether.trainers import checkpoint as ckpt
from tether.trainers.base import Loop
from tether.trainers.metrics import read_metrics
from tether.trainers.rm import RMTask, load_rm_pairs, train_rm

REST = [w for w in WORDS if w not in ("a", "b", "c")]


def xor_pairs(n: int, seed: int) -> list[dict]:
    """Prompt "b ..." or "c ...", then 0-2 more words; two responses of k words (k in 2..4), one with an "a".
    After "b" the response with the "a" is chosen, after "c" the one without: neither the word nor the prompt
    alone says which is better (a fresh model is at chance), only the two together."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(2, 4)
        with_a = [rng.choice(REST) for _ in range(k - 1)]
        with_a.insert(rng.randint(0, k - 1), "a")
        without_a = [rng.choice(REST) for _ in range(k)]
        first = "b" if i % 2 == 0 else "c"
        prompt = " ".join([first, *(rng.choice(REST) for _ in range(rng.randint(0, 2)))])
        chosen, rejected = (with_a, without_a) if first == "b" else (without_a, with_a)
        out.append({"prompt": prompt, "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    return out


def overrides(paths: dict[str, Path], **train) -> list[str]:
    """A small, fast run: 32 steps of 16 pairs (of 64), a checkpoint every 4 steps, eval every 8."""
    loop = {
        "lr": 3e-3,
        "batch_size": 16,
        "micro_batch_size": 8,
        "max_steps": 32,
        "save_every": 4,
        "eval_every": 8,
        "keep_last": 2,
        "progress": False,
        **train,
    }
    return [
        f"model={paths['sft']}",
        f"data.train={paths['train']}",
        f"data.test={paths['test']}",
        "data.max_length=16",
        *(f"train.{k}={v}" for k, v in loop.items()),
    ]


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    rm_command.add_arguments(parser)
    return rm_command.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    return {
        "sft": write_model_dir(tmp / "sft"),
        "train": write_jsonl(tmp / "train.jsonl", xor_pairs(64, seed=1)),
        "test": write_jsonl(tmp / "test.jsonl", xor_pairs(32, seed=2)),
    }


@pytest.fixture(scope="module")
def rm(paths):
    torch.manual_seed(0)
    return create_reward_model(paths["sft"])  # (model, tokenizer), the head freshly drawn


@pytest.fixture(scope="module")
def reference(paths, tmp_path_factory):
    """An uninterrupted run through the command."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _run("--out", out, *overrides(paths)) == 0
    return out


def test_reward_model_is_the_sft_trunk_with_a_new_scalar_head(paths, rm):
    model, tok = rm
    sft = load_file(paths["sft"] / "model.safetensors")
    trunk = model.base_model.state_dict()
    assert all(torch.equal(sft["model." + k], v) for k, v in trunk.items())
    assert model.score.weight.shape == (1, 32) and model.config.pad_token_id == tok.pad_token_id == 0


def test_sequence_scores_take_the_last_real_token_under_left_and_right_padding(rm):
    """Each row scored alone (no padding) gives its score at its last position; padded to one batch, left or
    right, and even with pad == EOS (which fools "last non-pad token" pooling), the row's score is the same.
    Alone, the score also equals Hugging Face's own forward (no padding: its pooling takes the last token)."""
    model, _ = rm
    rows = [[4, 5, 6, 3], [7, 3], [8, 9, 10, 11, 12, 3]]
    alone = torch.stack([token_scores(model, torch.tensor([r]), torch.ones(1, len(r)))[0, -1] for r in rows])
    hf = torch.stack([model(input_ids=torch.tensor([r])).logits[0, 0] for r in rows])
    torch.testing.assert_close(alone, hf, atol=1e-5, rtol=1e-5)
    for side in ("left", "right"):
        for pad_value in (0, 3):  # <pad>, then <eos>
            batch = collate_pairs([PairTokens(r[:1], r[1:], r[1:]) for r in rows], pad_value, side)
            got = sequence_scores(model, batch["input_ids"][:3], batch["attention_mask"][:3])
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5, msg=f"{side}, pad {pad_value}")


def test_score_texts_tokenises_like_the_preference_data(paths, rm):
    model, tok = rm
    records = [json.loads(x) for x in paths["test"].read_text().splitlines()[:5]]
    pairs, _ = tokenize_preferences(load_preferences(paths["test"])[:5], tok, max_length=16)
    for rec, pair in zip(records, pairs, strict=True):
        assert encode_pair_text(tok, rec["prompt"], rec["chosen"]) == pair.prompt_ids + pair.chosen_ids
        assert pair.chosen_ids[-1] == tok.eos_token_id
    batch = collate_pairs(pairs, 0)  # 5 chosen rows, then 5 rejected rows
    expected = sequence_scores(model, batch["input_ids"], batch["attention_mask"])[:5].tolist()
    got = score_texts(
        model, tok, [r["prompt"] for r in records], [r["chosen"] for r in records], batch_size=2
    )
    assert got == pytest.approx(expected, abs=1e-5)
    msgs = [{"role": "user", "content": "b c"}]  # no chat template: rendered "User: b c\n\nAssistant:"
    assert encode_pair_text(tok, msgs, "d") == tok("User: b c\n\nAssistant:")["input_ids"] + [7, 3]  # d, EOS


def test_loss_matches_bradley_terry_by_hand(rm):
    """Rewards by hand: each row alone through token_scores, read at its last token (EOS). With Δ_i =
    r_w − r_l − m_i and ℓ(x) = −log σ(x) = log(1 + e^{−x}), the loss of the 2-pair batch is
    (1/2)·Σ_i [p_i·ℓ(Δ_i) + (1 − p_i)·ℓ(−Δ_i)] + c·(1/2)·Σ_i (r_w + r_l)², and the task divides the batch's
    sum by the step's pair count: with num_units = 4 it returns (2/4) of that mean. Hard labels and no
    margin (the default task) reduce each term to ℓ(r_w − r_l)."""
    model, _ = rm
    items = [
        PairTokens([4, 5], [6, 3], [7, 8, 3], label=0.8, margin=0.5),
        PairTokens([9], [10, 11, 12, 3], [13, 3], label=1.0, margin=-0.25),
    ]

    def alone(prompt, response):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            return float(token_scores(model, ids, torch.ones_like(ids))[0, -1])

    r = [
        (alone(x.prompt_ids, x.chosen_ids), alone(x.prompt_ids, x.rejected_ids))
        for x in items
    ]

    def ell(x):
        return math.log1p(math.exp(-x))

    hard = sum(ell(w - lo) for w, lo in r) / 2
    full = (
        sum(
            x.label * ell(w - lo - x.margin) + (1 - x.label) * ell(-(w - lo - x.margin))
            for x, (w, lo) in zip(items, r, strict=True)
        )
        / 2
    )
    full += 0.1 * sum((w + lo) ** 2 for w, lo in r) / 2

    plain = RMTask(pad_value=0, micro_batch_size=2)
    loss, metrics = plain.loss(model, plain.collate(items), num_units=2)
    assert float(loss.detach()) == pytest.approx(hard, rel=1e-5)
    assert float(metrics["accuracy"]) == sum(w > lo for w, lo in r) / 2
    task = RMTask(pad_value=0, micro_batch_size=2, center_coef=0.1, soft_labels=True, margins=True)
    loss, _ = task.loss(model, task.collate(items), num_units=4)
    assert float(loss.detach()) == pytest.approx(full * 2 / 4, rel=1e-5)


def test_a_run_learns_the_separable_preference(reference, paths):
    """Train loss falls from ln 2 ≈ 0.69 (chance: rewards nearly equal) and accuracy rises from chance; at
    the end the held-out accuracy passes, and the saved model, reloaded, reproduces it through score_texts."""
    records = read_metrics(reference)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 33)) and [r["step"] for r in evals] == [8, 16, 24, 32]
    first, last = train[:4], train[-4:]
    assert sum(r["loss"] for r in first) / 4 > 0.6 and sum(r["loss"] for r in last) / 4 < 0.2
    assert sum(r["accuracy"] for r in first) / 4 < 0.75 and sum(r["accuracy"] for r in last) / 4 >= 0.9
    assert all({"test_loss", "test_margin", "test_ece", "test_pairs"} <= r.keys() for r in evals)
    assert evals[-1]["test_accuracy"] >= 0.9 and evals[-1]["test_margin"] > 0

    summary = json.loads((reference / "summary.json").read_text())
    acc = summary["instruments"]["rm_test_accuracy"]
    assert acc == {"value": evals[-1]["test_accuracy"], "n": 32, "threshold": 0.65, "pass": True}

    model, tok = load_reward_model(reference / "model")
    test = [json.loads(x) for x in paths["test"].read_text().splitlines()]
    prompts = [r["prompt"] for r in test]
    chosen = score_texts(model, tok, prompts, [r["chosen"] for r in test])
    rejected = score_texts(model, tok, prompts, [r["rejected"] for r in test])
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) / 32 == acc["value"]


def test_parameters_change_in_trunk_and_head(reference, rm):
    before = rm[0].state_dict()  # seed 0 before the head is drawn, as in the run
    after = load_file(reference / "model" / "model.safetensors")
    assert not torch.equal(before["score.weight"], after["score.weight"])
    trunk = [k for k in after if k.startswith("model.layers.")]
    assert trunk and all(not torch.equal(before[k], after[k]) for k in trunk if k.endswith("proj.weight"))


def test_sigterm_then_resume_gives_identical_weights(reference, paths, tmp_path, monkeypatch):
    """SIGTERM after step 6 saves checkpoint step-6; `--resume` continues to step 32, bit-identical."""
    out = tmp_path / "run"
    real = Loop.optimizer_step

    def step_then_term(self):
        info = real(self)
        if self.state.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return info

    monkeypatch.setattr(Loop, "optimizer_step", step_then_term)
    assert _run("--out", out, *overrides(paths)) == 143
    assert ckpt.find_latest(out / "checkpoints") == out / "checkpoints" / "step-6"
    monkeypatch.undo()
    assert _run("--out", out, "--resume") == 0
    ref = load_file(reference / "model" / "model.safetensors")
    got = load_file(out / "model" / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == list(range(1, 33))


def test_labels_and_margins_stay_with_their_pair_when_one_is_skipped(tmp_path):
    """Line 2's prompt fills max_length 4 and is skipped; lines 1 and 3 keep their own label and margin."""
    recs = [
        {"prompt": "b", "chosen": "a", "rejected": "c", "label": 0.9, "m": 1},
        {"prompt": "b c d e", "chosen": "a", "rejected": "c", "label": 0.7, "m": 2},
        {"prompt": "c", "chosen": "a", "rejected": "d", "label": 0.6, "m": 3},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", recs)
    d = RMDataConfig(train=str(path), max_length=4, too_long="skip", use_soft_labels=True, margin_field="m")
    got = load_rm_pairs(path, tiny_tokenizer(), d)
    assert [(x.prompt_ids, x.label, x.margin) for x in got] == [([5], 0.9, 1.0), ([6], 0.6, 3.0)]


@pytest.mark.parametrize(
    "line2, options, problem",
    [
        ('{"prompt": "b", "chosen": "a"}', [], "missing column 'rejected'"),
        ('{"prompt": "b", "chosen": " ", "rejected": "c"}', [], "empty chosen"),
        (
            '{"prompt": "b", "chosen": "a", "rejected": "c", "label": 1.5}',
            ["data.use_soft_labels=true"],
            "column 'label' must be a probability",
        ),
        (
            '{"prompt": "b", "chosen": "a", "rejected": "c", "m": "big"}',
            ["data.margin_field=m"],
            "column 'm' must be a finite number",
        ),
        (
            '{"prompt": "b c d e f g h i j k l b c d e f", "chosen": "a", "rejected": "c"}',
            [],
            "prompt is 16 tokens",
        ),
    ],
)
def test_bad_data_names_file_and_line(paths, tmp_path, line2, options, problem):
    good = '{"prompt": "b", "chosen": "a", "rejected": "c", "label": 1, "m": 0}'
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + line2 + "\n")
    with pytest.raises(DataError, match=rf"^{bad}:2: {problem}"):
        _run("--out", tmp_path / "run", *overrides(paths), f"data.train={bad}", *options)


def test_config_file_loads():
    cfg = load_config(RMConfig, Path(__file__).resolve().parents[1] / "configs" / "rm.yaml")
    assert cfg.data.train.endswith("prefs.train.jsonl") and cfg.train.epochs == 1.0


def test_without_a_test_set_the_summary_has_no_accuracy(paths, tmp_path):
    no_test = [*overrides(paths, max_steps=2, save_every=0, eval_every=0), "data.test=null"]
    cfg = load_config(RMConfig, None, no_test)
    summary = json.loads((train_rm(cfg, tmp_path / "run") / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["train_items"] == 64 and "instruments" not in summary


# A user turn as "c <content> d": every word is in the tiny vocabulary (tests/test_data.py uses the same).
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}c {% endif %}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}d{% endif %}"
)


def templated_rm(paths, tmp_path):
    """A 1-step RM run with data.chat_template=always and data.max_length=8, on an SFT directory whose
    tokenizer has CHAT_TEMPLATE; its run directory."""
    sft = write_model_dir(tmp_path / "sft")
    tok = tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(sft)
    more = ["data.chat_template=always", "data.max_length=8", "data.test=null", f"model={sft}"]
    cfg = load_config(RMConfig, None, [*overrides(paths, max_steps=1, save_every=0, eval_every=0), *more])
    return train_rm(cfg, tmp_path / "run")


def test_a_reward_model_reward_scores_as_the_reward_model_was_trained(paths, tmp_path):
    """An RM trained with data.chat_template=always and data.max_length=8, on a tokenizer that has a chat
    template, is scored by its reward source (`load_reward(RUN/model)`) the way its training rows were
    built, whatever the policy stage's own settings: ids by hand (word ids: a=4, b=5, ..., EOS=3) —
      prompt "b e", response "f g h i j": [c b e d] + [f g h i j EOS] cut to the 8 − 4 = 4 tokens left,
      prompt "c", response "a": [c c d] + [a EOS] (fits),
    each row scored alone at its last token. Scoring with tether's defaults instead ("auto", no cut: plain
    prompts stay plain) gives other scores, so the check can tell. A prompt with no room left for a response
    within max_length (the RM never saw one) is a one-line error."""
    run = templated_rm(paths, tmp_path)
    model, tok = load_reward_model(run / "model")
    assert tok.chat_template == CHAT_TEMPLATE

    C, D, EOS = 6, 7, 3
    w = {x: 4 + WORDS.index(x) for x in WORDS}
    rows = [[C, w["b"], w["e"], D, w["f"], w["g"], w["h"], w["i"]], [C, w["c"], D, w["a"], EOS]]
    with torch.no_grad():
        by_hand = [float(sequence_scores(model, torch.tensor([r]), torch.ones(1, len(r)))[0]) for r in rows]
    prompts, responses = ["b e", "c"], ["f g h i j", "a"]
    assert load_reward(str(run / "model"))(prompts, responses).tolist() == pytest.approx(by_hand, abs=1e-6)
    defaults = score_texts(model, tok, prompts, responses)
    assert all(abs(a - b) > 1e-4 for a, b in zip(defaults, by_hand, strict=True))
    with pytest.raises(TetherError, match="max_length 8"):
        load_reward(str(run / "model"))(["b e f g h i"], ["a"])  # [c b e f g h i d]: 8 tokens, 0 left


def test_a_reward_model_s_settings_travel_with_its_directory(paths, tmp_path, monkeypatch):
    """RUN/model/tether_rm.json holds data.chat_template and data.max_length, so RUN/model copied away from
    its run (no config.yaml beside it), or served as a Hub id from an offline HF cache, scores as the run's
    own directory does: prompt "b e", response "f g h i j" is [c b e d] + 4 tokens, not the defaults' row."""
    from huggingface_hub import constants
    from plumbing_helpers import hub_cache

    run = templated_rm(paths, tmp_path)
    assert json.loads((run / "model" / "tether_rm.json").read_text()) == {"chat_template": "always",
                                                                          "max_length": 8}
    copy = tmp_path / "elsewhere" / "rm"
    shutil.copytree(run / "model", copy)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_cache(tmp_path / "hub", "someone/tiny-rm", run / "model")
    monkeypatch.chdir(tmp_path)
    prompts, responses = ["b e"], ["f g h i j"]
    own = load_reward(str(run / "model"))(prompts, responses)
    model, tok = load_reward_model(run / "model")
    assert abs(float(own[0]) - score_texts(model, tok, prompts, responses)[0]) > 1e-4  # the defaults differ
    for elsewhere in (str(copy), "someone/tiny-rm"):
        assert torch.equal(load_reward(elsewhere)(prompts, responses), own)


def test_a_reward_model_keeps_the_data_template_it_was_trained_with(paths, tmp_path):
    """An RM trained with data.template (a file whose user turns start with the variable `lead`, and
    data.template.kwargs lead=c) on a tokenizer without a chat template saves its tokenizer with that
    template and the set-line, so its reward source renders prompt "b e" as "c b e d" as training did:
    [c b e d] + [f EOS] by hand (a=4, b=5, ..., EOS=3). The file alone (lead undefined) renders "b e d",
    another row, so the check can tell."""
    sft = write_model_dir(tmp_path / "sft")
    template = tmp_path / "chat.jinja"
    template.write_text(CHAT_TEMPLATE.replace("c {% endif %}", "{{ lead }} {% endif %}"))
    more = ["data.chat_template=always", "data.test=null", f"model={sft}",
            f"data.template.file={template}", "data.template.kwargs.lead=c"]
    cfg = load_config(RMConfig, None, [*overrides(paths, max_steps=1, save_every=0, eval_every=0), *more])
    run = train_rm(cfg, tmp_path / "run")
    model, tok = load_reward_model(run / "model")
    assert tok.chat_template.startswith('{%- set lead = "c" -%}')

    C, D, EOS = 6, 7, 3
    w = {x: 4 + WORDS.index(x) for x in WORDS}
    row, without_lead = [C, w["b"], w["e"], D, w["f"], EOS], [w["b"], w["e"], D, w["f"], EOS]
    with torch.no_grad():
        by_hand, other = (float(sequence_scores(model, torch.tensor([r]), torch.ones(1, len(r)))[0])
                          for r in (row, without_lead))
    assert load_reward(str(run / "model"))(["b e"], ["f"]).tolist() == pytest.approx([by_hand], abs=1e-6)
    assert abs(by_hand - other) > 1e-4


def test_training_settings_come_from_the_rm_run_s_config(tmp_path):
    """RUN/model's settings are RUN/config.yaml's data.chat_template and data.max_length when that file is a
    `tether rm` config (it has center_coef); without one, or beside another stage's config, tether's
    defaults ("auto", no cut); a setting no RM run could have recorded is a one-line error naming the file."""
    (tmp_path / "model").mkdir()
    assert training_settings(tmp_path / "model") == ("auto", None)
    config = tmp_path / "config.yaml"
    config.write_text("policy: x\ndata: {chat_template: never, max_length: 64}\n")  # a PPO-like config
    assert training_settings(tmp_path / "model") == ("auto", None)
    config.write_text("center_coef: 0.0\ndata: {chat_template: never, max_length: 64}\n")
    assert training_settings(tmp_path / "model") == ("never", 64)
    config.write_text("center_coef: 0.0\ndata: {chat_template: sometimes, max_length: 64}\n")
    with pytest.raises(TetherError, match=r"config.yaml: data.chat_template 'sometimes'"):
        training_settings(tmp_path / "model")
