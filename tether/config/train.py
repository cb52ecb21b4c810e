"""The shared training loop's config (LoopConfig; EpochLoopConfig for the stages that pass over a data set)
and LoRA's."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator
from typing import Literal

from tether.config.loader import ranged


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
    checkpoint_layers: int = ranged(0, ">= 0")
    """With gradient_checkpointing: recompute only the first this many decoder layers (0: all), for part of
    the memory saved at that part of the time."""
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = dataclasses.field(
        default_factory=list
    )
    """Experiment trackers (accelerate's) that receive every metrics.jsonl record, the RL stages' sample
    tables and the summary's instruments at the end, from the main process; [] logs to none. TensorBoard
    writes under RUN/tensorboard/ (pip install 'tether[track]'); wandb, trackio and mlflow need their own
    package."""

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
        if self.checkpoint_layers and not self.gradient_checkpointing:
            yield "checkpoint_layers", "needs gradient_checkpointing: true"
        if len(set(self.report_to)) < len(self.report_to):
            yield "report_to", f"names a tracker twice: {self.report_to}"
        missing = missing_tracker(self.report_to)
        if missing:
            yield "report_to", missing


# Tracker name → (the module accelerate imports for it, how to install it). tether's `track` extra holds
# TensorBoard, the one tracker its tests cover; the others install as their own packages.
TRACKERS = {
    "tensorboard": ("tensorboard", "pip install 'tether[track]'"),
    "wandb": ("wandb", "pip install wandb"),
    "trackio": ("trackio", "pip install trackio"),
    "mlflow": ("mlflow", "pip install mlflow"),
}


def missing_tracker(names: list[str]) -> str | None:
    """Why the first tracker of `names` whose library is not installed cannot log (None when all are):
    accelerate would drop it without a word."""
    for name in names:
        module, install = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            return f"asks for {name}, which is not installed: {install}"
    return None


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
    layers: list[int] = ranged([])
    """Transformer blocks whose target modules get adapters, by index from 0 (negative: from the end, -1 the
    last block); empty: every block. Below the lowest adapted block nothing trains, so the backward pass
    stops there: adapters in the last 10 of SmolLM2-135M's 30 blocks cut an RM step on CPU by about 40 %."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train too; only none is accepted (peft trains biases in place, and the reference is the
    model with its adapters off, which must be the starting model)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each value the adapters cannot take (peft has the other biases)."""
        if self.layers and self.r == 0:
            yield "layers", (f"is {self.layers}, but lora.r is 0 (every weight trains, no adapters): set "
                             "lora.r > 0 or leave lora.layers empty")
        if self.bias != "none":  # peft trains the base's own bias tensors, which disable_adapter() keeps
            yield "bias", (f"must be none, got {self.bias!r}: it trains the base model's biases in place, so "
                           "the adapters-off reference would no longer be the starting model")


def schedule_problems(cfg) -> Iterator[tuple[str, str]]:
    """The rule between a stage's data and its train block that every stage shares: evaluations (at the end
    and every train.eval_every) run on data.test, so without it eval_every would do nothing."""
    if cfg.train.eval_every and cfg.data.test is None:
        yield "train.eval_every", (f"is {cfg.train.eval_every}, but data.test is not set, so nothing is "
                                   "evaluated: set data.test, or train.eval_every=0")
