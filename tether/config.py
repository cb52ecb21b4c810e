"""Stage configs: one dataclass per stage, loaded from YAML, overridden by `key=value`, dumped resolved.

A config is a tree of dataclasses (a field whose type is a dataclass is a nested section; override its
fields with dotted keys, `train.lr=1e-4`). Every field carries a one-line docstring saying why it exists.

    cfg = load_config(SFTConfig, "configs/sft.yaml", ["train.lr=3e-4", "data.max_length=128"])
    dump_config(cfg, run_dir, data_files=[cfg.data.train])   # writes RUN/config.yaml

Values are checked against the field types (int, float, bool, str, Literal[...], X | None, list[X], nested
dataclasses): an unknown key or a wrongly typed value raises `TetherError` naming the key. In YAML, a float
written without a dot (`1e-4`, which YAML reads as a string) is accepted for a float field; NaN and ±inf are
not. Then each value is checked against its field's rule (declared with the field: `ranged(8, ">= 1")`) and
each config's `problems()` (rules between fields), so that a bad value fails at load with one line naming
the key, not later in training. A key written twice in a YAML file is an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import subprocess
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.errors import TetherError
from tether.files import write_text_atomic

PROVENANCE_KEY = "provenance"  # written by `dump_config`, ignored by `load_config`


# ------------------------------------------------------------------------------------------------ value rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value must be besides its type, checked at load: a number in an interval, a non-empty
    string, a list of so many items. The number and string parts apply to each item of a list field and are
    skipped for None (an optional field left unset)."""

    text: str = ""
    """The rule as written in the field: "> 0", ">= 1", "[0, 1)" ((: open, [: closed), "non-empty" or ""."""
    length: int | None = None
    """A list field's exact number of items."""
    min_length: int | None = None
    """A list field's least number of items."""

    def __post_init__(self):
        if self.text and self.text != "non-empty" and _interval(self.text) is None:
            raise ValueError(f"unreadable rule {self.text!r}")  # a typo in a config class, at import

    def check(self, key: str, value: Any) -> None:
        """TetherError naming `key` when `value` breaks the rule."""
        if value is None:
            return
        if isinstance(value, list):
            n = len(value)
            if self.length is not None and n != self.length:
                raise TetherError(f"config key {key} must have {self.length} items, got {n}: {value!r}")
            if self.min_length is not None and n < self.min_length:
                items = "item" if self.min_length == 1 else "items"
                raise TetherError(f"config key {key} must have at least {self.min_length} {items}, got {n}")
            for i, item in enumerate(value):
                self.check(f"{key}[{i}]", item)
            return
        if self.text == "non-empty":
            if not str(value).strip():
                raise TetherError(f"config key {key} must be a non-empty string, got {value!r}")
        elif self.text:
            low, low_open, high, high_open = _interval(self.text)
            if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
                shown = self.text if self.text[0] in "<>" else f"in {self.text}"
                raise TetherError(f"config key {key} must be {shown}, got {value!r}")


def _interval(text: str) -> tuple[float, bool, float, bool] | None:
    """(low, low open, high, high open) of "> 0", ">= 1" or "[0, 1)"; None if unreadable."""
    bound = re.fullmatch(r"(>=?) *(-?[\d.e+-]+)", text)
    if bound:
        return float(bound[2]), bound[1] == ">", math.inf, True
    both = re.fullmatch(r"([\[(]) *(-?[\d.e+-]+) *, *(-?[\d.e+-]+) *([\])])", text)
    if both:
        return float(both[2]), both[1] == "(", float(both[3]), both[4] == ")"
    return None


