"""tether.data_sources: parquet, csv, JSON, `datasets` directories and Hub datasets feed the same validators
as JSONL (a bad record named by file and row), TRL's conversational formats, and data.columns."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plumbing_helpers import write_jsonl, write_model_dir

from tether.config import SFTConfig, load_config
from tether.data import load_prompts, load_sft
from tether.errors import DataError, TetherError
from tether.preferences import load_preferences
from tether.trainers.metrics import read_metrics

datasets = pytest.importorskip("datasets")  # the hf extra; `dev` installs it, so CI runs these

SFT = [
    {"prompt": "a b", "completion": "b a"},
    {"prompt": [{"role": "user", "content": "c"}], "completion": [{"role": "assistant", "content": "c"}]},
    {"messages": [{"role": "user", "content": "d e"}, {"role": "assistant", "content": "e d"}]},
]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """`datasets` caches what it reads under the test's folder, not the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def table(records: list[dict]):
    return datasets.Dataset.from_list(records)


def sft_of(examples) -> list[tuple]:
    return [(ex.prompt, ex.completion, ex.line) for ex in examples]


def test_parquet_csv_json_and_a_saved_directory_give_the_records_of_the_jsonl(tmp_path):
    """The same demonstrations through five sources: each gives the prompt and completion JSONL gives
    (a completion written as one assistant message is its text), rows numbered 1, 2, 3 like the lines."""
    expected = [("a b", "b a", 1), ([{"role": "user", "content": "c"}], "c", 2),
                ([{"role": "user", "content": "d e"}], "e d", 3)]
    assert sft_of(load_sft(write_jsonl(tmp_path / "d.jsonl", SFT))) == expected
    (tmp_path / "d.json").write_text(json.dumps(SFT))
    assert sft_of(load_sft(tmp_path / "d.json")) == expected
    rows = [r for r in SFT if "messages" not in r][:1] * 2  # a table: one schema, so prompt-completion only
    table(rows).to_parquet(tmp_path / "d.parquet")
    assert sft_of(load_sft(tmp_path / "d.parquet")) == [("a b", "b a", 1), ("a b", "b a", 2)]
    table([SFT[2], SFT[2]]).save_to_disk(tmp_path / "saved")
    assert sft_of(load_sft(tmp_path / "saved")) == [expected[2][:2] + (1,), expected[2][:2] + (2,)]
    table([{"prompt": "x y", "answer": 3}, {"prompt": "z", "answer": 4}]).to_csv(tmp_path / "p.csv")
    got = load_prompts(tmp_path / "p.csv")
    assert [(ex.prompt, ex.meta, ex.line) for ex in got] == [("x y", {"answer": 3}, 1),
                                                             ("z", {"answer": 4}, 2)]


