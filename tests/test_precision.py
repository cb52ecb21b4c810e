"""Precision for the hardware (tether.precision) on fake /proc/cpuinfo texts, and gradient checkpointing
(tether.activations): the layers are recomputed in the backward pass and the gradients do not change."""

import contextlib
import logging

import pytest
import torch
from accelerate.state import AcceleratorState
from group_helpers import captured_step, grpo_config, grpo_run
from plumbing_helpers import sft_config, sft_setup, tiny_model, tiny_tokenizer, write_jsonl, write_model_dir
from ppo_helpers import ppo_config, ppo_run, ppo_setup
from test_dpo import config, items_of, reversal_pairs

from tether import precision
from tether.activations import enable_gradient_checkpointing
from tether.config import LoRAConfig
from tether.data import pad_id
from tether.errors import TetherError
from tether.lora import add_adapters
from tether.reward_model import score_head
from tether.trainers import experience, ppo
from tether.trainers.base import Loop
from tether.trainers.dpo import (
    REF_CACHE,
    DPOTask,
    attach_reference,
    load_causal_lm,
    read_cache,
    reference_logprobs,
    train_dpo,
)
from tether.trainers.metrics import read_metrics
from tether.trainers.rl import RLRun

NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 amx_tile amx_bf16\n"


@pytest.fixture(autouse=True)
def fresh_notice(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())


def test_cpu_flags_are_read_from_the_flags_lines():
    assert precision.cpu_flags(NO_BF16) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}
    assert not precision.cpu_has_bf16(lambda: NO_BF16)
    assert precision.cpu_has_bf16(lambda: AVX512_BF16) and precision.cpu_has_bf16(lambda: AMX)
    assert not precision.cpu_has_bf16(lambda: "")


def test_bf16_without_units_falls_back_to_float32_with_one_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.precision"):
        assert precision.autocast_precision("bf16", "cpu", lambda: NO_BF16) == "no"
        assert precision.autocast_precision("bf16", "cpu", lambda: NO_BF16) == "no"
    notices = [r for r in caplog.records if "no bf16 units" in r.getMessage()]
    assert len(notices) == 1


def test_bf16_with_units_and_auto(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.precision"):
        assert precision.autocast_precision("bf16", "cpu", lambda: AVX512_BF16) == "bf16"
        assert precision.autocast_precision("bf16", "cpu", lambda: AMX) == "bf16"
        assert precision.autocast_precision("auto", "cpu", lambda: AMX) == "bf16"
        assert precision.autocast_precision("auto", "cpu", lambda: NO_BF16) == "no"
        assert precision.autocast_precision("no", "cpu", lambda: AMX) == "no"
    assert not caplog.records  # "auto" chooses silently


def test_the_loop_gets_float32_for_bf16_on_a_cpu_without_units(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "read_cpuinfo", lambda: NO_BF16)
    cfg = sft_config(sft_setup(tmp_path / "d"), mixed_precision="bf16", device="cpu").train
    loop = Loop(cfg, tmp_path / "run", tiny_model(), total_steps=1)
    assert loop.accelerator.mixed_precision == "no"


def _grads(model, checkpointing: bool, layers: int = 0):
    """Mean squared logit of a batch, backward; returns (grads of the trainable parameters, calls of each
    layer's input norm: 1 per forward, and one more when the backward pass recomputes the layer)."""
    calls = [0, 0]
    for i, layer in enumerate(model.get_base_model().model.layers):  # the norm: each layer's first module
        layer.input_layernorm.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
    if checkpointing:
        enable_gradient_checkpointing(model, layers)
    ids = torch.tensor([[2, 4, 5, 6, 7, 3], [2, 8, 9, 10, 3, 0]])
    model(input_ids=ids).logits.pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, calls


def _lora_model():
    torch.manual_seed(0)
    model = add_adapters(tiny_model().eval(), LoRAConfig(r=4, alpha=8))
    with torch.no_grad():  # move B off 0 so every adapter gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    return model


@pytest.mark.parametrize("layers, recomputed", [(0, [2, 2]), (1, [2, 1]), (5, [2, 2])])
def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(layers, recomputed):
    """In eval mode (how tether trains), with LoRA, on the 2-layer tiny model: without checkpointing each
    layer's norm runs once per forward+backward; with it, twice in each checkpointed layer (the
    recomputation): both layers with layers=0 (all) and with 5 (more than there are), only the first with
    layers=1. The gradients agree to float32 rounding."""
    g0, calls0 = _grads(_lora_model(), checkpointing=False)
    ckpt = _lora_model()
    g1, calls1 = _grads(ckpt, checkpointing=True, layers=layers)
    assert (calls0, calls1) == ([1, 1], recomputed)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-6, rtol=1e-5)
    assert not ckpt.get_base_model().model.layers[0].mlp.training  # sub-modules keep eval mode


