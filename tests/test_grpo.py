"""`tether grpo` on tiny random models: a group of equal rewards carries no gradient, advantages and the
token_sum aggregation by hand, the loss falls on a fixed batch, a short run moves the policy and writes
PPO's run directory, β = 0 needs no reference, weighted rewards, exact resume."""

import json

import pytest
import torch
from group_helpers import captured_step, fixed_reward, grpo_config, grpo_run, same_weights, weights
from ppo_helpers import ppo_setup
from transformers import AutoModelForCausalLM

from tether.instruments.evaluate import evaluate_judged
from tether.losses import grpo_advantages, grpo_loss
from tether.rewards import WeightedReward, gold, load_weighted_reward
from tether.trainers.group import equal_reward_share
from tether.trainers.grpo import train_grpo
from tether.trainers.metrics import read_metrics
from tether.trainers.rl_inputs import load_policy, load_prompt_items, read_prompts


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return ppo_setup(tmp_path_factory.mktemp("grpo"))


def test_equal_rewards_give_zero_advantage_and_zero_surrogate_gradient(setup, tmp_path):
    """Seven responses all scored 0.1: float32 averages seven 0.1s to 0.1 + 7.45e-9, which the group std
    scaling (÷ (0 + 1e-4)) would turn into advantages of 7.45e-5; they must be exactly 0. Then, with β = 0,
    the surrogate −min(ρ·0, clip(ρ)·0) is 0 at every token and its gradient is 0 for every parameter."""
    r = torch.full((7,), 0.1)
    assert float(r.mean()) != 0.1  # the rounding the zeroing guards against
    assert torch.equal(grpo_advantages(r, 7, "group"), torch.zeros(7))

    trainer = grpo_run(grpo_config(setup, "grpo.beta=0"), tmp_path / "run")
    assert trainer.ref is None  # β = 0: no reference model in training
    trainer.reward = fixed_reward([0.1] * 32)  # every group equal
    exp, loss_fn = captured_step(trainer)
    assert torch.equal(exp.advantages, torch.zeros(32))
    loss, _ = loss_fn(exp, None, 32)
    loss.backward()
    assert float(loss.detach()) == 0.0
    grads = [p.grad for p in trainer.policy.parameters()]
    assert all(g is not None for g in grads)  # the loss reaches every parameter (through ρ) ...
    assert all(torch.count_nonzero(g) == 0 for g in grads)  # ... with a gradient of exactly 0


def test_advantages_inside_a_trainer_step_by_hand(setup, tmp_path):
    """Two prompts × G = 4 with scores (1, 0, 0, 1) and (0, 0, 0, 0); β = 0.
    Group 1: mean 0.5, unbiased std = sqrt(4·0.25/3) = 0.5773503, A = ±0.5 / (0.5773503 + 1e-4) = ±0.8658754.
    Group 2: all equal, A = 0. Share of equal groups: 1/2. With scale=none: A = ±0.5.
    """
    scores = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    a = 0.5 / (0.5773503 + 1e-4)
    for scale, expected in (("group", a), ("none", 0.5)):
        cfg = grpo_config(setup, "grpo.beta=0", "rollout.batch_size=2", f"grpo.scale={scale}", batch_size=8)
        trainer = grpo_run(cfg, tmp_path / scale)
        trainer.reward = fixed_reward(scores)
        exp, loss_fn = captured_step(trainer)
        want = [expected, -expected, -expected, expected, 0, 0, 0, 0]
        assert exp.advantages.tolist() == pytest.approx(want, abs=1e-6)
        assert equal_reward_share(exp.scores, 4) == 0.5


def test_kl_in_reward_subtracts_beta_times_the_k1_sum(setup, tmp_path):
    """kl_in_reward, scale=none: each reward is score − β·Σ_t (log π_old − log π_ref), checked against
    log-probs from an independent forward pass (tether.rollout.score_responses); the advantage is the
    reward minus its group's mean. The policy is perturbed first so that the KL is not 0."""
    from tether.rollout import score_responses

    cfg = grpo_config(setup, "grpo.beta=0.5", "grpo.kl_in_reward=true", "grpo.scale=none")
    trainer = grpo_run(cfg, tmp_path / "run")
    with torch.no_grad():
        trainer.policy.lm_head.weight.add_(0.3 * torch.randn_like(trainer.policy.lm_head.weight))
    trainer.reward = fixed_reward([float(i % 3) for i in range(32)])
    exp, loss_fn = captured_step(trainer)
    with torch.no_grad():
        policy_lp = score_responses(trainer.policy, exp.rollout)
        kl = (policy_lp - score_responses(trainer.ref, exp.rollout)).sum(-1)
    rewards = exp.scores - 0.5 * kl
    assert kl.abs().max() > 0.01
    assert exp.rewards.tolist() == pytest.approx(rewards.tolist(), abs=1e-4)
    centred = rewards.view(-1, 4) - rewards.view(-1, 4).mean(1, keepdim=True)
    assert exp.advantages.tolist() == pytest.approx(centred.flatten().tolist(), abs=1e-4)


def test_token_sum_aggregation_by_hand():
    """Two responses, advantages (1, −2), ρ = 1 (π = π_old), β = 0, lengths 2 and 1:
    per-token losses −A: (−1, −1) and (2); token_sum = ((−1 − 1) + 2) / 2 = 0; sequence_mean = (−1 + 2) / 2
    = 0.5; token_mean = 0 / 3 = 0."""
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -2.0])
    out = {
        agg: float(grpo_loss(lp, lp, None, adv, mask, 0.0, 0.2, 0.2, agg)[0])
        for agg in ("token_sum", "sequence_mean", "token_mean")
    }
    assert out == pytest.approx({"token_sum": 0.0, "sequence_mean": 0.5, "token_mean": 0.0})


