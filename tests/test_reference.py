"""tether.reference.load_reference: the frozen π_ref of DPO and the RL stages, in each of its cases.

Each case is checked on the weights or outputs the reference must equal (the files it should come from, or
the policy as it was), not on its type: two tiny models with different seeds tell them apart.
"""

from __future__ import annotations

import pytest
import torch
from plumbing_helpers import write_model_dir
from safetensors.torch import load_file

from tether import lora
from tether.config import LoRAConfig
from tether.model_files import load_causal_lm
from tether.reference import load_reference

IDS = torch.tensor([[2, 5, 6, 7, 8]])  # <bos> b c d e


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    return write_model_dir(root / "policy", seed=0), write_model_dir(root / "other", seed=1)


def files(d) -> dict[str, torch.Tensor]:
    return load_file(d / "model.safetensors")


def equals_files(model, d) -> bool:
    """Every tensor in `d`'s safetensors equals the model's (tied weights are saved once)."""
    state = model.state_dict()
    return all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in files(d).items())


def frozen(model) -> bool:
    return not model.training and not any(p.requires_grad for p in model.parameters())


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def with_adapters(d):
    """A LoRA policy over `d` whose adapters change its outputs (B is 0 at the start: set it to 0.5)."""
    model = lora.add_adapters(load_causal_lm(d), LoRAConfig(r=2, alpha=4.0), "causal", d)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    return model


def test_a_different_reference_is_loaded_from_its_directory(dirs):
    policy_dir, other = dirs
    assert not equals_files(load_causal_lm(policy_dir), other)  # the two models do differ
    for policy in (load_causal_lm(policy_dir), with_adapters(policy_dir)):  # with LoRA too: other weights
        for copy in (False, True):  # RL asks for a copy of the policy unless a reference is named
            ref = load_reference(policy, policy_dir, other, copy=copy)
            assert equals_files(ref, other) and frozen(ref)
    bf16 = load_reference(load_causal_lm(policy_dir), policy_dir, other, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16 and equals_files(bf16, other)


@pytest.mark.parametrize("same", [None, "path"])
def test_with_lora_the_reference_is_the_policy_with_its_adapters_off(dirs, same):
    """Same outputs as the base model loaded alone, while the policy itself keeps its adapters (its outputs
    differ from the base's before and after)."""
    policy_dir, _ = dirs
    policy = with_adapters(policy_dir)
    adapted, base = logits(policy), logits(load_causal_lm(policy_dir))
    assert not torch.allclose(adapted, base, atol=1e-3)
    ref = load_reference(policy, policy_dir, policy_dir if same else None)
    torch.testing.assert_close(logits(ref), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(policy), adapted, rtol=0, atol=0)
    # no second copy: the reference's tensors are the policy's own, and its adapters still train
    assert [p.data_ptr() for p in ref.parameters()] == [p.data_ptr() for p in policy.parameters()]
    assert any(p.requires_grad for p in policy.parameters()) and not ref.training


def test_copy_is_the_policy_as_it_is_now_and_stays_so(dirs):
    """copy=True: the weights of the policy in memory (changed here after loading, so not the files'), and a
    copy: a later change of the policy does not reach it, and the policy keeps its gradients."""
    policy_dir, _ = dirs
    policy = load_causal_lm(policy_dir)
    w = policy.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w.add_(0.25)
    now = {k: v.clone() for k, v in policy.state_dict().items()}
    ref = load_reference(policy, policy_dir, copy=True)
    assert frozen(ref) and all(p.requires_grad for p in policy.parameters())
    with torch.no_grad():
        w.add_(1.0)
    state = ref.state_dict()
    assert state.keys() == now.keys() and all(torch.equal(state[k], now[k]) for k in now)
    assert not equals_files(ref, policy_dir)


def test_without_copy_the_starting_weights_are_read_again(dirs):
    """copy=False (a policy that training has changed): the files at policy_path, not the policy."""
    policy_dir, _ = dirs
    policy = load_causal_lm(policy_dir)
    with torch.no_grad():
        policy.model.layers[0].mlp.up_proj.weight.add_(0.25)
    ref = load_reference(policy, policy_dir, device="cpu")
    assert equals_files(ref, policy_dir) and frozen(ref)
    assert not equals_files(policy, policy_dir)
