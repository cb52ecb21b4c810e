"""tether.hh_rlhf / `tether data import hh-rlhf`: HH transcripts to preference pairs, split by prompt.

The expected pairs are worked out by hand from the transcripts below: the prompt is every turn before the
last "Assistant:" one (Human -> user), chosen/rejected that last turn of each transcript, all stripped.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tether.cli import main
from tether.data import load_prompts
from tether.errors import DataError
from tether.hh_rlhf import import_hh_rlhf, read_pairs
from tether.preferences import load_preferences

H, A = "\n\nHuman: ", "\n\nAssistant: "
BREAD = {"chosen": f"{H}How do I bake bread?{A}Mix flour and water.",
         "rejected": f"{H}How do I bake bread?{A}I won't help."}
JOKE = {"chosen": f"{H}Hi there {A} Hello! {H}Tell me a joke{A}Why did the chicken cross the road?  ",
        "rejected": f"{H}Hi there {A} Hello! {H}Tell me a joke{A}No."}
BREAD_AGAIN = {"chosen": f"{H}How do I bake bread?{A}Knead, rise, bake.",
               "rejected": f"{H}How do I bake bread?{A}Buy some."}

EXPECTED = [
    {"prompt": [{"role": "user", "content": "How do I bake bread?"}],
     "chosen": "Mix flour and water.", "rejected": "I won't help."},
    {"prompt": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell me a joke"}],
     "chosen": "Why did the chicken cross the road?", "rejected": "No."},
    {"prompt": [{"role": "user", "content": "How do I bake bread?"}],
     "chosen": "Knead, rise, bake.", "rejected": "Buy some."},
]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_records_become_the_hand_worked_pairs(tmp_path):
    f = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in (BREAD, JOKE, BREAD_AGAIN)])
    pairs, skipped, _ = read_pairs(f)
    assert [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs] == EXPECTED
    assert [p["source"] for p in pairs] == ["hh.jsonl:1", "hh.jsonl:2", "hh.jsonl:3"]
    assert not skipped


def test_output_loads_with_the_trainers_reader_and_splits_by_prompt(tmp_path):
    f = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in (BREAD, JOKE, BREAD_AGAIN)])
    summary = import_hh_rlhf(f, tmp_path / "out", test_fraction=0.34, seed=0, harmful=True)
    out = tmp_path / "out"
    train, test = load_preferences(out / "train.jsonl"), load_preferences(out / "test.jsonl")
    got = sorted((json.dumps(e.prompt), e.chosen, e.rejected) for e in train + test)
    assert got == sorted((json.dumps(e["prompt"]), e["chosen"], e["rejected"]) for e in EXPECTED)
    # round(0.34 * 3) = 1 pair wanted; whichever prompt is drawn first, both bread pairs stay on one side
    bread_sides = {e.chosen: side for side, es in (("train", train), ("test", test)) for e in es}
    assert bread_sides["Mix flour and water."] == bread_sides["Knead, rise, bake."]
    assert len(test) in (1, 2) and summary["train"] + summary["test"] == 3
    prompts = load_prompts(out / "prompts.jsonl")
    assert sorted(json.dumps(p.prompt) for p in prompts) == sorted({json.dumps(e.prompt) for e in test})
    assert all(p.meta == {"harmful": True} for p in prompts)
    assert summary["distinct_prompts"] == 2 and summary["skipped"] == 0


def test_split_is_deterministic_by_seed_and_exact_for_distinct_prompts(tmp_path):
    records = [{"chosen": f"{H}q{i}{A}good {i}", "rejected": f"{H}q{i}{A}bad {i}"} for i in range(10)]
    f = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in records])
    a = import_hh_rlhf(f, tmp_path / "a", test_fraction=0.3, seed=4)
    import_hh_rlhf(f, tmp_path / "b", test_fraction=0.3, seed=4)
    import_hh_rlhf(f, tmp_path / "c", test_fraction=0.3, seed=5)
    assert (a["train"], a["test"], a["test_prompts"]) == (7, 3, 3)  # ten distinct prompts: exactly 0.3 × 10
    read = {d: (tmp_path / d / "test.jsonl").read_text() for d in "abc"}
    assert read["a"] == read["b"]
    assert read["a"] != read["c"]  # another seed draws other prompts (3 of 10: 120 ways)


def test_gzip_input_gives_the_same_pairs(tmp_path):
    plain = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in (BREAD, JOKE)])
    packed = tmp_path / "hh.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    strip = lambda pairs: [{k: v for k, v in p.items() if k != "source"} for p in pairs]  # noqa: E731
    assert strip(read_pairs(packed)[0]) == strip(read_pairs(plain)[0])


def test_gzip_named_jsonl_is_read_by_its_magic_bytes(tmp_path):
    plain = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in (BREAD, JOKE)])
    packed = tmp_path / "packed.jsonl"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    strip = lambda pairs: [{k: v for k, v in p.items() if k != "source"} for p in pairs]  # noqa: E731
    assert strip(read_pairs(packed)[0]) == strip(read_pairs(plain)[0]) == EXPECTED[:2]


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    """Line 2 is `{"chosen": "\xe9...`: the bad byte 0xe9 (Latin-1 é) is the 13th byte of its line."""
    f = tmp_path / "hh.jsonl"
    f.write_bytes(json.dumps(BREAD).encode() + b'\n{"chosen": "\xe9", "rejected": "x"}\n')
    with pytest.raises(DataError, match="byte 0xe9 at byte 13 is not UTF-8") as e:
        read_pairs(f)
    assert str(e.value).startswith(f"{f}:2: ")
    assert read_pairs(f, skip_bad=True)[1] == {"not UTF-8 text": 1}


BAD = [
    ("{not json", "malformed JSON"),
    (json.dumps({"chosen": BREAD["chosen"]}), "missing or non-string 'rejected'"),
    (json.dumps({"chosen": f"{H}a{A}x", "rejected": f"{H}b{A}y"}), "differ before the last Assistant turn"),
    (json.dumps({"chosen": f"{H}only a question", "rejected": f"{H}only a question"}), "does not end with"),
    (json.dumps({"chosen": f"{H}q{A}same", "rejected": f"{H}q{A} same "}), "identical"),
    (json.dumps({"chosen": f"preamble{H}q{A}x", "rejected": f"preamble{H}q{A}y"}), "text before the first"),
    (json.dumps({"chosen": f"{H}q{A}", "rejected": f"{H}q{A}y"}), "an empty response"),
    (json.dumps({"chosen": f"{A}x", "rejected": f"{A}y"}), "no Human turn"),
    (json.dumps({"chosen": f"{H}q{A}a{A}x", "rejected": f"{H}q{A}a{A}y"}), "two Human or two Assistant"),
    (json.dumps({"chosen": f"{H}q{H}r{A}x", "rejected": f"{H}q{H}r{A}y"}), "two Human or two Assistant"),
    (json.dumps({"chosen": f"{H}q{A}x\ud800", "rejected": f"{H}q{A}y"}), "lone surrogate in 'chosen'"),
]


@pytest.mark.parametrize("line, problem", BAD)
def test_malformed_record_names_file_and_line(tmp_path, line, problem):
    f = write_lines(tmp_path / "hh.jsonl", [json.dumps(BREAD), line])
    with pytest.raises(DataError, match=problem) as e:
        import_hh_rlhf(f, tmp_path / "out")
    assert str(e.value).startswith(f"{f}:2: ") and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_skip_bad_counts_reasons(tmp_path):
    lines = [json.dumps(BREAD), BAD[0][0], BAD[4][0], BAD[0][0], json.dumps(JOKE)]
    f = write_lines(tmp_path / "hh.jsonl", lines)
    summary = import_hh_rlhf(f, tmp_path / "out", skip_bad=True)
    assert summary["pairs"] == 2 and summary["skipped"] == 3
    reasons = summary["skipped_by_reason"]
    assert reasons["chosen and rejected responses are identical"] == 1
    assert sum(v for k, v in reasons.items() if k.startswith("malformed JSON")) == 2
    assert summary["skipped_examples"][0].startswith(f"{f}:2: malformed JSON")
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_cli_import_and_its_error(tmp_path, capsys):
    good = write_lines(tmp_path / "hh.jsonl", [json.dumps(r) for r in (BREAD, JOKE, BREAD_AGAIN)])
    assert main(["data", "import", "hh-rlhf", str(good), "--out", str(tmp_path / "ok"), "--seed", "1"]) == 0
    assert "3 pairs (2 distinct prompts)" in capsys.readouterr().out
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(BREAD), BAD[2][0]])
    assert main(["data", "import", "hh-rlhf", str(bad), "--out", str(tmp_path / "no")]) == 2
    assert f"{bad}:2: chosen and rejected differ" in capsys.readouterr().err


def test_a_small_file_still_gets_a_test_pair():
    """Two prompts at fraction 0.2: round(0.4) = 0 pairs would leave test.jsonl empty; one prompt's pair
    goes to test instead, the other to train. One prompt alone stays in train (a split needs two)."""
    from tether.hh_rlhf import split_by_prompt

    pairs = [{"prompt": [{"role": "user", "content": q}], "chosen": "a", "rejected": "b"} for q in ("x", "y")]
    train, test = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) == 1 and len(test) == 1 and train[0]["prompt"] != test[0]["prompt"]
    assert split_by_prompt(pairs[:1], 0.2, seed=0) == (pairs[:1], [])