def test_the_loss_falls_on_a_fixed_batch(setup, tmp_path):
    """One iteration's experience, updated by the trainer's own update (2 steps), has a lower GRPO loss
    afterwards (β = 0.04, k3 in the loss), and the policy's weights moved."""
    trainer = grpo_run(grpo_config(setup, "grpo.beta=0.04", lr=3e-3), tmp_path / "run")
    trainer.reward = fixed_reward([float(i % 4 == 0) for i in range(32)])
    real_update = trainer.update
    exp, loss_fn = captured_step(trainer)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    with torch.no_grad():
        loss0, _ = loss_fn(exp)
    metrics = real_update(exp, loss_fn)
    with torch.no_grad():
        loss1, _ = loss_fn(exp)
    assert float(loss1) < float(loss0) - 1e-3
    assert any(not torch.equal(v, before[k]) for k, v in trainer.policy.state_dict().items())
    assert 0.0 <= metrics["clipfrac"] < 0.5


@pytest.fixture(scope="module")
def toy_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    train_grpo(grpo_config(setup), out)
    return out


def test_a_short_run_moves_the_policy_and_writes_the_run_directory(toy_run, setup):
    train = [r for r in read_metrics(toy_run) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    for key in ("reward", "kl", "equal_reward_groups", "clipfrac", "entropy", "response_length", "ref_kl"):
        assert key in train[-1]
    assert train[-1]["kl"] > 0 and train[-1]["gold"] is None  # not lab prompts
    final, start = weights(toy_run / "model"), weights(setup["policy"])
    assert any(not torch.equal(final[k], start[k]) for k in start)
    summary = json.loads((toy_run / "summary.json").read_text())
    assert summary["stage"] == "grpo" and summary["group_size"] == 4
    assert {"kl_from_base", "win_rate_vs_base"} <= set(summary["instruments"])
    assert (toy_run / "config.yaml").is_file()


def test_beta_zero_evaluates_against_a_freshly_loaded_base(setup, tmp_path):
    """β = 0 keeps no reference model, so the final evaluation loads the starting policy (cfg.policy) from
    disk: the run's kl_from_base is the KL of RUN/model from that directory, recomputed here from both files
    (`from_pretrained`) on the same evaluation samples (same seed). It is not 0: one iteration at lr 1e-2
    moved the policy (a base that were the trained policy itself would give exactly 0)."""
    cfg = grpo_config(setup, "grpo.beta=0", "iterations=1")
    out = tmp_path / "run"
    train_grpo(cfg, out)
    got = json.loads((out / "summary.json").read_text())["instruments"]["kl_from_base"]
    assert [r["kl"] for r in read_metrics(out) if r["kind"] == "train"] == [None]
    _, tokenizer = load_policy(cfg)
    prompts = read_prompts(cfg.data.test, gold_scored=False)
    items = load_prompt_items(cfg.data.test, prompts, tokenizer, cfg)[: cfg.eval.max_prompts]
    final = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    start = AutoModelForCausalLM.from_pretrained(setup["policy"]).eval()
    evaluation = evaluate_judged(final, start, tokenizer, items, proxy=lambda p, r: [0.0] * len(r),
                                 max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.seed)
    want = evaluation["instruments"]["kl_from_base"]
    assert want["value"] > 1e-3 and got["n"] == want["n"] == 8
    assert got["value"] == pytest.approx(want["value"], rel=1e-5)


def test_weighted_reward_sources():
    """2·count_a − 0.5·count_a = 1.5·count_a; a single gold source of weight 1 is `gold` itself."""
    reward = load_weighted_reward([("ppo_helpers:count_a", 2.0), ("ppo_helpers:count_a", -0.5)])
    assert isinstance(reward, WeightedReward)
    assert reward(["x", "y"], ["a a b", "c"]).tolist() == [3.0, 0.0]
    assert load_weighted_reward([("gold", 1.0), ("ppo_helpers:count_a", 0.0)]) is gold


def test_resume_after_a_crash_gives_identical_weights(setup, tmp_path, toy_run):
    """The toy run again, checkpointing every 2 iterations and crashing inside iteration 4's update (after
    an optimizer step that never reaches the disk); resumed, it ends with the uninterrupted run's weights."""
    out = tmp_path / "run"
    cfg = grpo_config(setup, save_every=2)
    trainer = grpo_run(cfg, out)
    real_update = trainer.update

    def crashing_update(exp, loss_fn):
        if trainer.iteration == 3:
            trainer.loop.optimizer_step()
            raise RuntimeError("killed")
        return real_update(exp, loss_fn)

    trainer.update = crashing_update
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    train_grpo(cfg, out, resume=True)
    assert same_weights(out / "model", toy_run / "model")
    assert [r["iteration"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_the_default_config_loads():
    from pathlib import Path

    from tether.config import GRPOConfig, load_config

    cfg = load_config(GRPOConfig, Path(__file__).resolve().parents[1] / "configs" / "grpo.yaml")
    assert (cfg.rollout.batch_size * cfg.grpo.group_size) % cfg.train.batch_size == 0