def test_a_bad_record_in_a_parquet_file_names_the_file_and_row(tmp_path):
    """Row 3's completion is blank: the same check as JSONL's, named `path:row 3:`; a null cell reads as a
    missing column."""
    path = tmp_path / "d.parquet"
    table([{"prompt": "a", "completion": "b"}] * 2 + [{"prompt": "a", "completion": " "}]).to_parquet(path)
    with pytest.raises(DataError) as e:
        load_sft(path)
    assert str(e.value) == f"{path}:row 3: empty completion"
    table([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": None}]).to_parquet(path)
    with pytest.raises(DataError, match=r"d\.parquet:row 2: missing column 'completion' \(columns: prompt\)"):
        load_sft(path)


def test_a_dataset_dict_directory_takes_its_split(tmp_path):
    saved = tmp_path / "dd"
    splits = {"train": table([{"prompt": "a"}]), "test": table([{"prompt": "b"}, {"prompt": "c"}])}
    datasets.DatasetDict(splits).save_to_disk(saved)
    assert [ex.prompt for ex in load_prompts(f"{saved}:test")] == ["b", "c"]
    with pytest.raises(DataError, match=r"dd: a DatasetDict of splits train, test: name one, e\.g\. .*dd:tr"):
        load_prompts(saved)


def test_columns_renames_from_the_command_line_and_refuses_a_name_tether_does_not_read(tmp_path):
    path = tmp_path / "q.parquet"
    table([{"question": "a b", "answer": "b a"}]).to_parquet(path)
    over = ["model=m", f"data.train={path}", "data.columns.prompt=question", "data.columns.completion=answer"]
    d = load_config(SFTConfig, None, over).data
    assert d.columns == {"prompt": "question", "completion": "answer"}
    assert sft_of(load_sft(d.train, d.columns)) == [("a b", "b a", 1)]
    with pytest.raises(DataError, match=r"q\.parquet:row 1: missing columns: need 'prompt' and 'completion'"):
        load_sft(d.train)  # without the mapping: the file's own names
    with pytest.raises(DataError, match="missing column 'query', which data.columns maps to 'prompt'"):
        load_sft(d.train, {"prompt": "query"})
    with pytest.raises(TetherError, match=r"config key data.columns.chosen names no column tether reads"):
        load_config(SFTConfig, None, ["model=m", f"data.train={path}", "data.columns.chosen=x"])


U, A = "user", "assistant"


def msg(role, content):
    return {"role": role, "content": content}


def test_trl_conversational_pairs_with_and_without_a_prompt_column(tmp_path):
    """Implicit prompt: the prompt is the messages chosen and rejected share (here system + user), each
    response its last message; explicit: chosen/rejected are one assistant message each."""
    implicit = {"chosen": [msg("system", "s"), msg(U, "a"), msg(A, "b")],
                "rejected": [msg("system", "s"), msg(U, "a"), msg(A, "c")]}
    explicit = {"prompt": [msg(U, "a")], "chosen": [msg(A, "b")], "rejected": [msg(A, "c")]}
    path = write_jsonl(tmp_path / "p.jsonl", [implicit, explicit])
    got = [(ex.prompt, ex.chosen, ex.rejected) for ex in load_preferences(path)]
    assert got == [([msg("system", "s"), msg(U, "a")], "b", "c"), ([msg(U, "a")], "b", "c")]
    two_turns = {"chosen": [msg(U, "a"), msg(A, "b"), msg(U, "c"), msg(A, "d")],
                 "rejected": [msg(U, "a"), msg(A, "e")]}
    no_prompt = {"chosen": [msg(A, "b")], "rejected": [msg(A, "c")]}
    for bad, problem in [(two_turns, "chosen must be the messages it shares with the other response, then"),
                         (no_prompt, "chosen and rejected share no messages and there is no 'prompt'")]:
        write_jsonl(path, [bad])
        with pytest.raises(DataError, match=rf"p\.jsonl:1: {problem}"):
            load_preferences(path)


def test_a_trl_implicit_prompt_parquet_trains_dpo_exactly_like_the_same_pairs_in_jsonl(tmp_path):
    """Two DPO steps on the same 4 pairs, once as a TRL implicit-prompt parquet file (chosen/rejected
    conversations, no prompt column), once as tether's JSONL (prompt messages, string responses). Step 1's
    loss is log 2 (π = π_ref, so every margin is 0 and −log σ(0) = log 2), and both runs log identical
    losses: the parquet pairs are the JSONL pairs."""
    from tether.commands import dpo as dpo_command

    words = [("a", "b", "c"), ("d e", "e d", "f"), ("g", "g", "h"), ("i j", "j i", "k l")]
    trl = [{"chosen": [msg(U, p), msg(A, c)], "rejected": [msg(U, p), msg(A, r)]} for p, c, r in words]
    ours = [{"prompt": [msg(U, p)], "chosen": c, "rejected": r} for p, c, r in words]
    table(trl).to_parquet(tmp_path / "trl.parquet")
    write_jsonl(tmp_path / "ours.jsonl", ours)
    policy = write_model_dir(tmp_path / "policy")
    losses = []
    for name in ("trl.parquet", "ours.jsonl"):
        parser = argparse.ArgumentParser()
        dpo_command.add_arguments(parser)
        out = tmp_path / f"run-{name}"
        argv = ["--out", str(out), f"policy={policy}", f"data.train={tmp_path / name}", "data.max_length=32",
                "train.lr=1e-2", "train.batch_size=4", "train.micro_batch_size=4", "train.max_steps=2",
                "train.progress=false"]
        assert dpo_command.run(parser.parse_args(argv)) == 0
        losses.append([r["loss"] for r in read_metrics(out) if r["kind"] == "train"])
    assert losses[0][0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses[0] == losses[1] and losses[0][1] < losses[0][0]


def run_python(code: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_DATASETS_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_a_hub_id_offline_loads_from_the_cache_and_otherwise_says_so_in_one_line(tmp_path):
    """Offline (HF_HUB_OFFLINE=1), `owner/name:split` is looked up in the HF datasets cache. The cache is
    written by `datasets`' own parquet builder under the repo id, config 'default' and a commit folder, the
    layout a Hub download leaves (the builder's cache path is set through two private attributes, the only
    way to write that layout without the Hub). An id that is not cached gives one line."""
    table([{"prompt": "a b"}, {"prompt": "c"}]).to_parquet(tmp_path / "train.parquet")
    code = f"""
from datasets.data_files import DataFilesDict
from datasets.packaged_modules.parquet.parquet import Parquet
files = DataFilesDict.from_patterns({{"train": [{str(tmp_path / "train.parquet")!r}]}})
b = Parquet(data_files=files, dataset_name="tiny", config_id="default")
b.repo_id, b.hash = "someone/tiny", "0" * 40
b._cache_dir = b._build_cache_dir()
b.download_and_prepare()
from tether.data import load_prompts
from tether.errors import DataError
print([(ex.prompt, str(ex.line)) for ex in load_prompts("someone/tiny:train")])
for source in ("nobody/nothing:train", "someone/tiny:test"):
    try:
        load_prompts(source)
    except DataError as e:
        print(e)
"""
    done = run_python(code, tmp_path / "hf-home")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[('a b', 'row 1'), ('c', 'row 2')]"
    assert len(lines) == 3 and lines[1].startswith(
        "nobody/nothing:train: not in the local Hugging Face cache, and the Hub cannot be reached (")
    assert lines[2].startswith("someone/tiny:test: cannot load the Hub dataset: Unknown split \"test\"")


def test_without_datasets_one_line_names_the_extra(tmp_path, monkeypatch):
    table([{"prompt": "a"}]).to_parquet(tmp_path / "p.parquet")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "p.parquet")
    assert str(e.value) == f"{tmp_path / 'p.parquet'}: reading this source needs the datasets package: " \
                           "pip install 'tether[hf]'"
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    assert [ex.prompt for ex in load_prompts(tmp_path / "p.jsonl")] == ["a"]  # JSONL never needs it


def test_a_hub_like_name_without_a_split_is_not_guessed(tmp_path):
    with pytest.raises(DataError, match=r"^owner/name: no such file or directory \(a Hub dataset is named "
                       r"with its split: owner/name:train\)$"):
        load_prompts("owner/name")


def test_the_run_records_a_hash_for_a_saved_directory_and_none_for_a_hub_id(tmp_path):
    """config.yaml's data_sha256: a directory's hash changes when one byte of one of its files does; a Hub
    dataset has no local bytes to hash (None)."""
    from tether.config.dump import sha256_source

    table([{"prompt": "a"}]).save_to_disk(tmp_path / "saved")
    before = sha256_source(tmp_path / "saved")
    assert sha256_source(tmp_path / "saved") == before and len(before) == 64
    info = tmp_path / "saved" / "dataset_info.json"
    info.write_text(info.read_text() + " ")
    assert sha256_source(tmp_path / "saved") != before and sha256_source("owner/name:train") is None