def test_checkpoint_layers_needs_gradient_checkpointing(tmp_path):
    with pytest.raises(TetherError, match="train.checkpoint_layers needs gradient_checkpointing: true"):
        sft_config(sft_setup(tmp_path / "d"), checkpoint_layers=4)


# -------------------------------------------------------------------------------------- reference passes


@pytest.fixture
def cpu_bf16(monkeypatch):
    """bf16 autocast on this CPU: the hardware decision of tether.precision answers "has bf16 units" (CPU
    autocast computes in bf16 without them, only slowly). accelerate keeps its precision in a process-wide
    state, which is reset before and after so that the other tests get float32 again."""
    monkeypatch.setattr(precision, "has_bf16", lambda device, read=None: True)
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_ppo_reference_and_critic_run_under_the_policy_s_bf16_autocast(cpu_bf16, tmp_path, monkeypatch):
    """With mixed_precision bf16 the policy's forward runs under bf16 autocast (accelerate wraps it). At
    step 0 the reference is a copy of the policy, so computed under the same autocast its log-probs are the
    policy's bit for bit: log π_ref − log π_old = 0 exactly at every token, hence every KL estimate 0, and
    the evaluation's KL of policy samples from the base is exactly 0 too (while its reward source runs
    without autocast, as in training). The critic's values at sampling time (its head drawn at random, not
    the zeros it starts with) are those of a bf16-autocast forward, which differ from float32 ones, and
    every critic pass, in the update too, runs with autocast on."""
    paths = ppo_setup(tmp_path / "data")
    trainer = ppo_run(ppo_config(paths, mixed_precision="bf16", device="cpu"), tmp_path / "run")
    assert trainer.loop.accelerator.mixed_precision == "bf16"
    reward, reward_autocast = trainer.reward, []
    trainer.reward = lambda p, r: reward_autocast.append(torch.is_autocast_enabled("cpu")) or reward(p, r)
    assert trainer.evaluate()["instruments"]["kl_from_base"]["value"] == 0.0
    assert reward_autocast and not any(reward_autocast)  # the proxy reward is scored as in training

    under_autocast, chunks, values = [], [], experience.critic_values

    def spy(critic, rollout):
        under_autocast.append(torch.is_autocast_enabled("cpu"))
        out = values(critic, rollout)
        chunks.append((rollout, out))
        return out

    monkeypatch.setattr(experience, "critic_values", spy)  # the scoring passes
    monkeypatch.setattr(ppo, "critic_values", spy)  # the update's passes
    with torch.no_grad():  # the policy critic's head starts at 0 (values all 0): give it a random one
        score_head(trainer.critic).weight.normal_(generator=torch.Generator().manual_seed(0))
    exp, loss_fn = captured_step(trainer)
    assert torch.equal(exp.ref_logprobs, exp.old_logprobs) and torch.count_nonzero(exp.kl) == 0
    assert torch.equal(torch.cat([out for _, out in chunks]), exp.old_values)
    for rollout, out in chunks:  # each scoring chunk again, as it ran (packing lays out a chunk alone)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = values(trainer.critic, rollout)
        with torch.no_grad():
            fp32 = values(trainer.critic, rollout)
        assert torch.equal(out, bf16) and not torch.equal(bf16, fp32)
    RLRun.update(trainer, exp, loss_fn)
    assert len(under_autocast) > 4 and all(under_autocast)  # 4 scoring chunks, then the update's passes


def test_grpo_reference_runs_under_the_policy_s_bf16_autocast(cpu_bf16, tmp_path):
    """As for PPO: at step 0 the reference copy scored under the policy's bf16 autocast gives the policy's
    log-probs exactly, so GRPO's k3 estimate exp(ref − old) − (ref − old) − 1 is exactly 0 at every token."""
    paths = ppo_setup(tmp_path / "data")
    trainer = grpo_run(grpo_config(paths, mixed_precision="bf16", device="cpu"), tmp_path / "run")
    assert trainer.loop.accelerator.mixed_precision == "bf16" and trainer.ref is not None
    exp, loss_fn = captured_step(trainer)
    assert torch.equal(exp.ref_logprobs, exp.old_logprobs) and torch.count_nonzero(exp.kl) == 0


