"""LoRA in the trainers (tether.lora) on tiny random Llamas: the base weights stay bit-identical, the adapters
move, the reference is the policy with its adapters off (log-probs equal to a freshly loaded base model's),
no second model is loaded for it, RUN/model is the merged model (base + (alpha/r)·B·A computed by hand from
RUN/adapter), the reward model's head trains, and a resumed LoRA run ends bit-identical."""

import dataclasses
import json
import shutil

import pytest
import torch
from group_helpers import rloo_config
from lora_helpers import LORA, base_parameters_unchanged, captured, merged_is_base_plus_adapter  # noqa: F401
from plumbing_helpers import sft_config, sft_setup, write_jsonl, write_model_dir
from ppo_helpers import ppo_config, ppo_setup
from safetensors.torch import load_file
from test_dpo import overrides as dpo_overrides
from test_dpo import reversal_pairs
from transformers import AutoModelForCausalLM

from tether import lora, reference
from tether.config import (
    DPOConfig,
    GRPOConfig,
    LoRAConfig,
    PPOConfig,
    RLOOConfig,
    RMConfig,
    SFTConfig,
    load_config,
)
from tether.errors import TetherError
from tether.preferences import collate_pairs
from tether.trainers import dpo, rl
from tether.trainers.dpo import load_dpo_pairs, reference_logprobs, train_dpo
from tether.trainers.ppo import train_ppo
from tether.trainers.rloo import train_rloo
from tether.trainers.rm import train_rm
from tether.trainers.sft import train_sft


def with_lora(cfg):
    """A helper's config with LoRA r = 4, alpha = 8 (as lora_helpers.LORA)."""
    return dataclasses.replace(cfg, lora=LoRAConfig(r=4, alpha=8))


@pytest.fixture(scope="module")
def dpo_paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-dpo")
    return {
        "policy": write_model_dir(tmp / "policy", seed=0),
        "other": write_model_dir(tmp / "other", seed=1),
        "train": write_jsonl(tmp / "train.jsonl", reversal_pairs(16, seed=1)),
        "test": write_jsonl(tmp / "test.jsonl", reversal_pairs(8, seed=2)),
    }


