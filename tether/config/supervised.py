"""The configs of the stages that pass over a data set: SFT, the reward model and DPO."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from tether.config.loader import SEED, ranged
from tether.config.train import EpochLoopConfig, LoRAConfig, schedule_problems

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "label")


def column_problems(data, names: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(key, reason) of each key of a data section's `columns` that is not one of tether's column `names`
    (a renamed column that nothing would read)."""
    for ours in data.columns:
        if ours not in names:
            yield f"columns.{ours}", f"names no column tether reads here (it reads: {', '.join(names)})"


@dataclasses.dataclass
class TemplateConfig:
    """A chat template of the run's own in place of the tokenizer's (tether.data.set_template). The trained
    model's tokenizer is saved with the template as used, so later stages, `tether eval` and the reward
    model's scoring render prompts exactly as training did."""

    file: str | None = None
    """A Jinja chat-template file used in place of the tokenizer's chat template; none: the tokenizer's."""
    kwargs: dict[str, bool | int | str | float] = ranged({})
    """Variables the template reads, e.g. {enable_thinking: false}: set at the top of the template (a
    `{%- set name = value -%}` line each), so that every later render of the saved template sees them."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a template file that cannot be read or a variable name Jinja cannot set."""
        if self.file is not None and not Path(self.file).is_file():
            yield "file", f"{self.file!r} is not a file"
        for name in self.kwargs:
            if not name.isidentifier():
                yield f"kwargs.{name}", "is not a name a template variable can have"


@dataclasses.dataclass
class SFTDataConfig:
    """Where the demonstrations come from and how they become tokens (tether.data)."""

    train: str = ranged(rule="non-empty")
    """{"prompt", "completion"} or {"messages": [...]} records to train on: a .jsonl, .json, .parquet or .csv
    file, a directory saved by `datasets`, or a Hub dataset `owner/name:split` (tether.data_sources)."""
    test: str | None = None
    """Records in the same format for test loss and perplexity; none: no evaluation."""
    columns: dict[str, str] = ranged({}, "non-empty")
    """The source's column for each of tether's (prompt, completion, messages), e.g. {prompt: question}."""
    max_length: int = ranged(512, ">= 1")
    """Tokens per example (prompt + completion + EOS); longer completions are cut to fit."""
    too_long: Literal["error", "skip"] = "error"
    """A prompt that leaves no room for a completion: 'error' names the record, 'skip' drops and counts it."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """'auto': the tokenizer's chat template for messages records when it has one; 'always': also wrap
    plain prompts as a user turn; 'never': plain text only."""
    template: TemplateConfig = dataclasses.field(default_factory=TemplateConfig)
    """The chat template and its variables, when not the tokenizer's own."""
    all_assistant_turns: bool = False
    """Train every assistant turn of a messages record, each on the conversation before it (one example per
    turn: a conversation of n turns costs about n times its prompt tokens); off: only the last turn."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a renamed column that nothing reads."""
        return column_problems(self, ("prompt", "completion", "messages"))


@dataclasses.dataclass
class SFTConfig:
    """`tether sft`: masked cross-entropy on demonstrations (InstructGPT stage 1)."""

    model: str = ranged(rule="non-empty")
    """Causal LM to fine-tune: a local Hugging Face directory (config.json, safetensors weights, tokenizer),
    a .gguf file (converted once into the cache) or a Hub id `owner/name[@revision]` (read through the HF
    cache; HF_HUB_OFFLINE honoured): tether.model_files."""
    data: SFTDataConfig
    """Training and test data."""
    tokenizer: str | None = None
    """Tokenizer directory or name when it differs from the model's."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype while training; float32 gives exact CPU resume, 'auto' keeps the saved dtype."""
    seed: int = ranged(0, SEED)
    """Seeds data order, dropout and everything random; the same seed gives the same weights on CPU."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: EpochLoopConfig = dataclasses.field(default_factory=lambda: EpochLoopConfig(lr=1e-4, epochs=3.0))
    """Optimisation, schedule, logging and checkpoints."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        return schedule_problems(self)


@dataclasses.dataclass
class PairDataConfig:
    """Preference pairs and how they become tokens (tether.preferences): the data of the reward model and
    of DPO."""

    train: str = ranged(rule="non-empty")
    """{"prompt", "chosen", "rejected"} pairs to train on (TRL's formats, tether.preferences), from any source
    SFT's data.train takes."""
    test: str | None = None
    """Held-out pairs: the reward model's accuracy, margin and calibration; DPO's test loss, preference
    accuracy, margins and KL estimate; none: no evaluation."""
    columns: dict[str, str] = ranged({}, "non-empty")
    """The source's column for each of tether's (prompt, chosen, rejected, label), e.g. {chosen: better}."""
    max_length: int = ranged(512, ">= 1")
    """Tokens per row (prompt + response + EOS); longer responses are cut to fit."""
    too_long: Literal["error", "skip"] = "error"
    """A prompt that leaves no room for a response: 'error' names the record, 'skip' drops and counts it."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """As in SFT, so that prompts read exactly as the policy was (or will be) trained on them."""
    template: TemplateConfig = dataclasses.field(default_factory=TemplateConfig)
    """As in SFT."""
    use_soft_labels: bool = False
    """Read each record's "label", P(chosen ≻ rejected), and fit it with the soft Bradley-Terry (reward
    model) or soft-label DPO (loss_type sigmoid only) cross-entropy; off: every pair is a sure preference."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a renamed column that nothing reads."""
        return column_problems(self, PAIR_COLUMNS)