def ranged(default: Any = dataclasses.MISSING, rule: str = "", *, length: int | None = None,
           min_length: int | None = None) -> Any:
    """A dataclass field whose value must also satisfy `Rule(rule, length, min_length)`; a list default is
    copied for each instance. No default: a required field."""
    meta = {"rule": Rule(rule, length, min_length)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


SEED = "[0, 4294967296)"  # numpy's seeds are 32-bit unsigned integers


@dataclasses.dataclass
class LoopConfig:
    """The shared training loop (tether.trainers.base): optimisation, schedule, logging and checkpoints. The
    RL stages take it as is (their length is `iterations`); SFT, RM and DPO take `EpochLoopConfig`."""

    lr: float = ranged(1e-4, "> 0")
    """Peak learning rate of AdamW, reached at the end of warm-up."""
    weight_decay: float = ranged(0.0, ">= 0")
    """AdamW decoupled weight decay; 0 keeps fine-tuning close to the starting model."""
    betas: list[float] = ranged([0.9, 0.999], "[0, 1)", length=2)
    """AdamW (beta1, beta2): decay rates of the first and second moment estimates."""
    batch_size: int = ranged(8, ">= 1")
    """Examples per optimizer step, over all processes and accumulation steps together."""
    micro_batch_size: int = ranged(8, ">= 1")
    """Examples per forward pass on one process; batch_size / (micro_batch_size * processes) micro-batches
    are accumulated per step (the loss is divided by the whole step's count, so the split changes nothing)."""
    warmup_steps: int = ranged(0, ">= 0")
    """Steps of linear learning-rate warm-up from lr/warmup_steps to lr, which steadies Adam's early steps."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate shape after warm-up: constant, or decaying to 0 at the last step (linear, cosine)."""
    max_grad_norm: float = ranged(1.0, ">= 0")
    """Clip the global gradient norm to this; 0 disables clipping (the norm is still logged)."""
    max_bad_steps: int = ranged(5, ">= 1")
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""
    eval_every: int = ranged(0, ">= 0")
    """Evaluate every this many steps (0: only at the end)."""
    save_every: int = ranged(0, ">= 0")
    """Write a checkpoint every this many steps (0: only at the end and on SIGTERM)."""
    keep_last: int = ranged(2, ">= 0")
    """Checkpoints to keep (0: all); the oldest beyond it are deleted before a save, so the save needs room
    for no more than this many, but the newest good one goes only once the new one is complete."""
    log_every: int = ranged(1, ">= 1")
    """Write training metrics every this many steps."""
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    """Autocast precision passed to accelerate; 'no' keeps float32 (and exact CPU resume). bf16 is used only
    where the hardware has bf16 units (else float32, with a notice); 'auto': bf16 there, float32 elsewhere
    (tether.precision). The reference models and PPO's critic run under the same autocast as the policy."""
    device: Literal["auto", "cpu"] = "auto"
    """'cpu' forces the CPU even when a GPU is present; 'auto' lets accelerate choose."""
    threads: int = ranged(0, ">= 0")
    """torch intra-op threads; 0: one for a model under 20 M parameters on the CPU (its small ops lose more to
    thread hand-offs than they gain: a lab PPO iteration took 2.5-3 s on 1 thread, 15-116 s on 2 busy
    cores), else torch's default."""
    progress: bool = True
    """Show a tqdm progress bar (on the main process only)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them: less memory
    for about one more forward pass of time (tether.activations)."""

    # Keys of EpochLoopConfig that an RL stage refuses, and what sets the length of its run instead.
    instead = {
        "epochs": "iterations, and ppo.epochs / grpo.epochs / rloo.epochs for the passes over each "
        "iteration's responses",
        "max_steps": "iterations (rollout-and-update iterations; the optimizer steps follow from them)",
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        if self.batch_size % self.micro_batch_size:
            m = self.micro_batch_size
            yield "batch_size", f"must be a multiple of micro_batch_size ({m}), got {self.batch_size}"


@dataclasses.dataclass
class EpochLoopConfig(LoopConfig):
    """The shared loop of the stages that pass over a data set (SFT, RM, DPO), with the run's length in
    epochs or optimizer steps."""

    epochs: float = ranged(1.0, "> 0")
    """Passes over the training data (fractions allowed); ignored when max_steps is set."""
    max_steps: int | None = ranged(None, ">= 1")
    """Optimizer steps to run; overrides epochs when set."""
    group_by_length: bool = False
    """Sort each step's examples by length before cutting them into micro-batches, so that rows of like length
    share a forward pass (less padding); the step's gradient is the same sum over the same examples."""
    micro_batch_tokens: int | None = ranged(None, ">= 1")
    """Cut each step's examples (sorted by length) into micro-batches of at most this many tokens, rows ×
    the longest row (a longer example runs alone), instead of micro_batch_size examples: memory bounded by
    tokens, not by the longest row; none: micro_batch_size examples per forward pass."""


@dataclasses.dataclass
class LoRAConfig:
    """Low-rank adapters (Hu et al. 2021, eq. 3: W x + (alpha/r)·B A x) trained in place of the full weights
    (peft; wiring in tether.lora). With r > 0 the base weights stay frozen, the reference model of DPO and of
    the KL penalty is the same weights with the adapters switched off (no second copy in memory), and
    RUN/model holds the merged weights (RUN/adapter the adapter alone)."""

    r: int = ranged(0, ">= 0")
    """Rank of each adapter; 0 trains every weight (no LoRA)."""
    alpha: float = ranged(16.0, "> 0")
    """Scale numerator: the adapter's update is multiplied by alpha / r."""
    dropout: float = ranged(0.0, "[0, 1)")
    """Dropout on each adapter's input, active only in forward passes that compute gradients; SFT, RM and DPO
    only (PPO, GRPO and RLOO refuse it: their ratio π/π_old would not start at 1)."""
    target_modules: list[str] = ranged(["all-linear"], "non-empty", min_length=1)
    """Module names (suffixes) that get adapters; ['all-linear']: every linear layer but the output head
    (attention and MLP projections)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train too; only none is accepted (peft trains biases in place, and the reference is the
    model with its adapters off, which must be the starting model)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each value the adapters cannot take (peft has the other biases)."""
        if self.bias != "none":  # peft trains the base's own bias tensors, which disable_adapter() keeps
            yield "bias", (f"must be none, got {self.bias!r}: it trains the base model's biases in place, so "
                           "the adapters-off reference would no longer be the starting model")


@dataclasses.dataclass
class SFTDataConfig:
    """Where the demonstrations come from and how they become tokens (tether.data)."""

    train: str = ranged(rule="non-empty")
    """JSONL file of {"prompt", "completion"} or {"messages": [...]} records to train on."""
    test: str | None = None
    """JSONL file in the same format for test loss and perplexity; none: no evaluation."""
    max_length: int = ranged(512, ">= 1")
    """Tokens per example (prompt + completion + EOS); longer completions are cut to fit."""
    too_long: Literal["error", "skip"] = "error"
    """A prompt that leaves no room for a completion: 'error' names the record, 'skip' drops and counts it."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """'auto': the tokenizer's chat template for messages records when it has one; 'always': also wrap
    plain prompts as a user turn; 'never': plain text only."""


@dataclasses.dataclass
class SFTConfig:
    """`tether sft`: masked cross-entropy on demonstrations (InstructGPT stage 1)."""

    model: str = ranged(rule="non-empty")
    """Causal LM to fine-tune: a local Hugging Face directory (config.json, safetensors weights, tokenizer)
    or a .gguf file (converted once into the cache, tether.model_files)."""
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


@dataclasses.dataclass
class RMDataConfig:
    """Preference pairs for the reward model and how they become tokens (tether.data)."""

    train: str = ranged(rule="non-empty")
    """JSONL file of {"prompt", "chosen", "rejected"} pairs to train on (prompt: text or messages)."""
    test: str | None = None
    """JSONL file of held-out pairs for pairwise accuracy, margin and calibration; none: no evaluation."""
    max_length: int = ranged(512, ">= 1")
    """Tokens per row (prompt + response + EOS); longer responses are cut to fit."""
    too_long: Literal["error", "skip"] = "error"
    """A prompt that leaves no room for a response: 'error' names the record, 'skip' drops and counts it."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """As in SFT, so that the reward model reads prompts exactly as the policy was trained on them."""
    use_soft_labels: bool = False
    """Read each record's "label" (probability that chosen is preferred) and fit it with a soft
    Bradley-Terry cross-entropy; off: every pair counts as a sure preference for chosen."""
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


# ------------------------------------------------------------------------------------------------ loading


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None):
    """Build a `cls` config from a YAML file (optional) and `key=value` overrides, validating both."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(cls, item)
        _set_dotted(raw, key, value)
    return from_dict(cls, raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file, without the provenance section `dump_config` adds."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except OSError as e:
        raise TetherError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TetherError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TetherError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    data.pop(PROVENANCE_KEY, None)
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one silently,
    so a forgotten earlier line would quietly stop applying)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` entries may be overridden by design
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """yaml.safe_load that refuses duplicate keys (yaml.YAMLError, with the line in its problem_mark)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass


def parse_override(cls: type, item: str) -> tuple[str, Any]:
    """`"train.lr=3e-4"` → `("train.lr", 0.0003)`, typed by the field the dotted key names."""
    if "=" not in item:
        raise TetherError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    hint = _field_type(cls, key)
    return key, _parse_text(key, text, hint)


def from_dict(cls: type, raw: dict[str, Any], prefix: str = ""):
    """Validate a nested mapping against the dataclass `cls` and build it (missing keys take defaults)."""
    if not isinstance(raw, dict):
        raise TetherError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise _unknown_key(cls, prefix + unknown[0], unknown[0])
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = _check(key, raw[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _check(key, {}, hints[name])  # a section whose own keys may be required
            else:
                raise TetherError(f"missing required config key {key}")
    cfg = cls(**kwargs)
    _check_rules(cfg, prefix)  # the sections' own rules were checked as they were built
    return cfg


def validate(cfg, prefix: str = "") -> None:
    """TetherError naming the key for the first value of `cfg` (a config dataclass built in Python, e.g. with
    dataclasses.replace) that breaks its field's rule or a rule between fields; `load_config` checks the
    same as it builds."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if dataclasses.is_dataclass(item):
                validate(item, f"{prefix}{f.name}" + (f"[{i}]." if isinstance(value, list) else "."))
    _check_rules(cfg, prefix)


def _check_rules(cfg, prefix: str) -> None:
    """The rules of `cfg`'s own fields (not of its sections), then its `problems()`."""
    for f in dataclasses.fields(cfg):
        if "rule" in f.metadata:
            f.metadata["rule"].check(prefix + f.name, getattr(cfg, f.name))
    for key, reason in cfg.problems() if hasattr(cfg, "problems") else ():
        raise TetherError(f"config key {prefix}{key} {reason}")


def _unknown_key(cls: type, dotted: str, name: str) -> TetherError:
    """The error for a key `name` (written `dotted`) that `cls` has no field for: what to use instead when
    the class says (`instead`, e.g. the RL stages' train.max_steps), else the keys it knows."""
    hint = getattr(cls, "instead", {}).get(name)
    if hint:
        return TetherError(f"config key {dotted} does not apply to this stage: use {hint}")
    known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
    return TetherError(f"unknown config key {dotted} (known: {known})")


def to_dict(cfg) -> dict[str, Any]:
    """The config as plain nested dicts/lists (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def _field_type(cls: type, dotted: str):
    hint: Any = cls
    for i, part in enumerate(dotted.split(".")):
        if not dataclasses.is_dataclass(hint):
            parent = ".".join(dotted.split(".")[:i])
            raise TetherError(f"unknown config key {dotted} ({parent} has no fields)")
        hints = typing.get_type_hints(hint)
        if part not in {f.name for f in dataclasses.fields(hint)}:
            raise _unknown_key(hint, ".".join(dotted.split(".")[: i + 1]), part)
        hint = hints[part]
    return hint


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _parse_text(key: str, text: str, hint) -> Any:
    """Turn an override's text into a value for a field of type `hint` (checked later by `_check`)."""
    text = text.strip()
    if hint is str:
        return text
    if _optional_inner(hint) is str:
        return None if text.lower() in ("null", "none", "~") else text
    try:
        value = load_yaml(text) if text else None
    except yaml.YAMLError:
        raise TetherError(f"config key {key}: cannot parse {text!r}") from None
    return value


def _optional_inner(hint):
    """X for `X | None`, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(key: str, value: Any, hint) -> Any:
    """`value` converted to `hint`, or TetherError naming `key`."""
    bad = TetherError(f"config key {key}: expected {_type_name(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, prefix=key + ".")
    inner = _optional_inner(hint)
    if inner is not None:
        return None if value is None else _check(key, value, inner)
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise TetherError(f"config key {key}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = typing.get_args(hint)
        return [_check(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        try:
            number = float(value)  # YAML reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number):
            raise TetherError(f"config key {key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TetherError(f"config key {key}: unsupported field type {hint!r}")  # a bug in a config class


# ------------------------------------------------------------------------------------------------ dumping


def dump_config(
    cfg, run_dir: str | Path, data_files: list[str | None] | None = None, code: dict | None = None
) -> Path:
    """Write the resolved `cfg` and its provenance to RUN/config.yaml; returns the path.

    Provenance: versions of tether, torch and transformers, the git commit of the tether source when it is
    a git checkout, and the sha256 of each data file (so a run can be matched to the data it saw); `code`,
    when given, as provenance.code: the user code the run imported ({spec: {"path", "sha256"}}, e.g.
    tether.rewards.imported_code of a `module:function` reward).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = to_dict(cfg)
    doc[PROVENANCE_KEY] = provenance(data_files or [])
    if code:
        doc[PROVENANCE_KEY]["code"] = code
    path = run_dir / "config.yaml"
    return write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))


def provenance(data_files: list[str | None]) -> dict[str, Any]:
    """Versions, git commit and data hashes, for the record."""
    import torch
    import transformers

    import tether

    return {
        "tether_version": str(tether.__version__),
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
        "git_commit": git_commit(),
        "data_sha256": {str(p): sha256_file(p) for p in data_files if p},
    }


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout tether runs from (with '+dirty' for local changes); None outside git."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ------------------------------------------------------------------------------------------------ PPO


@dataclasses.dataclass
class PPODataConfig:
    """Prompts to sample responses for (tether.data prompt records: {"prompt"} plus any metadata)."""

    train: str = ranged(rule="non-empty")
    """JSONL file of prompts for the training rollouts."""
    test: str | None = None
    """JSONL file of held-out prompts for the final evaluation (reward, gold reward, KL, win-rate vs SFT)."""
    max_prompt_length: int = ranged(128, ">= 1")
    """Longest prompt in tokens; see too_long for what happens to a longer one."""
    too_long: Literal["error", "skip", "truncate"] = "error"
    """A prompt over max_prompt_length: 'error' names the record, 'skip' drops and counts it, 'truncate'
    keeps its last max_prompt_length tokens (the end the response follows)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """As for SFT: the tokenizer's chat template for messages prompts when it has one."""


@dataclasses.dataclass
class PPORolloutConfig:
    """How each iteration samples responses (tether.rollout.sample: batched, KV-cached, left-padded)."""

    batch_size: int = ranged(64, ">= 1")
    """Prompts per iteration, one response each: the experience every PPO epoch goes over."""
    max_new_tokens: int = ranged(32, ">= 1")
    """Longest response; a response cut here has not ended (see reward.no_eos)."""
    temperature: float = ranged(1.0, ">= 0")
    """Sampling temperature. Log-probs (policy and reference) are scored at the same temperature, so with
    T ≠ 1 the KL penalty and the reported KL are those of the sampling distributions, not of the models.
    0: greedy decoding, log-probs at T = 1 (PPO only: a group's greedy responses would all be the same)."""
    top_p: float = ranged(1.0, "(0, 1]")
    """Nucleus sampling mass; 1 samples from the whole (temperature-scaled) distribution."""
    stop: list[str] = ranged([], "non-empty")
    """Strings that end a response like EOS: it is cut after the first one it contains."""
    engine: Literal["hf", "vllm"] = "hf"
    """Who samples: 'hf' (tether.rollout on the policy itself) or 'vllm' (a vLLM engine per process, policy
    weights copied in each iteration; needs the vllm package and a CUDA GPU, else an error at start-up)."""


@dataclasses.dataclass
class PPORewardConfig:
    """The sequence score's source and its conditioning before the KL penalty (tether.rewards)."""

    source: str = ranged("gold", "non-empty")
    """A reward model directory, 'gold' (the lab's gold reward) or 'module:function' taking (prompts,
    responses) lists of strings and returning one float per response: tether imports that module and runs
    it, with your rights (any module on sys.path; RUN/config.yaml's provenance.code records the file's path
    and sha256), so name only code you trust. Each gets the prompt record as the data
    gives it (text or messages; whole, even when data.too_long=truncate cut the policy's copy) and the
    response as text: its tokens up to EOS (or through a stop string) decoded without special tokens, stripped
    of surrounding whitespace. A reward model re-tokenises that text as its own training rows were built
    (its run's data.chat_template and data.max_length, EOS appended), so it may read other ids than the
    policy sampled."""
    normalize: bool = False
    """Divide scores by a running std and subtract a running mean over every score seen so far (saved in
    checkpoints); off keeps β in the reward's own units, as in E[R] − β·KL."""
    no_eos: Literal["keep", "replace", "offset"] = "offset"
    """A response that never ended (cut at max_new_tokens): 'keep' its score, 'replace' the score with
    no_eos_score, or 'offset' it by no_eos_score. Applied after normalisation."""
    no_eos_score: float = -1.0
    """The replacement score or the offset for responses without EOS (or a stop string)."""


@dataclasses.dataclass
class PPOKLConfig:
    """The KL penalty to the frozen SFT model: per-token estimator and coefficient β (tether.kl_control)."""

    estimator: Literal["k1", "k3", "token_kl"] = "k1"
    """Per-token KL penalty (tether.losses.kl derives each): 'k1' log π − log π_ref at the sampled token in
    the reward (InstructGPT); 'token_kl' the exact KL of the next-token distributions, in the reward for the
    positions after each token and in the loss for its own (one more reference forward pass per
    minibatch). Both give the gradient of β·KL(π‖π_ref) in expectation; k1's is the quieter near the
    optimum, where r − β·Σ k1 is the same for every response. 'k3' is refused: as a reward its gradient is
    not the KL's."""
    beta: float = ranged(0.05, ">= 0")
    """KL coefficient in reward units per nat (the initial value when adaptive)."""
    adaptive: bool = False
    """Adapt β towards target (Ziegler et al. 2019's proportional controller) instead of keeping it fixed."""
    target: float = ranged(6.0, "> 0")
    """Adaptive β: the sequence-level KL in nats to hold the policy at."""
    horizon: float = ranged(10000.0, "> 0")
    """Adaptive β: responses over which β may change by at most ±20%."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of an estimator that would train another objective as a reward."""
        from tether.losses.kl import REFUSED_IN_REWARD

        if self.estimator in REFUSED_IN_REWARD:
            yield "estimator", f"{self.estimator!r} is refused: {REFUSED_IN_REWARD[self.estimator]}"


@dataclasses.dataclass
class PPOAlgoConfig:
    """The PPO update on each iteration's experience (Schulman et al. 2017; losses in tether.losses)."""

    epochs: int = ranged(4, ">= 1")
    """Passes over the iteration's responses, in minibatches of train.batch_size responses."""
    clip_eps: float = ranged(0.2, "> 0")
    """Clip range ε of the policy ratio π/π_old."""
    value_clip_eps: float = ranged(0.2, "> 0")
    """Clip range of the value update around the values at sampling time (in reward units)."""
    vf_coef: float = ranged(0.1, ">= 0")
    """Weight of the value loss in the summed loss (the critic shares the optimizer, not the weights)."""
    ent_coef: float = ranged(0.0, ">= 0")
    """Weight of the entropy bonus (mean per-token entropy, subtracted from the loss)."""
    gamma: float = ranged(1.0, "[0, 1]")
    """Discount per token; 1 makes the return the undiscounted score − β·KL of the rest of the response."""
    lam: float = ranged(0.95, "[0, 1]")
    """GAE λ: 0 is the one-step TD advantage, 1 the Monte-Carlo return minus the value."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the iteration's response tokens."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop the iteration's remaining epochs once an epoch's mean approx_kl (to the sampling policy) passes
    this; none: always run every epoch."""


@dataclasses.dataclass
class PPOEvalConfig:
    """The held-out evaluation at the end (and every train.eval_every iterations): policy vs SFT samples."""

    max_prompts: int = ranged(200, ">= 1")
    """Held-out prompts to evaluate on (the first ones of data.test)."""
    gold: Literal["auto", "lab", "none"] = "auto"
    """Gold reward as judge and logged figure: auto if every prompt is the lab's; lab: they must be; none."""


@dataclasses.dataclass
class PPOConfig:
    """`tether ppo`: RL from a reward with a KL penalty to the SFT model (InstructGPT stage 3).

    train.batch_size is the PPO minibatch (responses per optimizer step) and train.micro_batch_size the
    forward-pass size; iterations × ppo.epochs fix the length of the run (train has no epochs or max_steps);
    train.eval_every and save_every count iterations.
    """

    policy: str = ranged(rule="non-empty")
    """The SFT model directory: the policy starts from it and (unless `reference` is set) the frozen
    reference is a copy of it."""
    data: PPODataConfig
    """Training and held-out prompts."""
    reference: str | None = None
    """Another model directory as the frozen reference of the KL penalty; none: a copy of `policy`."""
    reward: PPORewardConfig = dataclasses.field(default_factory=PPORewardConfig)
    """The reward source and its conditioning."""
    critic: Literal["auto", "rm", "policy"] = "auto"
    """Value model: 'rm' a separate critic initialised from the reward model (InstructGPT), 'policy' one
    initialised from the SFT model with a new scalar head; 'auto': rm when reward.source is a directory."""
    tokenizer: str | None = None
    """Tokenizer directory when it differs from the policy's."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    iterations: int = ranged(100, ">= 1")
    """Rollout-and-update iterations."""
    rollout: PPORolloutConfig = dataclasses.field(default_factory=PPORolloutConfig)
    """Sampling."""
    kl: PPOKLConfig = dataclasses.field(default_factory=PPOKLConfig)
    """The KL penalty."""
    ppo: PPOAlgoConfig = dataclasses.field(default_factory=PPOAlgoConfig)
    """The PPO update."""
    eval: PPOEvalConfig = dataclasses.field(default_factory=PPOEvalConfig)
    """Held-out evaluation."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype; float32 gives exact CPU resume."""
    seed: int = ranged(0, SEED)
    """Seeds prompt order, sampling and minibatch order: the same seed gives the same weights on CPU."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(lr=1e-5, batch_size=16, micro_batch_size=16, save_every=0)
    )
    """Optimisation of policy and critic together (one AdamW), warm-up, clipping, checkpoints."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        r, t = self.rollout, self.train
        if r.batch_size % t.batch_size:
            m = t.batch_size
            yield "rollout.batch_size", f"must be a multiple of train.batch_size ({m}), got {r.batch_size}"
        yield from rl_problems(self)


def rl_problems(cfg) -> Iterator[tuple[str, str]]:
    """The rules between fields that every RL stage (PPO, GRPO, RLOO) shares."""
    if cfg.rollout.engine == "vllm" and cfg.lora.r > 0:  # its weight copy takes plain names only
        yield "rollout.engine", "vllm does not take LoRA adapters yet: use lora.r=0 or rollout.engine=hf"
    if cfg.lora.dropout > 0:
        # π_old is scored without gradients, where LoRA dropout is off (tether.lora.train_while_grad), and π
        # is trained with it on: the first minibatch's ratio π/π_old would be dropout noise, not 1 (in the
        # clipping, clipfrac and the approx-KL early stop)
        yield "lora.dropout", (f"must be 0 in an RL stage, got {cfg.lora.dropout}: π_old is scored without "
                               "dropout, so the ratio π/π_old would not start at 1")


# ------------------------------------------------------------------------------------------------ DPO


@dataclasses.dataclass
class DPODataConfig:
    """Preference pairs for DPO and how they become tokens (tether.data), as for the reward model."""

    train: str = ranged(rule="non-empty")
    """JSONL file of {"prompt", "chosen", "rejected"} pairs to train on (prompt: text or messages)."""
    test: str | None = None
    """JSONL file of held-out pairs for test loss, preference accuracy, margins and the KL estimate."""
    max_length: int = ranged(512, ">= 1")
    """Tokens per row (prompt + response + EOS); longer responses are cut to fit."""
    too_long: Literal["error", "skip"] = "error"
    """A prompt that leaves no room for a response: 'error' names the record, 'skip' drops and counts it."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """As in SFT, so that prompts read exactly as the policy was trained on them."""
    use_soft_labels: bool = False
    """Read each record's "label" as P(chosen ≻ rejected) and fit it with the soft-label DPO cross-entropy
    (loss_type sigmoid only); off: every pair counts as a sure preference for chosen."""


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


# ------------------------------------------------------------------------------------------------ GRPO, RLOO


@dataclasses.dataclass
class RewardTerm:
    """One weighted reward function of a summed score."""

    source: str = ranged(rule="non-empty")
    """A reward model directory, 'gold' or 'module:function' (as PPORewardConfig.source)."""
    weight: float = 1.0
    """Its coefficient in the sum."""


@dataclasses.dataclass
class GroupRewardConfig(PPORewardConfig):
    """PPO's reward options, plus more weighted reward functions: the score of a response is
    weight·source + Σ extra[i].weight·extra[i].source, then normalize and no_eos apply to the sum."""

    weight: float = 1.0
    """Coefficient of `source` in the sum; 0 leaves it out (and does not load it)."""
    extra: list[RewardTerm] = dataclasses.field(default_factory=list)
    """More reward functions, e.g. [{source: 'my_pkg.rewards:format', weight: 0.2}]."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        if not any([self.weight, *(t.weight for t in self.extra)]):
            yield "weight", "is 0 and so is every extra[i].weight: nothing to optimise"


@dataclasses.dataclass
class GroupRolloutConfig(PPORolloutConfig):
    """Sampling for the group methods: each prompt of an iteration is sampled group_size times."""

    batch_size: int = ranged(16, ">= 1")
    """Prompts per iteration; with G responses each an iteration holds batch_size × G responses, and
    train.batch_size (responses per optimizer step) must divide that."""


@dataclasses.dataclass
class GRPOAlgoConfig:
    """The GRPO update (Shao et al. 2024, eq. 3; advantages of sec. 4.1.2; losses in tether.losses).

    The form whose optimum is exactly π* ∝ π_ref·exp(r/β) (as PPO's and RLOO's): kl_in_reward=true,
    scale=none, aggregation=token_sum. The paper's form is kl_in_reward=false, scale=group,
    aggregation=sequence_mean."""

    group_size: int = ranged(8, ">= 2")
    """G, responses sampled per prompt; the group's mean (and std) is each response's baseline."""
    epochs: int = ranged(1, ">= 1")
    """Passes over each iteration's responses (μ of the paper's algorithm 1); with 1, and one minibatch
    per iteration, π_old = π and the update is on-policy."""
    eps_low: float = ranged(0.2, "(0, 1)")
    """Lower clip range of the ratio π/π_old."""
    eps_high: float = ranged(0.2, "> 0")
    """Upper clip range; above eps_low is DAPO's clip-higher (Yu et al. 2025 use 0.28)."""
    scale: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group's std (paper), the batch's, or not at all (Dr. GRPO). Group
    scaling makes the effective β of the KL term β·std, different for each prompt."""
    aggregation: Literal["sequence_mean", "token_mean", "constant_norm", "token_sum"] = "sequence_mean"
    """How per-token losses become one number: mean per response then over responses (paper), mean over
    all tokens (DAPO), sum / (B·max_new_tokens) (Dr. GRPO), or sum per response, mean over responses."""
    beta: float = ranged(0.04, ">= 0")
    """KL coefficient (nats): of the k3 term in the loss, or of the k1 penalty in the reward when
    kl_in_reward. 0 skips the reference model in training (it is loaded for the evaluation only)."""
    kl_in_reward: bool = False
    """Subtract β·Σ_t (log π_old − log π_ref) from each response's score before the group baseline (as RLOO)
    instead of adding β·k3 to the loss."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop an iteration's remaining epochs once an epoch's mean approx_kl passes this; none: run all."""


@dataclasses.dataclass
class GroupStageConfig:
    """The fields GRPOConfig and RLOOConfig share: models, prompts, rewards, sampling, evaluation, loop."""

    policy: str = ranged(rule="non-empty")
    """The SFT model directory: the policy starts from it and (unless `reference` is set) the frozen
    reference is a copy of it."""
    data: PPODataConfig
    """Training and held-out prompts."""
    reference: str | None = None
    """Another model directory as the frozen reference of the KL penalty; none: a copy of `policy`."""
    reward: GroupRewardConfig = dataclasses.field(default_factory=GroupRewardConfig)
    """The reward sources, their weights and conditioning."""
    tokenizer: str | None = None
    """Tokenizer directory when it differs from the policy's."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    iterations: int = ranged(100, ">= 1")
    """Rollout-and-update iterations."""
    rollout: GroupRolloutConfig = dataclasses.field(default_factory=GroupRolloutConfig)
    """Sampling."""
    eval: PPOEvalConfig = dataclasses.field(default_factory=PPOEvalConfig)
    """Held-out evaluation."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype; float32 gives exact CPU resume."""
    seed: int = ranged(0, SEED)
    """Seeds prompt order, sampling and minibatch order: the same seed gives the same weights on CPU."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(lr=1e-5, batch_size=64, micro_batch_size=16, save_every=0)
    )
    """Optimisation of the policy, warm-up, clipping, checkpoints."""


@dataclasses.dataclass
class GRPOConfig(GroupStageConfig):
    """`tether grpo`: group-relative policy optimisation, no critic (Shao et al. 2024).

    Each iteration samples grpo.group_size responses for each of rollout.batch_size prompts; train.batch_size
    counts responses per optimizer step. iterations × grpo.epochs fix the length of the run;
    train.eval_every and save_every count iterations.
    """

    grpo: GRPOAlgoConfig = dataclasses.field(default_factory=GRPOAlgoConfig)
    """Group size, clipping, KL and aggregation."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        return group_problems(self, "grpo.group_size", self.grpo.group_size)


@dataclasses.dataclass
class RLOOAlgoConfig:
    """The RLOO update (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline, clipped like PPO
    when a batch is used for more than one step."""

    k: int = ranged(4, ">= 2")
    """Responses sampled per prompt; each one's baseline is the mean score of the other k − 1."""
    epochs: int = ranged(1, ">= 1")
    """Passes over each iteration's responses; with 1, and one minibatch per iteration, the update is
    exactly REINFORCE with the leave-one-out baseline (the ratio is 1, nothing clips)."""
    clip_eps: float = ranged(0.2, "> 0")
    """Clip range of π/π_old for the minibatches after the first (off-policy by then)."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop an iteration's remaining epochs once an epoch's mean approx_kl passes this; none: run all."""


@dataclasses.dataclass
class RLOOConfig(GroupStageConfig):
    """`tether rloo`: REINFORCE leave-one-out, the KL to the SFT model in the reward (Ahmadian et al. 2024).

    Each iteration samples rloo.k responses for each of rollout.batch_size prompts; train.batch_size counts
    responses per optimizer step. kl.estimator is the per-token KL summed into the sequence penalty (k1:
    β·Σ log π/π_ref, as in the paper). train.eval_every and save_every count iterations.
    """

    kl: PPOKLConfig = dataclasses.field(default_factory=PPOKLConfig)
    """The KL penalty in the reward: estimator, β, fixed or adaptive. β = 0 skips the reference model."""
    rloo: RLOOAlgoConfig = dataclasses.field(default_factory=RLOOAlgoConfig)
    """Samples per prompt and the update."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        return group_problems(self, "rloo.k", self.rloo.k)


def group_problems(cfg: GroupStageConfig, size_key: str, size: int) -> Iterator[tuple[str, str]]:
    """The rules between fields of GRPO and RLOO, whose groups have `size` responses (key `size_key`)."""
    yield from rl_problems(cfg)
    r, t = cfg.rollout, cfg.train
    if r.temperature == 0:
        yield "rollout.temperature", ("must be > 0 for a group method, got 0.0 (greedy): the responses "
                                      "sampled for a prompt would all be the same, and so every advantage 0")
    n = r.batch_size * size
    if n % t.batch_size:
        per_iteration = f"rollout.batch_size × {size_key} = {n} responses"
        yield "train.batch_size", f"must divide {per_iteration}, got {t.batch_size}"
