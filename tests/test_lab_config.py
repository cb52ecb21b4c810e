"""LabConfig: defaults, YAML, overrides, and bad values -> one line on stderr and exit code 2."""

from pathlib import Path

import pytest

from tether import cli
from tether.errors import TetherError
from tether.lab import LabConfig, apply_overrides

REPO = Path(__file__).resolve().parents[1]


def run_cli(monkeypatch, argv):
    """`tether.cli.main` with the lab command registered (whether or not cli.py lists it yet)."""

    return cli.main(argv)


def test_configs_lab_yaml_is_the_default():
    assert LabConfig.from_yaml(REPO / "configs" / "lab.yaml") == LabConfig()


def test_yaml_round_trip(tmp_path):
    config = LabConfig(prefs_train=10, families={"task": 1.0, "open": 2.0})
    path = tmp_path / "lab.yaml"
    path.write_text(config.to_yaml())
    assert LabConfig.from_yaml(path) == config


def test_overrides():
    config = apply_overrides(
        LabConfig(), ["prefs_train=500", "labelers.1.temperature=0.5", "families.task=2"]
    )
    assert (
        config.prefs_train == 500 and config.labelers[1].temperature == 0.5 and config.families["task"] == 2
    )
    with pytest.raises(TetherError, match="unknown config key prefs "):
        apply_overrides(LabConfig(), ["prefs=3"])
    with pytest.raises(TetherError, match="not of the form key=value"):
        apply_overrides(LabConfig(), ["prefs_train"])
    with pytest.raises(TetherError, match="labelers has no item 5 "):
        apply_overrides(LabConfig(), ["labelers.5.temperature=1"])


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("labelers:\n  - {name: a, temperature: -1}\n",
         "config key labelers[0].temperature must be >= 0, got -1.0"),
        ("labelers:\n  - {name: a, biases: {loudness: 1}}\n",
         "config key labelers[0].biases names an unknown bias 'loudness'"),
        ("families: {task: 1, poetry: 1}\n", "config key families names an unknown family 'poetry'"),
        ("sft_train: -5\n", "config key sft_train must be >= 1, got -5"),
        ("harmful_share: 1.5\n", "config key harmful_share must be in [0, 1], got 1.5"),
        ("sft_habit_share: -0.1\n", "config key sft_habit_share must be in [0, 1], got -0.1"),
        ("hidden_size: 100\nnum_heads: 3\n", "config key num_heads must divide hidden_size"),
        ("colour: blue\n", "unknown config key colour "),
        ("pair_mix: {model: 1, gossip: 1}\n", "config key pair_mix names an unknown pair kind 'gossip'"),
        ("families: [task\n", "not valid YAML"),
        ("families: {}\n", "config key families must have at least 1 entry"),
        ("families: {task: 0}\n", "config key families must have shares with a positive sum"),
    ],
)
def test_bad_config_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(TetherError, match=message.replace("[", r"\[").replace("]", r"\]")):
        LabConfig.from_yaml(path)
    code = run_cli(monkeypatch, ["lab", "build", "--out", str(tmp_path / "lab"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tether lab: error: ") and message in err
    assert not (tmp_path / "lab").exists()  # nothing was built


def test_bad_override_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    code = run_cli(monkeypatch, ["lab", "build", "--out", str(tmp_path / "lab"), "labelers.0.temperature=-2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "config key labelers[0].temperature must be >= 0" in err


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    code = run_cli(
        monkeypatch, ["lab", "build", "--out", str(tmp_path), "--config", str(tmp_path / "no.yaml")]
    )
    assert code == 2 and "cannot read config" in capsys.readouterr().err


def test_a_key_written_twice_is_an_error_naming_the_line(tmp_path, capsys):
    """YAML itself keeps the last of two equal keys, silently; the lab refuses them, at the second one."""
    path = tmp_path / "lab.yaml"
    path.write_text("prefs_train: 500\nsft_train: 100\nprefs_train: 50\n")
    with pytest.raises(TetherError, match=rf"^{path}:3: not valid YAML: duplicate key 'prefs_train'$"):
        LabConfig.from_yaml(path)
