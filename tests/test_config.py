"""tether.config: YAML + key=value overrides, type checks that name the key, the resolved dump."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from tether import config as config_module
from tether.config import LoopConfig, SFTConfig, dump_config, load_config, sha256_file
from tether.errors import TetherError

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=m", "data.train=t.jsonl"]


def test_yaml_then_overrides_are_typed_by_the_fields(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t.jsonl, max_length: 64}\ntrain: {lr: 1e-4, epochs: 2}\n")
    cfg = load_config(SFTConfig, f, [
        "train.batch_size=16", "train.max_steps=5", "train.progress=false", "data.test=null",
        "train.betas=[0.8, 0.9]", "train.schedule=linear", "train.weight_decay=0.1", "seed=7",
    ])
    # YAML reads `1e-4` (no dot) as a string; a float field accepts it. An int (2) is accepted for a float.
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.train.progress) == (16, 5, False)
    assert cfg.data.test is None and cfg.data.max_length == 64
    assert cfg.train.betas == [0.8, 0.9] and cfg.train.schedule == "linear" and cfg.seed == 7
    assert cfg.train.micro_batch_size == LoopConfig().micro_batch_size  # untouched fields keep defaults


def test_string_fields_take_the_override_text_verbatim():
    cfg = load_config(SFTConfig, None, ["model=123", "data.train=true", "tokenizer=null"])
    assert cfg.model == "123" and cfg.data.train == "true" and cfg.tokenizer is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["train.lrr=1"], "train.lrr"),  # unknown key in a section
        (["colour=red"], "colour"),  # unknown top-level key
        (["train.batch_size=abc"], "train.batch_size"),  # not an int
        (["train.batch_size=2.5"], "train.batch_size"),  # a float is not an int
        (["train.max_steps=true"], "train.max_steps"),  # a bool is not an int
        (["train.lr=fast"], "train.lr"),
        (["train.progress=maybe"], "train.progress"),
        (["train.schedule=exponential"], "train.schedule"),  # not one of the Literal's values
        (["train.betas=0.9"], "train.betas"),  # not a list
        (["train.betas=[0.9, x]"], "train.betas[1]"),
        (["model.name=x"], "model.name"),  # model is not a section
        (["train.lr"], "train.lr"),  # no '='
    ],
)
def test_bad_overrides_name_the_key(overrides, named):
    with pytest.raises(TetherError, match=re.escape(named)):
        load_config(SFTConfig, None, BASE + overrides)


def test_bad_yaml_keys_and_types_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t.jsonl, max_lenght: 3}\n")
    with pytest.raises(TetherError, match=r"unknown config key data\.max_lenght"):
        load_config(SFTConfig, f)
    f.write_text("model: m\ndata: {train: t.jsonl}\ntrain: {warmup_steps: ten}\n")
    with pytest.raises(TetherError, match=r"train\.warmup_steps: expected int, got 'ten'"):
        load_config(SFTConfig, f)
    f.write_text("- a list\n")
    with pytest.raises(TetherError, match="must be a mapping"):
        load_config(SFTConfig, f)


def test_missing_required_keys_are_named():
    with pytest.raises(TetherError, match="missing required config key model"):
        load_config(SFTConfig, None, ["data.train=t"])
    with pytest.raises(TetherError, match=r"missing required config key data\.train"):
        load_config(SFTConfig, None, ["model=m"])


def test_dump_records_provenance_and_loads_back(tmp_path):
    data = tmp_path / "abc.txt"
    data.write_bytes(b"abc")
    cfg = load_config(SFTConfig, None, ["model=m", f"data.train={data}", "train.lr=3e-4"])
    path = dump_config(cfg, tmp_path / "run", [str(data), None])
    doc = yaml.safe_load(path.read_text())
    prov = doc["provenance"]
    import torch
    import transformers

    import tether

    assert prov["torch_version"] == str(torch.__version__)
    assert prov["transformers_version"] == transformers.__version__
    assert prov["tether_version"] == tether.__version__
    # The SHA-256 of b"abc" is the FIPS 180-2 example value.
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert prov["data_sha256"] == {str(data): abc}
    assert sha256_file(data) == prov["data_sha256"][str(data)]
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", prov["git_commit"])
    assert load_config(SFTConfig, path) == cfg  # the provenance section is ignored on load


def test_every_field_has_a_docstring():
    """Each field of each config dataclass is followed by a string statement (its one-line 'why')."""
    tree = ast.parse(inspect.getsource(config_module))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    checked = 0
    for cls in classes:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                nxt = body[i + 1] if i + 1 < len(body) else None
                doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                name = f"{cls.name}.{node.target.id}"
                assert doc and isinstance(nxt.value.value, str), f"{name} has no docstring"
                checked += 1
    expected = sum(len(dataclasses.fields(c)) for c in (LoopConfig, SFTConfig, config_module.SFTDataConfig))
    assert checked >= expected


def test_shipped_sft_config_is_valid():
    cfg = load_config(SFTConfig, ROOT / "configs" / "sft.yaml")
    assert cfg.train.micro_batch_size <= cfg.train.batch_size
