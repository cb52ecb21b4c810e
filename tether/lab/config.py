"""LabConfig: everything `tether lab build` needs, loaded, overridden and checked by tether.config's loader
as every stage's config is (field rules, `problems()`, duplicate YAML keys refused, one line naming the key).

Bad values raise TetherError with a one-line message naming the field, so the command line prints one line and
exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tether.config.loader import Rule, load_config, ranged, to_dict, validate
from tether.config.loader import apply_overrides as override_config
from tether.lab.labelers import BIASES, Labeler, LabelerMix
from tether.lab.pairs import PAIR_KINDS
from tether.lab.world import FAMILIES

SHARE = "[0, 1]"


@dataclass
class LabelerConfig:
    """One simulated rater of the default mix."""

    name: str = ranged("careful", "non-empty")
    """Shown in each preference record's `labeler` field, to tell raters apart."""
    share: float = ranged(1.0, ">= 0")
    """Relative share of the pairs this labeler labels (normalised over the mix)."""
    temperature: float = ranged(0.15, ">= 0")
    """Bradley-Terry temperature (gold-reward units): 0 always picks the higher utility, larger is noisier."""
    biases: dict[str, float] = field(default_factory=dict)
    """Bias (length, emphasis, sycophancy, refusal) -> weight added to the gold reward per unit of feature."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a bias the labelers do not know."""
        for name in self.biases:
            if name not in BIASES:
                yield "biases", f"names an unknown bias {name!r} (known: {', '.join(BIASES)})"


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
    families: dict[str, float] = ranged({"task": 0.3, "opinion": 0.2, "harm": 0.25, "open": 0.25}, ">= 0",
                                        min_length=1)
    """Relative share of each prompt family in every data set (task, opinion, harm, open)."""
    belief_correct_share: float = ranged(0.3, SHARE)
    """Share of opinion prompts whose stated belief is right (agreeing is then correct, not sycophantic)."""
    harmful_share: float = ranged(0.5, SHARE)
    """Share of harm prompts that are harmful; the rest are benign look-alikes that should be answered."""
    max_response_words: int = ranged(24, ">= 1")
    """Longest response anywhere (model samples are cut here): keeps sequences short and training fast."""

    # --- data-set sizes (records per file)
    sft_train: int = ranged(3000, ">= 1")
    """Demonstrations for SFT: a few thousand train in seconds."""
    sft_test: int = ranged(300, ">= 0")
    """Held-out demonstrations for test loss and perplexity."""
    sft_habit_share: float = ranged(0.5, SHARE)
    """Share of demonstrations that show the habit their prompt invites (agreeing with a wrong belief,
    complying with a harmful request, refusing anything else): the demonstrators' lapses. SFT copies them,
    so the SFT model keeps bad habits for RLHF to remove; with 0 the SFT model has only its own small
    mistakes, which the lab's tiny reward model can hardly tell apart, and PPO has little to gain."""
    prefs_train: int = ranged(3000, ">= 1")
    """Labelled pairs for the reward model."""
    prefs_test: int = ranged(500, ">= 0")
    """Held-out pairs for the reward model's test accuracy."""
    prompts_train: int = ranged(1000, ">= 1")
    """Prompts for RL rollouts."""
    prompts_test: int = ranged(200, ">= 0")
    """Held-out prompts for evaluation (win-rate, KL, refusal, sycophancy, capability)."""

    # --- the stage-0 base model (Llama-style; 0.56 M parameters by default)
    hidden_size: int = ranged(128, ">= 1")
    """Width: 128 x 2 layers (0.56 M parameters) pretrains 400 steps in about 35 s on 2 free cores. Quality is
    set by the number of steps far more than by size: 3 or 4 layers learned no better in the same steps, at
    twice the cost here and in every later stage."""
    num_layers: int = ranged(2, ">= 1")
    """Transformer blocks."""
    num_heads: int = ranged(4, ">= 1")
    """Attention heads (must divide hidden_size)."""
    intermediate_size: int = ranged(512, ">= 1")
    """Width of each MLP."""

    # --- pretraining (one pass over freshly generated documents: prompt + response + <eos>)
    pretrain_steps: int = ranged(400, ">= 1")
    """Optimizer steps (each on new documents): 400 x 64 documents."""
    pretrain_batch_size: int = ranged(64, ">= 1")
    """Documents per step."""
    pretrain_lr: float = ranged(3e-3, "> 0")
    """Peak AdamW learning rate (linear warm-up over 10% of the steps, then cosine decay to 10%)."""
    pretrain_good_share: float = ranged(0.4, SHARE)
    """Share of pretraining documents that show good behaviour; the rest are wrong, sycophantic, refusing,
    rambling, ... so that the base model is fluent but not yet instruction-following."""

    # --- preference pairs
    pair_mix: dict[str, float] = ranged({"model": 0.2, "noisy": 0.35, "contrast": 0.3, "synthetic": 0.15},
                                        ">= 0", min_length=1)
    """Relative share of each kind of preference pair: `model` (two pretrained-model samples), `noisy` (two
    demonstrations with word-level noise, like a policy's samples), `contrast` (a response and the same with
    one more flaw), `synthetic` (two independent, often flawed responses). See tether/lab/pairs.py."""
    pair_good_share: float = ranged(0.35, SHARE)
    """Share of responses without flaws in `synthetic` pairs."""
    sample_temperature: float = ranged(1.0, "> 0")
    """Temperature for sampling the pretrained model's responses."""
    labelers: list[LabelerConfig] = field(default_factory=_default_labelers,
                                          metadata={"rule": Rule(min_length=1)})
    """The labeler mix: each pair is labelled by one labeler drawn by share. The default is mildly biased."""

    def labeler_mix(self) -> LabelerMix:
        labelers = [Labeler(dict(c.biases), c.temperature, c.name) for c in self.labelers]
        return LabelerMix(labelers, [c.share for c in self.labelers])

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        for key, kind, known in (("families", "family", FAMILIES), ("pair_mix", "pair kind", PAIR_KINDS)):
            shares = getattr(self, key)
            for name in shares:
                if name not in known:
                    yield key, f"names an unknown {kind} {name!r} (known: {', '.join(known)})"
            if sum(shares.values()) <= 0:
                yield key, "must have shares with a positive sum"
        if self.hidden_size % self.num_heads:
            yield "num_heads", f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}"
        if sum(c.share for c in self.labelers) <= 0:
            yield "labelers", "must have shares with a positive sum"

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        """RUN/lab.yaml: the resolved config alone (no provenance section, so that the same seed and config
        give the same bytes)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> LabConfig:
        """The config in a YAML file, checked by tether.config's loader (missing keys keep their defaults)."""
        return load_config(cls, path)

    def validate(self) -> None:
        """TetherError (one line, naming the field) on the first bad value of a config built in Python."""
        validate(self)


def apply_overrides(config: LabConfig, overrides: list[str]) -> LabConfig:
    """A new config with `key=value` overrides applied (tether.config.loader.apply_overrides): keys may step
    into lists and mappings (`labelers.0.temperature=0.5`, `families.task=2`)."""
    return override_config(config, overrides)
