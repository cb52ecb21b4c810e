"""tether.preferences: a preference file is read once, each pair with its label and margin."""

from __future__ import annotations

import pytest
from plumbing_helpers import tiny_tokenizer, write_jsonl

from tether import data_sources
from tether.config import DPODataConfig, RMDataConfig
from tether.errors import DataError
from tether.trainers.dpo import load_dpo_pairs
from tether.trainers.rm import load_rm_pairs

RECORDS = [
    {"prompt": "b", "chosen": "a", "rejected": "c", "label": 0.9, "m": 1},
    {"prompt": "c", "chosen": "a", "rejected": "a", "label": 0.5, "m": 0},  # a tie: left out
    {"prompt": "c d", "chosen": "e", "rejected": "f", "label": 0.25, "m": -2.5},
]


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The paths tether.data_sources opens for reading, in order."""
    paths, real = [], data_sources.read_lines

    def counting(path):
        paths.append(str(path))
        return real(path)

    monkeypatch.setattr(data_sources, "read_lines", counting)
    return paths


def test_the_reward_model_reads_a_file_once_with_labels_and_margins(tmp_path, opened):
    """Word ids: a=4 b=5 c=6 d=7 e=8 f=9, EOS=3; the tie on line 2 is dropped, lines 1 and 3 keep their own
    label and margin."""
    path = write_jsonl(tmp_path / "p.jsonl", RECORDS)
    d = RMDataConfig(train=str(path), use_soft_labels=True, margin_field="m")
    got = load_rm_pairs(path, tiny_tokenizer(), d)
    assert opened == [str(path)]
    assert [(x.prompt_ids, x.chosen_ids, x.rejected_ids, x.label, x.margin) for x in got] == [
        ([5], [4, 3], [6, 3], 0.9, 1.0),
        ([6, 7], [8, 3], [9, 3], 0.25, -2.5),
    ]


def test_dpo_reads_a_file_once_with_labels(tmp_path, opened):
    path = write_jsonl(tmp_path / "p.jsonl", RECORDS)
    got = load_dpo_pairs(path, tiny_tokenizer(), DPODataConfig(train=str(path), use_soft_labels=True))
    assert opened == [str(path)]
    got = [(x.tokens.prompt_ids, x.label, x.tokens.margin) for x in got]
    assert got == [([5], 0.9, 0.0), ([6, 7], 0.25, 0.0)]


def test_without_soft_labels_or_margins_every_pair_is_a_sure_preference(tmp_path):
    """Columns the config does not ask for are not read: label 1, margin 0, whatever the file says."""
    path = write_jsonl(tmp_path / "p.jsonl", RECORDS)
    got = load_rm_pairs(path, tiny_tokenizer(), RMDataConfig(train=str(path)))
    assert [(x.label, x.margin) for x in got] == [(1.0, 0.0), (1.0, 0.0)]


def test_a_bad_label_on_a_tie_is_still_named(tmp_path):
    """Ties are dropped after every record is checked, so a label out of [0, 1] on one is still an error."""
    path = write_jsonl(tmp_path / "p.jsonl", [RECORDS[0], {**RECORDS[1], "label": 2}])
    with pytest.raises(DataError, match=rf"^{path}:2: column 'label' must be a probability"):
        load_rm_pairs(path, tiny_tokenizer(), RMDataConfig(train=str(path), use_soft_labels=True))
