"""In-memory data and models through the Python API (tether.inputs): written into RUN/inputs/, then the
same run as from files, bit for bit; bad records named by their line there; nothing already there replaced."""

import dataclasses
import hashlib
import json

import pytest
import yaml
from plumbing_helpers import reversal_records, sft_config, sft_setup, tiny_model, tiny_tokenizer
from safetensors.torch import load_file

from tether.config import load_config
from tether.config.supervised import SFTConfig
from tether.errors import DataError, TetherError
from tether.trainers.sft import train_sft


def _weights(run):
    return load_file(run / "model" / "model.safetensors")


def test_records_and_a_loaded_model_train_as_their_files_do(tmp_path):
    """The same 4 steps from files and from memory (the records as a list, the test set as a
    datasets.Dataset, the model and tokenizer as loaded objects, equal to the files' by construction:
    both come from tiny_model(0)) end with bit-identical weights on CPU; the records are in
    RUN/inputs/train.jsonl line for line, config.yaml names them with their SHA-256, and the caller's
    config still holds its objects."""
    from datasets import Dataset

    paths = sft_setup(tmp_path / "files")
    from_files = train_sft(sft_config(paths, max_steps=4, save_every=0), tmp_path / "a")

    train, test = reversal_records(32, seed=1), reversal_records(8, seed=2)
    cfg = sft_config(paths, max_steps=4, save_every=0)
    mine = dataclasses.replace(cfg, model=tiny_model(0), tokenizer=tiny_tokenizer(),
                               data=dataclasses.replace(cfg.data, train=train, test=Dataset.from_list(test)))
    run = train_sft(mine, tmp_path / "b")
    a, b = _weights(from_files), _weights(run)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    lines = (run / "inputs" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == train
    config = yaml.safe_load((run / "config.yaml").read_text())
    written = str(run / "inputs" / "train.jsonl")
    assert config["data"]["train"] == written and config["model"] == str(run / "inputs" / "model")
    assert config["provenance"]["data_sha256"][written] == hashlib.sha256(
        (run / "inputs" / "train.jsonl").read_bytes()).hexdigest()
    assert isinstance(mine.data.train, list) and not isinstance(mine.model, str)


def test_a_bad_record_is_named_by_its_line_in_the_written_file(tmp_path):
    paths = sft_setup(tmp_path / "files")
    cfg = sft_config(paths, max_steps=1, save_every=0)
    records = [*reversal_records(3), {"prompt": "a", "completion": ""}]
    with pytest.raises(DataError, match=r"inputs/train.jsonl:4: .*empty completion"):
        train_sft(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=records)),
                  tmp_path / "run")


def test_other_records_for_a_run_directory_are_refused_and_nothing_is_replaced(tmp_path):
    """A finished in-memory run; given other records for the same directory (with --resume or without), the
    run is refused naming the file, which keeps the first records."""
    paths = sft_setup(tmp_path / "files")
    cfg = sft_config(paths, max_steps=2, save_every=1)
    first = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=reversal_records(16)))
    run = train_sft(first, tmp_path / "run")
    kept = (run / "inputs" / "train.jsonl").read_text()
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=reversal_records(16, seed=5)))
    for resume in (True, False):
        with pytest.raises(TetherError, match=r"data.train: .*inputs/train.jsonl holds other records"):
            train_sft(other, run, resume=resume)
    assert (run / "inputs" / "train.jsonl").read_text() == kept


def test_a_loaded_model_needs_its_tokenizer_object(tmp_path):
    cfg = load_config(SFTConfig, None, ["model=m", "data.train=t.jsonl"])
    with pytest.raises(TetherError, match="model is a loaded model: give its tokenizer object as tokenizer"):
        train_sft(dataclasses.replace(cfg, model=tiny_model()), tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # the directory the refused run would have made is gone


def test_a_tokenizer_object_beside_a_model_path_is_saved_to_inputs(tmp_path):
    """The model as a path and its tokenizer as an object: the tokenizer goes to RUN/inputs/tokenizer and
    config.yaml names it; the trained model is the files-only run's, bit for bit. Another model for the same
    directory is refused naming RUN/inputs/model."""
    paths = sft_setup(tmp_path / "files")
    cfg = sft_config(paths, max_steps=2, save_every=0)
    a = train_sft(cfg, tmp_path / "a")
    b = train_sft(dataclasses.replace(cfg, tokenizer=tiny_tokenizer()), tmp_path / "b")
    assert yaml.safe_load((b / "config.yaml").read_text())["tokenizer"] == str(b / "inputs" / "tokenizer")
    wa, wb = _weights(a), _weights(b)
    assert all(wa[k].equal(wb[k]) for k in wa)
    c = train_sft(dataclasses.replace(cfg, model=tiny_model(0), tokenizer=tiny_tokenizer()), tmp_path / "c")
    with pytest.raises(TetherError, match=r"model: .*inputs/model holds another model"):
        train_sft(dataclasses.replace(cfg, model=tiny_model(1), tokenizer=tiny_tokenizer()), c, resume=True)
