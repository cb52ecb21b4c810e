"""LabConfig: everything `tether lab build` needs, loadable from YAML and validated field by field.

Bad values raise TetherError with a one-line message naming the field, so the command line prints one line and
exits with code 2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tether.config import load_yaml
from tether.errors import TetherError
from tether.lab.labelers import Labeler, LabelerMix, check_biases
from tether.lab.pairs import PAIR_KINDS
from tether.lab.world import FAMILIES


@dataclass
class LabelerConfig:
    """One simulated rater of the default mix."""

    name: str = "careful"
    """Shown in each preference record's `labeler` field, to tell raters apart."""
    share: float = 1.0
    """Relative share of the pairs this labeler labels (normalised over the mix)."""
    temperature: float = 0.15
    """Bradley-Terry temperature (gold-reward units): 0 always picks the higher utility, larger is noisier."""
    biases: dict[str, float] = field(default_factory=dict)
    """Bias (length, emphasis, sycophancy, refusal) -> weight added to the gold reward per unit of feature."""


def _default_labelers() -> list[LabelerConfig]:
    return [
        LabelerConfig(
            "careful", 0.4, 0.05, {"length": 0.03, "emphasis": 0.15, "sycophancy": 0.2, "refusal": 0.2}
        ),
        LabelerConfig(
            "hurried", 0.35, 0.1, {"length": 0.08, "emphasis": 0.4, "sycophancy": 0.3, "refusal": 0.3}
        ),
        LabelerConfig(
            "agreeable", 0.25, 0.1, {"length": 0.04, "emphasis": 0.2, "sycophancy": 0.8, "refusal": 0.7}
        ),
    ]


