"""LoRA adapters (peft) for every trainer: wrap, reference view, save, load, merge.

    model = add_adapters(model, cfg.lora, "causal", cfg.policy)   # base frozen, adapters trainable
    ref = AdaptersOff(model)          # π_ref: the same weights with the adapters switched off
    save_lora_final(model, tokenizer, run_dir)   # RUN/model merged (HF-loadable), RUN/adapter the adapter

LoRA (Hu et al. 2021, eq. 3) replaces the update of a frozen weight W by (alpha/r)·B A with A (r × in) and
B (out × r), B starting at 0, so the adapted model starts equal to the base. Because the base weights never
change, the reference model of DPO and of the PPO/GRPO/RLOO KL penalty is the adapted model itself with its
adapters switched off (`AdaptersOff`): no second copy of the weights is held.

A reward model (task "seq_cls") also trains its new scalar `score` head in full (peft's modules_to_save).

Files: checkpoints hold the adapter only (adapter_model.safetensors, adapter_config.json; the base is
re-read from the configured model on --resume). RUN/model holds the merged weights, so the next stage (and
`from_pretrained`) loads it like any model; RUN/adapter holds the adapter and tokenizer, which `tether merge`
(tether.lora_merge) turns back into a full model over the base named in adapter_config.json.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from pathlib import Path

import torch

from tether.config import validate
from tether.errors import TetherError
from tether.quiet import quiet_peft, quiet_transformers

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD = "score"  # the reward model's head (tether.reward_model), trained in full
_TASKS = {"causal": "CAUSAL_LM", "seq_cls": "SEQ_CLS"}


def enabled(lora_cfg) -> bool:
    """Whether a LoRAConfig asks for adapters (r > 0)."""
    return lora_cfg is not None and lora_cfg.r > 0


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def unwrap(model):
    """The Hugging Face model inside a PeftModel (adapters still active: peft injects them in place) or
    inside an `AdaptersOff` view; any other model as it is."""
    if isinstance(model, AdaptersOff):
        model = model.model
    return model.get_base_model() if is_peft(model) else model


def check_lora(lora_cfg) -> None:
    """LoRAConfig's rules (r >= 0, alpha > 0, 0 <= dropout < 1, target modules, bias none) for a config built
    in Python; one from load_config has passed them."""
    validate(lora_cfg, "lora.")


def add_adapters(model, lora_cfg, task: str = "causal", base_path: str | Path | None = None):
    """`model` (a transformers model) with LoRA adapters: a PeftModel whose only trainable parameters are
    the adapters (and, for task "seq_cls", the score head). Adapter A is drawn from torch's global RNG
    (seed first); B is 0, so outputs are unchanged until the first update. base_path is recorded in
    adapter_config.json (absolute when it is a local directory) for `tether merge`."""
    from peft import LoraConfig, get_peft_model

    check_lora(lora_cfg)
    targets = "all-linear" if lora_cfg.target_modules == ["all-linear"] else list(lora_cfg.target_modules)
    layers = block_indices(model, lora_cfg.layers) if lora_cfg.layers else None
    if layers is not None and targets == "all-linear":  # peft takes a block list only with named modules
        targets = block_linear_names(model)
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        bias=lora_cfg.bias,
        task_type=_TASKS[task],
        modules_to_save=[HEAD] if task == "seq_cls" else None,
    )
    try:
        with quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise TetherError(f"lora: {e}") from None
    peft_model.train(model.training)  # a new module starts in train mode; keep the model's (eval: no dropout)
    if base_path is not None:
        from tether.model_files import resolve_model

        base_dir = resolve_model(base_path).resolve()  # a .gguf: the directory it was converted into
        peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    if lora_cfg.dropout > 0:
        for module in peft_model.modules():
            if isinstance(module, torch.nn.Dropout):
                train_while_grad(module)
    return peft_model


def block_indices(model, layers: list[int]) -> list[int]:
    """lora.layers as peft's layers_to_transform: sorted block indices from 0, a negative one counted from
    the model's last block; an index the model does not have is a TetherError."""
    n = model.config.num_hidden_layers
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise TetherError(f"lora.layers: {bad[0]} is not a block of this model, which has {n} "
                          f"(0 to {n - 1}, or -{n} to -1 from the end)")
    return sorted({i % n for i in layers})


