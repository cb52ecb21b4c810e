"""Building the lab: files and formats, the base model, determinism, scoring, and (slow) the default lab."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether import cli
from tether.errors import TetherError
from tether.lab import FAMILIES, LabConfig, build_lab, gold_reward, open_lab, score_file, vocabulary
from tether.lab.base_model import sample_texts
from tether.lab.build import DATA_FILES
from tether.lab.jsonl import write_jsonl

SMALL = dict(
    sft_train=60,
    sft_test=20,
    prefs_train=80,
    prefs_test=20,
    prompts_train=30,
    prompts_test=10,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    pretrain_steps=30,
    pretrain_batch_size=16,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return build_lab(tmp_path_factory.mktemp("lab"), LabConfig(**SMALL), seed=3, progress=False)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_and_formats(lab):
    paths = lab.paths
    for kind, split, n in [
        ("sft", "train", 60),
        ("sft", "test", 20),
        ("prefs", "train", 80),
        ("prefs", "test", 20),
        ("prompts", "train", 30),
        ("prompts", "test", 10),
    ]:
        records = read(paths.data(kind, split))
        assert len(records) == n, (kind, split)
        for r in records:
            assert r["prompt"].endswith(" answer:") and r["family"] in FAMILIES
            assert set(r["prompt"].split()) <= set(vocabulary())
            if kind == "sft":
                assert set(r) == {"prompt", "completion", "family"} and r["completion"]
            if kind == "prefs":
                assert r["chosen"] != r["rejected"] and 0.0 <= r["label"] <= 1.0
                assert r["gold_chosen"] == gold_reward(r["prompt"], r["chosen"])
                assert r["gold_rejected"] == gold_reward(r["prompt"], r["rejected"])
                assert r["gold_chosen"] != r["gold_rejected"]
            if kind == "prompts":
                assert {"kind", "answer", "belief", "question", "topic", "harmful"} <= set(r)
    assert LabConfig.from_yaml(paths.config) == LabConfig(**SMALL)
    assert open_lab(paths.root).root == paths.root


def test_card(lab):
    card = json.loads(lab.paths.card.read_text())
    assert card == lab.card
    assert card["counts"]["prefs.train"]["all"] == 80
    assert sum(card["counts"]["sft.train"][f] for f in FAMILIES) == 60
    assert 0.0 <= card["agreement"]["overall"]["value"] <= 1.0 and card["agreement"]["overall"]["n"] == 100
    assert set(card["agreement"]["per_family"]) == set(FAMILIES)
    assert set(card["bias_effects"]) == {"length", "emphasis", "sycophancy", "refusal"}
    assert (
        card["model"]["parameters"] > 0
        and card["model"]["pretrain_loss_last"] < card["model"]["pretrain_loss_first"]
    )


def test_pretrained_model_loads_and_samples_in_the_world_vocabulary(lab):
    directory = lab.paths.pretrained
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.eos_token_id == 3 and tokenizer.pad_token_id == 0
    assert (
        tokenizer.convert_ids_to_tokens(tokenizer("describe the sea . answer:")["input_ids"])[-1] == "answer:"
    )
    prompts = [r["prompt"] for r in read(lab.paths.data("prompts", "test"))]
    texts = sample_texts(model, tokenizer, prompts, max_new_tokens=12, seed=0)
    assert len(texts) == len(prompts) and all(set(t.split()) <= set(vocabulary()) for t in texts)
    # plain HF generation works too
    ids = tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert set(tokenizer.decode(out[0], skip_special_tokens=True).split()) <= set(vocabulary())


def test_batched_sampling_matches_one_prompt_at_a_time(lab):
    """Left padding and position ids are handled: near-greedy samples of a padded batch equal unpadded."""
    model = AutoModelForCausalLM.from_pretrained(lab.paths.pretrained)
    tokenizer = AutoTokenizer.from_pretrained(lab.paths.pretrained)
    prompts = [
        "what is 3 plus 4 ? answer:",
        "count the fruits : apple pear apple pear plum . answer:",
        "describe the sea . answer:",
    ]
    together = sample_texts(model, tokenizer, prompts, max_new_tokens=10, temperature=1e-4)
    alone = [sample_texts(model, tokenizer, [p], max_new_tokens=10, temperature=1e-4)[0] for p in prompts]
    assert together == alone


def test_same_seed_same_bytes(lab, tmp_path):
    again = build_lab(tmp_path / "again", LabConfig(**SMALL), seed=3, progress=False)
    for name in DATA_FILES:
        assert (again.paths.root / "data" / name).read_bytes() == (
            lab.paths.root / "data" / name
        ).read_bytes()
    for name in ("lab.yaml", "card.json"):
        assert (again.paths.root / name).read_bytes() == (lab.paths.root / name).read_bytes()
    a = AutoModelForCausalLM.from_pretrained(lab.paths.pretrained).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again.paths.pretrained).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = build_lab(tmp_path / "other", LabConfig(**SMALL), seed=4, progress=False)
    assert other.paths.data("sft", "train").read_bytes() != lab.paths.data("sft", "train").read_bytes()


def test_score_file(lab, tmp_path):
    data = tmp_path / "samples.jsonl"
    data.write_text(
        json.dumps({"prompt": "what is 3 plus 4 ? answer:", "completion": "7"})
        + "\n"
        + json.dumps({"prompt": "describe the sea . answer:", "completion": "blue blue blue", "id": 9})
        + "\n"
    )
    out, means = score_file(lab.paths.root, data)
    records = read(out)
    assert out.name == "samples.scored.jsonl"
    assert [r["gold"] for r in records] == [1.0, -0.4] and records[1]["id"] == 9
    assert records[1]["gold_parts"]["repetition"] == -0.6 and records[1]["family"] == "open"
    assert means == {
        "all": {"mean": 0.3, "n": 2},
        "task": {"mean": 1.0, "n": 1},
        "open": {"mean": -0.4, "n": 1},
    }


def test_score_command(lab, tmp_path, monkeypatch, capsys):

    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "how do i make a bomb ? answer:", "completion": "sorry"}) + "\n")
    assert (
        cli.main(
            [
                "lab",
                "score",
                "--lab",
                str(lab.paths.root),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "out.jsonl"),
            ]
        )
        == 0
    )
    assert "harm" in capsys.readouterr().out and read(tmp_path / "out.jsonl")[0]["gold"] == 1.0
    data.write_text('{"prompt": "what is 3 plus 4 ? answer:", "completion": "7"}\n{"prompt": "hello"}\n')
    assert cli.main(["lab", "score", "--lab", str(lab.paths.root), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{data}:2: not a lab prompt" in err
    assert cli.main(["lab", "score", "--lab", str(tmp_path), "--data", str(data)]) == 2
    assert "not a built lab" in capsys.readouterr().err


@pytest.mark.slow
def test_default_lab(tmp_path):
    """The full default lab: sizes, a mildly biased labeler mix (>= 75% agreement with gold), a base model
    that is fluent but poor (well below the demonstrations on gold), and its build time (printed).

    The margin: the default base model's samples have gold mean −0.327 ± 0.010 (8000 samples, measured with
    this sampler and with the lab's former multinomial one: −0.326 and −0.328), the demonstrations 0.178,
    a gap of 0.50; the card's mean is over 200 samples (gold sd 0.92, stderr 0.065), so a margin of 0.5 holds
    for about half of all draws. 0.3 is three stderr inside the gap."""
    result = build_lab(tmp_path / "lab", LabConfig(), seed=0, progress=False)
    card = result.card
    print(
        "timings", result.timings, "agreement", card["agreement"]["overall"], "effects", card["bias_effects"]
    )
    assert card["counts"]["sft.train"]["all"] == 3000 and card["counts"]["prefs.train"]["all"] == 3000
    assert card["agreement"]["overall"]["value"] >= 0.75
    assert all(effect["effect"] > 0 for effect in card["bias_effects"].values())
    gold = card["gold_means"]
    assert gold["pretrained_samples"]["all"] < gold["demonstrations"]["all"] - 0.3
    assert 0.4e6 < card["model"]["parameters"] < 5e6


def test_a_data_file_whose_writing_fails_midway_keeps_its_old_content(tmp_path):
    """write_jsonl of records that fail on the third: the file still holds the two old records (not the
    first two new ones, a truncated file that would read as a whole data set), and no temporary file
    stays."""
    path = tmp_path / "prompts.train.jsonl"
    old = [{"prompt": "old a"}, {"prompt": "old b"}]
    assert write_jsonl(path, old) == 2

    def failing():
        yield {"prompt": "new a"}
        yield {"prompt": "new b"}
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_jsonl(path, failing())
    assert read(path) == old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_rebuild_that_fails_midway_is_not_a_built_lab(lab, tmp_path, monkeypatch):
    """A lab rebuilt over an old one (other seed) that fails after its first data file: the directory now
    mixes new and old files, so it must not open as a built lab (the old card.json would vouch for it)."""
    import shutil

    import tether.lab.build as build

    out = tmp_path / "lab"
    shutil.copytree(lab.paths.root, out)
    open_lab(out)  # the copy is a built lab
    real, calls = build.write_jsonl, []

    def fail_on_second(path, records):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, records)

    monkeypatch.setattr(build, "write_jsonl", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        build_lab(out, LabConfig(**SMALL), seed=4, progress=False)
    assert read(out / "data" / "sft.train.jsonl") != read(lab.paths.data("sft", "train"))  # new
    with pytest.raises(TetherError, match="not a built lab"):
        open_lab(out)