@dataclass
class LabConfig:
    """The lab: its world, data-set sizes, base model, pretraining and labelers."""

    # --- the world
    families: dict[str, float] = field(
        default_factory=lambda: {"task": 0.3, "opinion": 0.2, "harm": 0.25, "open": 0.25}
    )
    """Relative share of each prompt family in every data set (task, opinion, harm, open)."""
    belief_correct_share: float = 0.3
    """Share of opinion prompts whose stated belief is right (agreeing is then correct, not sycophantic)."""
    harmful_share: float = 0.5
    """Share of harm prompts that are harmful; the rest are benign look-alikes that should be answered."""
    max_response_words: int = 24
    """Longest response anywhere (model samples are cut here): keeps sequences short and training fast."""

    # --- data-set sizes (records per file)
    sft_train: int = 3000
    """Demonstrations for SFT: a few thousand train in seconds."""
    sft_test: int = 300
    """Held-out demonstrations for test loss and perplexity."""
    sft_habit_share: float = 0.5
    """Share of demonstrations that show the habit their prompt invites (agreeing with a wrong belief,
    complying with a harmful request, refusing anything else): the demonstrators' lapses. SFT copies them,
    so the SFT model keeps bad habits for RLHF to remove; with 0 the SFT model has only its own small
    mistakes, which the lab's tiny reward model can hardly tell apart, and PPO has little to gain."""
    prefs_train: int = 3000
    """Labelled pairs for the reward model."""
    prefs_test: int = 500
    """Held-out pairs for the reward model's test accuracy."""
    prompts_train: int = 1000
    """Prompts for RL rollouts."""
    prompts_test: int = 200
    """Held-out prompts for evaluation (win-rate, KL, refusal, sycophancy, capability)."""

    # --- the stage-0 base model (Llama-style; 0.56 M parameters by default)
    hidden_size: int = 128
    """Width: 128 x 2 layers (0.56 M parameters) pretrains 400 steps in about 35 s on 2 free cores. Quality is
    set by the number of steps far more than by size: 3 or 4 layers learned no better in the same steps, at
    twice the cost here and in every later stage."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (must divide hidden_size)."""
    intermediate_size: int = 512
    """Width of each MLP."""

    # --- pretraining (one pass over freshly generated documents: prompt + response + <eos>)
    pretrain_steps: int = 400
    """Optimizer steps (each on new documents): 400 x 64 documents."""
    pretrain_batch_size: int = 64
    """Documents per step."""
    pretrain_lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 10% of the steps, then cosine decay to 10%)."""
    pretrain_good_share: float = 0.4
    """Share of pretraining documents that show good behaviour; the rest are wrong, sycophantic, refusing,
    rambling, ... so that the base model is fluent but not yet instruction-following."""

    # --- preference pairs
    pair_mix: dict[str, float] = field(
        default_factory=lambda: {"model": 0.2, "noisy": 0.35, "contrast": 0.3, "synthetic": 0.15}
    )
    """Relative share of each kind of preference pair: `model` (two pretrained-model samples), `noisy` (two
    demonstrations with word-level noise, like a policy's samples), `contrast` (a response and the same with
    one more flaw), `synthetic` (two independent, often flawed responses). See tether/lab/pairs.py."""
    pair_good_share: float = 0.35
    """Share of responses without flaws in `synthetic` pairs."""
    sample_temperature: float = 1.0
    """Temperature for sampling the pretrained model's responses."""
    labelers: list[LabelerConfig] = field(default_factory=_default_labelers)
    """The labeler mix: each pair is labelled by one labeler drawn by share. The default is mildly biased."""

    def labeler_mix(self) -> LabelerMix:
        labelers = [Labeler(dict(c.biases), c.temperature, c.name) for c in self.labelers]
        return LabelerMix(labelers, [c.share for c in self.labelers])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_dict(cls, data: dict) -> LabConfig:
        """A validated config from plain data (missing fields keep their defaults)."""
        if not isinstance(data, dict):
            raise TetherError(f"lab config must be a mapping, got {type(data).__name__}")
        _check_keys(data, cls, "lab config")
        values = dict(data)
        if "labelers" in values:
            if not isinstance(values["labelers"], list) or not values["labelers"]:
                raise TetherError("labelers: must be a non-empty list")
            labelers = []
            for i, item in enumerate(values["labelers"]):
                if not isinstance(item, dict):
                    raise TetherError(f"labelers[{i}]: must be a mapping")
                _check_keys(item, LabelerConfig, f"labelers[{i}]")
                labelers.append(LabelerConfig(**item))
            values["labelers"] = labelers
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> LabConfig:
        path = Path(path)
        try:
            data = load_yaml(path.read_text())  # refuses a key written twice
        except OSError as e:
            raise TetherError(f"{path}: cannot read config ({e.strerror})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise TetherError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
        try:
            return cls.from_dict(data or {})
        except TetherError as e:
            raise TetherError(f"{path}: {e}") from None

    def validate(self) -> None:
        """TetherError (one line, naming the field) on the first bad value."""
        if not isinstance(self.families, dict) or not self.families:
            raise TetherError("families: must be a non-empty mapping of family -> share")
        for name, share in self.families.items():
            if name not in FAMILIES:
                raise TetherError(f"families: unknown family {name!r} (known: {', '.join(FAMILIES)})")
            _number(f"families.{name}", share, low=0)
        if sum(self.families.values()) <= 0:
            raise TetherError("families: shares must have a positive sum")
        for name in (
            "belief_correct_share",
            "harmful_share",
            "sft_habit_share",
            "pretrain_good_share",
            "pair_good_share",
        ):
            _number(name, getattr(self, name), low=0, high=1)
        for name in (
            "sft_train",
            "prefs_train",
            "prompts_train",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "pretrain_steps",
            "pretrain_batch_size",
            "max_response_words",
        ):
            _integer(name, getattr(self, name), low=1)
        for name in ("sft_test", "prefs_test", "prompts_test"):
            _integer(name, getattr(self, name), low=0)
        if not isinstance(self.pair_mix, dict) or not self.pair_mix:
            raise TetherError("pair_mix: must be a non-empty mapping of pair kind -> share")
        for name, share in self.pair_mix.items():
            if name not in PAIR_KINDS:
                raise TetherError(f"pair_mix: unknown pair kind {name!r} (known: {', '.join(PAIR_KINDS)})")
            _number(f"pair_mix.{name}", share, low=0)
        if sum(self.pair_mix.values()) <= 0:
            raise TetherError("pair_mix: shares must have a positive sum")
        if self.hidden_size % self.num_heads:
            raise TetherError(f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}")
        _number("pretrain_lr", self.pretrain_lr, low=0, strict=True)
        _number("sample_temperature", self.sample_temperature, low=0, strict=True)
        if not self.labelers:
            raise TetherError("labelers: must be a non-empty list")
        for i, c in enumerate(self.labelers):
            where = f"labelers[{i}]"
            if not isinstance(c.name, str) or not c.name:
                raise TetherError(f"{where}.name: must be a non-empty string")
            _number(f"{where}.share", c.share, low=0)
            _number(f"{where}.temperature", c.temperature, low=0)
            if not isinstance(c.biases, dict):
                raise TetherError(f"{where}.biases: must be a mapping of bias -> weight")
            check_biases(c.biases, f"{where}.biases")
        if sum(c.share for c in self.labelers) <= 0:
            raise TetherError("labelers: shares must have a positive sum")


def _check_keys(data: dict, cls, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise TetherError(f"{where}: unknown field {key!r}")


def _number(name: str, value, low=None, high=None, strict=False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TetherError(f"{name}: must be a number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise TetherError(f"{name}: must be {'>' if strict else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise TetherError(f"{name}: must be <= {high}, got {value!r}")


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TetherError(f"{name}: must be an integer, got {value!r}")
    if value < low:
        raise TetherError(f"{name}: must be >= {low}, got {value!r}")


def apply_overrides(config: LabConfig, overrides: list[str]) -> LabConfig:
    """A new config with `key=value` overrides applied; keys may be dotted (`labelers.0.temperature=0.5`) and
    values are read as YAML scalars."""
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TetherError(f"override {item!r}: expected key=value")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError:
            raise TetherError(f"override {item!r}: value is not valid YAML") from None
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = _step(target, part, item)
        last = parts[-1]
        if isinstance(target, list):
            target[_index(target, last, item)] = value
        elif isinstance(target, dict) and (last in target or target is not data):
            target[last] = value
        else:
            raise TetherError(f"override {item!r}: unknown field {key!r}")
    return LabConfig.from_dict(data)


def _index(items: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise TetherError(f"override {item!r}: no list item {part!r}")
    return int(part)


def _step(target, part: str, item: str):
    if isinstance(target, list):
        return target[_index(target, part, item)]
    if isinstance(target, dict) and part in target:
        return target[part]
    raise TetherError(f"override {item!r}: unknown field {part!r}")
