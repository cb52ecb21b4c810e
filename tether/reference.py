"""The frozen reference model π_ref of DPO's implicit reward and of the RL stages' KL penalty.

    ref = load_reference(policy, cfg.policy, cfg.reference, dtype=cfg.dtype, copy=True)

One rule for every stage: π_ref is the model at `reference` when that names other weights than the policy's
start; otherwise it is the policy's starting weights — with LoRA the policy itself with its adapters off
(tether.lora.AdaptersOff: the base weights never change, so no second copy is held), else a frozen copy.
"""

from __future__ import annotations

import copy as _copy
from pathlib import Path

import torch

from tether import lora
from tether.model_files import load_causal_lm


def load_reference(
    policy,
    policy_path: str | Path,
    reference: str | Path | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
    copy: bool = False,
):
    """π_ref for `policy`, which started from the weights at `policy_path`: in eval mode, without gradients.

    - `policy` carries LoRA adapters and `reference` is none or `policy_path`: the policy with adapters off;
    - `reference` names other weights: the model loaded from there (`dtype`, `trust_remote_code`);
    - else the starting weights: with `copy` a deep copy of `policy` as it is now (cheaper than reading the
      files again, and right only before training has changed it), without it loaded again from
      `policy_path`.
    A loaded or copied model is moved to `device` (None: left where it is); the adapters-off view stays with
    the policy.
    """
    if lora.is_peft(policy) and lora.same_model(reference, str(policy_path)):
        return lora.AdaptersOff(policy)
    if reference or not copy:
        model = load_causal_lm(reference or policy_path, dtype, trust_remote_code)
    else:
        model = _copy.deepcopy(policy)
    model = model.eval().requires_grad_(False)
    return model if device is None else model.to(device)