@dataclasses.dataclass
class RMDataConfig(PairDataConfig):
    """Preference pairs for the reward model, and an optional margin column."""

    margin_field: str | None = None
    """A numeric column subtracted from r_chosen − r_rejected inside the loss (Llama 2's preference-strength
    margin: strongly preferred pairs must be separated by more); none: no margin."""


@dataclasses.dataclass
class RMConfig:
    """`tether rm`: a Bradley-Terry reward model on preference pairs (InstructGPT stage 2)."""

    model: str = ranged(rule="non-empty")
    """The SFT model directory: its trunk is kept, its LM head replaced by a new scalar head."""
    data: RMDataConfig
    """Training and test pairs."""
    tokenizer: str | None = None
    """Tokenizer directory or name when it differs from the model's."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype while training; float32 gives exact CPU resume, 'auto' keeps the saved dtype."""
    seed: int = ranged(0, SEED)
    """Seeds the new head, data order and dropout; the same seed gives the same weights on CPU."""
    center_coef: float = ranged(0.0, ">= 0")
    """Adds center_coef·mean((r_chosen + r_rejected)²) to keep rewards near 0 (the loss only sees
    differences, so their offset would otherwise drift); e.g. 0.01."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: EpochLoopConfig = dataclasses.field(default_factory=lambda: EpochLoopConfig(lr=1e-4, epochs=1.0))
    """Optimisation, schedule, logging and checkpoints (InstructGPT trains its reward model for one epoch:
    more overfits the pairs)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        return schedule_problems(self)


# ------------------------------------------------------------------------------------------------ DPO


@dataclasses.dataclass
class DPODataConfig(PairDataConfig):
    """Preference pairs for DPO, as for the reward model (without a margin column)."""


@dataclasses.dataclass
class DPOEvalConfig:
    """The sampled KL-from-reference estimate at each evaluation (held-out pairs give the rest)."""

    kl_prompts: int = ranged(32, ">= 0")
    """Distinct held-out prompts to sample one policy response each for; 0 skips the KL estimate."""
    max_new_tokens: int = ranged(32, ">= 1")
    """Longest sampled response for the KL estimate."""


@dataclasses.dataclass
class DPOConfig:
    """`tether dpo`: direct preference optimisation of the policy on preference pairs, no reward model
    (Rafailov et al. 2023) and its variants (IPO, conservative/robust DPO, hinge)."""

    policy: str = ranged(rule="non-empty")
    """The starting policy (the SFT model directory); it is trained in place of a reward model."""
    data: DPODataConfig
    """Training and held-out pairs."""
    reference: str | None = None
    """The frozen reference π_ref of the implicit reward β·log(π/π_ref); none: a copy of `policy`."""
    tokenizer: str | None = None
    """Tokenizer directory when it differs from the policy's (policy and reference must share it)."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    beta: float = ranged(0.1, "> 0")
    """β: the KL coefficient of the objective DPO optimises; smaller lets the policy move further away."""
    loss_type: Literal["sigmoid", "robust", "hinge", "ipo"] = "sigmoid"
    """A name of tether.losses.preference.DPO_LOSSES: sigmoid (DPO), robust (noise-corrected), hinge (SLiC),
    ipo (IPO; log-probs averaged over response tokens)."""
    label_smoothing: float = ranged(0.0, "[0, 0.5)")
    """ε in [0, 0.5): sigmoid fits P(chosen ≻ rejected) = 1 − ε (conservative DPO), robust treats ε as a
    known label-flip rate."""
    precompute_reference: bool = True
    """Score every pair with the reference once before training and cache it in RUN/ref_logprobs.pt (reused
    on --resume), saving a forward pass per step; false scores the reference at each step."""
    eval: DPOEvalConfig = dataclasses.field(default_factory=DPOEvalConfig)
    """The sampled KL estimate at each evaluation."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype; float32 gives exact CPU resume."""
    seed: int = ranged(0, SEED)
    """Seeds data order and the evaluation samples: the same seed gives the same weights on CPU."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: EpochLoopConfig = dataclasses.field(
        default_factory=lambda: EpochLoopConfig(lr=1e-5, batch_size=32, micro_batch_size=32, epochs=1.0)
    )
    """Optimisation, schedule, logging and checkpoints."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields (what dpo_loss would refuse)."""
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            yield "loss_type", f"{self.loss_type} does not take label_smoothing (sigmoid and robust do)"
        if self.data.use_soft_labels and self.loss_type != "sigmoid":
            yield "data.use_soft_labels", f"needs loss_type sigmoid, not {self.loss_type}"
        if self.data.use_soft_labels and self.label_smoothing:
            yield "label_smoothing", "must be 0 with data.use_soft_labels: give one or the other"
        yield from schedule_problems(self)