def test_sft_with_lora_trains_only_the_adapters_and_saves_the_merged_model(tmp_path, captured):  # noqa: F811
    paths = sft_setup(tmp_path / "data")
    out = train_sft(with_lora(sft_config(paths, max_steps=4, save_every=2)), tmp_path / "run")
    (model,) = captured
    base_parameters_unchanged(model, paths["model"])
    merged_is_base_plus_adapter(paths["model"], out)
    step = out / "checkpoints" / "step-4"
    assert (step / lora.ADAPTER_WEIGHTS).is_file() and not (step / "model.safetensors").exists()
    # the merged directory is a plain causal LM whose logits are the adapted model's
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    ids = torch.tensor([[2, 4, 5, 6, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_dpo_with_lora_uses_the_policy_with_adapters_off_as_reference(dpo_paths, tmp_path, captured,  # noqa: F811
                                                                       monkeypatch):
    loads = []
    load = dpo.load_causal_lm
    for module in (dpo, reference):  # the policy's load and any reference's (tether.reference)
        monkeypatch.setattr(module, "load_causal_lm", lambda *a: loads.append(a) or load(*a))
    cfg = load_config(DPOConfig, None, [*dpo_overrides(dpo_paths, max_steps=4, save_every=2), *LORA])
    out = train_dpo(cfg, tmp_path / "run")
    assert len(loads) == 1  # the policy only: no copy of it as the reference
    (model,) = captured
    base_parameters_unchanged(model, dpo_paths["policy"])
    merged_is_base_plus_adapter(dpo_paths["policy"], out)

    # after training (adapters moved), the adapters-off view gives exactly the base model's logits
    base = AutoModelForCausalLM.from_pretrained(dpo_paths["policy"]).eval()
    items = load_dpo_pairs(dpo_paths["train"], _tokenizer(dpo_paths), cfg.data)
    batch = collate_pairs([x.tokens for x in items[:4]], 0, side="right")
    with torch.no_grad():
        off = lora.AdaptersOff(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ref = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        on = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.equal(off.logits, ref.logits) and not torch.allclose(on.logits, ref.logits)
    # the cached reference log-probs are the untouched base model's
    cache = torch.load(out / dpo.REF_CACHE, weights_only=True)
    expected = reference_logprobs(base, items, 0, "sum", "cpu", 8)
    assert torch.equal(cache["train"], expected)
    assert "kl_from_reference" in json.loads((out / "summary.json").read_text())


def test_dpo_with_lora_and_another_reference_loads_that_reference(dpo_paths, tmp_path, monkeypatch):
    loads = []
    load = dpo.load_causal_lm
    for module in (dpo, reference):  # the policy's load, then the reference's (tether.reference)
        monkeypatch.setattr(module, "load_causal_lm", lambda *a: loads.append(a[0]) or load(*a))
    more = [f"reference={dpo_paths['other']}", "eval.kl_prompts=0"]
    cfg = load_config(DPOConfig, None, [*dpo_overrides(dpo_paths, max_steps=1, save_every=0), *LORA, *more])
    train_dpo(cfg, tmp_path / "run")
    assert [str(p) for p in loads] == [str(dpo_paths["policy"]), str(dpo_paths["other"])]


def _tokenizer(paths):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(paths["policy"])


def test_rloo_with_lora_keeps_the_base_and_loads_no_reference_copy(tmp_path, captured, monkeypatch):  # noqa: F811
    paths = ppo_setup(tmp_path / "data")
    loads = []
    load = rl.load_policy
    monkeypatch.setattr(rl, "load_policy", lambda cfg: loads.append(cfg.policy) or load(cfg))
    load_lm = reference.load_causal_lm  # where a reference or evaluation base would be loaded
    monkeypatch.setattr(reference, "load_causal_lm", lambda *a: loads.append(a[0]) or load_lm(*a))
    refs = []
    init = rl.RLRun.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        refs.append(self.ref)

    monkeypatch.setattr(rl.RLRun, "__init__", spy)
    out = train_rloo(with_lora(rloo_config(paths, "iterations=2")), tmp_path / "run")
    assert len(loads) == 1  # neither the KL reference nor the evaluation's base is a second copy
    assert isinstance(refs[0], lora.AdaptersOff)
    (model,) = captured
    base_parameters_unchanged(model, paths["policy"])
    merged_is_base_plus_adapter(paths["policy"], out)


def test_reward_model_with_lora_trains_its_head(tmp_path, captured):  # noqa: F811
    sft = write_model_dir(tmp_path / "sft")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", reversal_pairs(16, seed=3))
    over = [f"model={sft}", f"data.train={pairs}", "data.max_length=16", "train.lr=1e-2",
            "train.batch_size=8", "train.micro_batch_size=8", "train.max_steps=3", "train.progress=false",
            *LORA]
    out = train_rm(load_config(RMConfig, None, over), tmp_path / "run")
    (model,) = captured
    base_parameters_unchanged(model, sft)
    head = model.get_base_model().score
    start, trained = head.original_module.weight, head.modules_to_save["default"].weight
    assert not torch.equal(start, trained)
    saved = load_file(out / "model" / "model.safetensors")
    assert torch.equal(saved["score.weight"], trained.detach())  # the merged RM carries the trained head
    from tether.reward_model import load_reward_model

    load_reward_model(out / "model")  # loadable as a reward model by the next stage


def test_lora_resume_continues_exactly(tmp_path):
    """4 steps straight vs 2 steps, then --resume from the step-2 checkpoint to step 4: the same adapter."""
    paths = sft_setup(tmp_path / "data")
    cfg = with_lora(sft_config(paths, max_steps=4, save_every=2, keep_last=3))
    whole = train_sft(cfg, tmp_path / "whole")
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    for name in ("model", "adapter", "summary.json"):
        shutil.rmtree(part / name) if (part / name).is_dir() else (part / name).unlink()
    shutil.rmtree(part / "checkpoints" / "step-4")
    train_sft(cfg, part, resume=True)
    a = load_file(whole / "adapter" / lora.ADAPTER_WEIGHTS)
    b = load_file(part / "adapter" / lora.ADAPTER_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(tmp_path / "whole" / "checkpoints" / "step-2" / lora.ADAPTER_WEIGHTS)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # steps 3 and 4 did change the adapter


def test_ppo_with_lora_trains_critic_adapters_and_head(tmp_path, captured, monkeypatch):  # noqa: F811
    """The critic (here from the SFT trunk) gets its own adapters and a fully trained head; its checkpoint
    in value/ holds just that adapter; the policy's base is untouched."""
    paths = ppo_setup(tmp_path / "data")
    critics = []
    init = rl.RLRun.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        critics.append(self.critic)

    monkeypatch.setattr(rl.RLRun, "__init__", spy)
    cfg = with_lora(ppo_config(paths, "iterations=2", "critic=policy", save_every=2))
    out = train_ppo(cfg, tmp_path / "run")
    (model,) = captured
    base_parameters_unchanged(model, paths["policy"])
    merged_is_base_plus_adapter(paths["policy"], out)
    (critic,) = critics
    assert lora.is_peft(critic)
    head = critic.get_base_model().score
    assert torch.equal(head.original_module.weight, torch.zeros_like(head.original_module.weight))
    assert head.modules_to_save["default"].weight.abs().max() > 0  # the head trained away from 0
    value = out / "checkpoints" / "step-8" / "value"
    assert (value / lora.ADAPTER_WEIGHTS).is_file() and not (value / "model.safetensors").exists()


@pytest.mark.parametrize("cls", [PPOConfig, GRPOConfig, RLOOConfig])
def test_rl_stages_refuse_lora_dropout_when_the_config_loads(cls):
    """π_old is scored without gradients, where tether's LoRA dropout is off, and π is trained with it on,
    so with lora.dropout > 0 the first minibatch's ratio π/π_old would be dropout noise instead of 1: the
    RL configs refuse it at load, in one line; 0 loads, and the supervised stages and DPO take dropout."""
    base = ["policy=sft", "data.train=prompts.jsonl", "lora.r=4"]
    with pytest.raises(TetherError, match=r"lora\.dropout") as e:
        load_config(cls, None, [*base, "lora.dropout=0.05"])
    assert "\n" not in str(e.value)
    assert load_config(cls, None, [*base, "lora.dropout=0"]).lora.dropout == 0.0
    dropout = ["data.train=p.jsonl", "lora.r=4", "lora.dropout=0.05"]
    dpo_cfg = load_config(DPOConfig, None, ["policy=sft", *dropout])
    sft_cfg = load_config(SFTConfig, None, ["model=sft", *dropout])
    assert dpo_cfg.lora.dropout == sft_cfg.lora.dropout == 0.05