def test_the_rollout_samples_inside_one_bf16_autocast_block(cpu_bf16, tmp_path):
    """accelerate runs each forward call of the bf16 policy in its own autocast block, opened inside forward;
    the rollout opens one around the whole `sample` call, so a forward pre-hook (which runs before forward)
    sees autocast on at the prompt pass and at every decode step, and autocast's bf16 copies of the weights
    last the rollout. Without that block (Loop.autocast replaced by a no-op) the hook sees it off at every
    call, and the samples are the same token for token and log-prob for log-prob: the cached copy is the
    cast each call would make."""
    paths = ppo_setup(tmp_path / "data")
    trainer = grpo_run(grpo_config(paths, mixed_precision="bf16", device="cpu"), tmp_path / "run")
    assert trainer.loop.accelerator.mixed_precision == "bf16"
    seen = []
    trainer.loop.unwrapped.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    items = trainer.prompt_batch(0)
    one_block = trainer.rollout(items, seed=3)
    calls = len(seen)
    assert calls > 2 and all(seen)  # the prompt pass and the decode steps
    trainer.loop.autocast = contextlib.nullcontext
    per_call = trainer.rollout(items, seed=3)
    assert len(seen) == 2 * calls and not any(seen[calls:])
    assert torch.equal(one_block.response_ids, per_call.response_ids)
    assert torch.equal(one_block.logprobs, per_call.logprobs)


@pytest.mark.parametrize("precompute", [True, False])
def test_dpo_reference_log_probs_run_under_the_policy_s_bf16_autocast(cpu_bf16, tmp_path, precompute):
    """Before the first update π = π_ref, so with both scored under the same bf16 autocast every log-ratio
    log π(y|x) − log π_ref(y|x) is exactly 0: step 1's logged implicit rewards β·(log π − log π_ref) are 0.0
    for chosen and rejected when the reference is scored at the step (on the policy's own batch). Log-probs
    precomputed before the Loop exists are those of the same passes run by hand under bf16 autocast, and not
    the float32 ones (the step's batch packs the rows otherwise, so there they agree to rounding only).
    Evaluated before training (passes in the same batches as the precomputed ones), the held-out implicit
    rewards and the KL of policy samples from the reference are exactly 0 too."""
    paths = {
        "policy": write_model_dir(tmp_path / "policy"),
        "train": write_jsonl(tmp_path / "train.jsonl", reversal_pairs(16, seed=1)),
        "test": write_jsonl(tmp_path / "test.jsonl", reversal_pairs(8, seed=2)),
    }
    bf16 = [f"precompute_reference={str(precompute).lower()}", "train.mixed_precision=bf16",
            "train.device=cpu"]
    cfg = config(paths, *bf16, "train.max_steps=1", "train.save_every=0", "train.eval_every=0",
                 "data.test=null")
    train_dpo(cfg, tmp_path / "run")
    if precompute:  # computed before the Loop, in the file's order: the same passes again, by hand
        cache, _ = read_cache(tmp_path / "run" / REF_CACHE)
        reference, items = load_causal_lm(str(paths["policy"]), "float32"), items_of(paths, "train")
        passes = (reference, items, pad_id(tiny_tokenizer()), "sum", "cpu", cfg.train.micro_batch_size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = reference_logprobs(*passes)
        plain = reference_logprobs(*passes)
        assert torch.equal(cache["train"], autocast) and not torch.equal(autocast, plain)
    else:  # scored in the step, on the policy's batch: the same packed layout, so the same numbers
        first = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"][0]
        assert (first["chosen_reward"], first["rejected_reward"]) == (0.0, 0.0)

    AcceleratorState._reset_state(reset_partial_state=True)  # the next Loop's accelerator starts afresh
    cfg, tok, items = config(paths, *bf16), tiny_tokenizer(), items_of(paths, "test")
    reference = load_causal_lm(str(paths["policy"]), "float32")
    if precompute:
        attach_reference(cfg, tmp_path / "eval", reference, {"test": items}, pad_id(tok), "cpu")
    policy = load_causal_lm(str(paths["policy"]), "float32")
    loop = Loop(cfg.train, tmp_path / "eval", policy, tok, total_steps=1)
    out = DPOTask(cfg, tok, reference=reference).evaluate(loop, items)
    assert out["test_chosen_reward"] == 0.0 and out["test_rejected_reward"] == 0.0
    assert out["kl_from_reference"] == 0.0
