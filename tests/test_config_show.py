"""`tether config show STAGE` and `tether STAGE --help`: every key, its default and its docstring."""

import dataclasses
import typing

from tether import cli
from tether.config import LoopConfig, PPOConfig, RMConfig, SFTConfig
from tether.config.describe import describe, field_docs


def flat_fields(cls, prefix=""):
    """The dotted keys of a config dataclass, walked here independently of `describe`."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += flat_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_describe_lists_every_key_once_with_the_stage_s_defaults():
    """SFT's train section defaults to 3 epochs (SFTConfig's default factory), not EpochLoopConfig's own 1;
    `model` has no default; train.lr's doc is LoopConfig.lr's."""
    keys = {k.name: k for k in describe(SFTConfig)}
    assert list(keys) == flat_fields(SFTConfig)
    assert keys["train.epochs"].default == 3.0 and keys["train.lr"].default == 1e-4
    assert keys["model"].default is dataclasses.MISSING
    assert keys["train.lr"].doc == field_docs(LoopConfig)["lr"] and keys["train.lr"].doc
    assert all(k.doc for k in keys.values())  # every field carries its one-line why


def test_inherited_fields_keep_their_docstrings():
    """PPOConfig declares policy in RLStageConfig, its base: the doc still comes through."""
    keys = {k.name: k for k in describe(PPOConfig)}
    assert list(keys) == flat_fields(PPOConfig)
    assert "policy" in keys and keys["policy"].doc and keys["kl.estimator"].default == "k1"


def test_config_show_and_stage_help(capsys):
    assert cli.main(["config", "show", "rm"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs = 1.0  (float)" in out  # the reward model's one epoch
    assert "data.margin_field = None" in out and "Llama 2" in out
    assert out.count("\n") >= len(describe(RMConfig))
    try:
        cli.main(["ppo", "--help"])
    except SystemExit as e:
        assert e.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "tether config show ppo" in help_text
    assert all(name in help_text for name in ("critic", "kl.estimator", "ppo.clip_eps", "train.report_to"))