def block_linear_names(model) -> list[str]:
    """The last name component of every linear layer inside the numbered transformer blocks (q_proj, ...,
    down_proj for Llama; c_attn, c_proj, c_fc for GPT-2's Conv1D): what 'all-linear' adapts, spelled out."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear | Conv1D)
                   and any(part.isdigit() for part in name.split("."))})


def train_while_grad(module: torch.nn.Module) -> None:
    """Give `module` the training flag exactly in forward passes that record gradients (tether trains with
    models in eval mode so that dropout stays off in sampling, scoring and evaluation)."""

    def hook(mod, args):
        mod.training = torch.is_grad_enabled()

    module.register_forward_pre_hook(hook)


# ------------------------------------------------------------------------------------------------ reference


class AdaptersOff:
    """The frozen reference π_ref of a LoRA run: calls go to the adapted model with its adapters disabled.

    It holds no weights of its own; mode, device and gradient switches are no-ops (they would otherwise act
    on the policy being trained).
    """

    def __init__(self, model):
        if not is_peft(model):
            raise TypeError("AdaptersOff needs a peft model")
        self.model = model

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def parameters(self):
        return self.model.parameters()

    @property
    def training(self) -> bool:
        return False

    @property
    def config(self):
        return self.model.config

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def requires_grad_(self, requires_grad: bool = True):
        return self


def same_model(reference: str | None, policy: str) -> bool:
    """Whether a configured reference is the policy's own starting weights (none, or the same path)."""
    if reference is None:
        return True
    return Path(reference).resolve() == Path(policy).resolve()


# ------------------------------------------------------------------------------------------------ files


def save_adapter(model, directory: Path, state_dict=None) -> None:
    """The adapter (and a seq_cls head) as adapter_model.safetensors + adapter_config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    with quiet_peft():
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
    readme = directory / "README.md"  # peft's model-card template: nothing of ours in it
    if readme.is_file():
        readme.unlink()


def load_adapter_weights(model, directory: Path) -> None:
    """Load the adapter saved by `save_adapter` into the PeftModel `model` in place (exact values)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise TetherError(f"{directory}: no {ADAPTER_WEIGHTS} (was this checkpoint written without LoRA?)")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    if result.unexpected_keys:
        raise TetherError(f"{path}: adapter weights that this model has no place for, e.g. "
                          f"{result.unexpected_keys[0]} (another lora.r or target_modules?)")


@contextlib.contextmanager
def merged_in_place(model):
    """Inside the block the adapters of the peft `model` are merged into its base weights (W + (alpha/r)·B A),
    so a forward pass runs the base layers alone; on leaving, the base weights get back their exact saved
    values (peft's unmerge subtracts the product again, which is exact only up to float rounding and would
    let the frozen reference drift over many merges). Any other model passes through unchanged.

    For sampling: a decode step of SmolLM2-135M with r-16 adapters on every linear layer spends about a
    quarter of its time in the adapters' small matmuls and peft's per-layer bookkeeping (measured at batch
    8 on 2 CPU cores: 36.8 against 47.8 tokens/s merged). Holds a copy of the adapted layers' base weights
    (~0.4 GB for SmolLM2-135M) while inside. No gradients may be taken inside the block."""
    if not is_peft(model):
        yield model
        return
    from peft.tuners.lora import LoraLayer

    saved = [(m.get_base_layer().weight, m.get_base_layer().weight.detach().clone())
             for m in model.modules() if isinstance(m, LoraLayer)]
    with quiet_peft():
        model.merge_adapter()
    try:
        yield model
    finally:
        with quiet_peft():
            model.unmerge_adapter()
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def merged_copy(model):
    """A plain transformers model with W + (alpha/r)·B A in every adapted layer; `model` is unchanged."""
    with quiet_peft():
        return copy.deepcopy(model).merge_and_unload()


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def write_merged(model, tokenizer, out: Path) -> Path:
    """Merged weights (safetensors) + tokenizer in `out`, written to a temporary directory and renamed."""
    out = Path(out)
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    with quiet_transformers():
        merged_copy(model).save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, out)
    return out


def save_lora_final(model, tokenizer, run_dir: Path) -> Path:
    """RUN/adapter (adapter + tokenizer) and RUN/model (merged weights + tokenizer), each atomically."""
    tmp = run_dir / ".tmp-adapter"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_adapter(model, tmp)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, run_dir / "adapter")
    return write_merged(model, tokenizer, run_dir / "model")
