"""`tether rloo` on tiny random models: leave-one-out advantages by hand inside a trainer step, the KL
penalty in the reward against an independent forward pass, REINFORCE's objective rising on a fixed batch,
a short run, exact resume (with the β controller's state)."""

import json

import pytest
import torch
from group_helpers import captured_step, fixed_reward, rloo_config, rloo_run, same_weights, weights
from ppo_helpers import ppo_setup

from tether.rollout import score_responses
from tether.trainers.metrics import read_metrics
from tether.trainers.rloo import train_rloo


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return ppo_setup(tmp_path_factory.mktemp("rloo"))


def test_leave_one_out_advantages_by_hand_inside_a_trainer_step(setup, tmp_path):
    """k = 4, two prompts, scores (1, 2, 3, 6) and (5, 5, 5, 5); the policy is the reference at the first
    step, so the KL penalty is 0 up to float rounding (π_old's log-probs are the sampler's, π_ref's come from
    a forward pass over the whole sequence) and the rewards are the scores.
    Group 1: A_1 = 1 − (2 + 3 + 6)/3 = −8/3, A_2 = 2 − (1 + 3 + 6)/3 = −4/3, A_3 = 3 − (1 + 2 + 6)/3 = 0,
    A_4 = 6 − (1 + 2 + 3)/3 = 4. Group 2: 5 − 5 = 0 each."""
    trainer = rloo_run(rloo_config(setup, "rollout.batch_size=2", batch_size=8), tmp_path / "run")
    trainer.reward = fixed_reward([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    exp, loss_fn = captured_step(trainer)
    assert exp.kl.abs().max() < 1e-5
    assert exp.rewards.tolist() == pytest.approx([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0], abs=1e-5)
    assert exp.advantages.tolist() == pytest.approx([-8 / 3, -4 / 3, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0], abs=1e-5)


def test_the_kl_penalty_is_in_the_reward(setup, tmp_path):
    """β = 0.1, k1: R_i = s_i − 0.1·Σ_t (log π(y_t) − log π_ref(y_t)), the log-probs from an independent
    forward pass (tether.rollout.score_responses) after perturbing the policy; A_i = R_i − mean of the other
    three = 4/3·(R_i − group mean)."""
    trainer = rloo_run(rloo_config(setup), tmp_path / "run")
    with torch.no_grad():
        trainer.policy.lm_head.weight.add_(0.3 * torch.randn_like(trainer.policy.lm_head.weight))
    trainer.reward = fixed_reward([float(i % 3) for i in range(32)])
    exp, loss_fn = captured_step(trainer)
    with torch.no_grad():
        policy_lp = score_responses(trainer.policy, exp.rollout)
        kl = (policy_lp - score_responses(trainer.ref, exp.rollout)).sum(-1)
    assert kl.abs().max() > 0.01
    rewards = exp.scores - 0.1 * kl
    assert exp.rewards.tolist() == pytest.approx(rewards.tolist(), abs=1e-4)
    g = rewards.view(-1, 4)
    loo = (4 / 3) * (g - g.mean(1, keepdim=True))
    assert exp.advantages.tolist() == pytest.approx(loo.flatten().tolist(), abs=1e-4)


def test_one_update_raises_the_reinforce_objective_on_a_fixed_batch(setup, tmp_path):
    """J = mean_i A_i·log π(y_i) (the sequence log-prob) on the iteration's responses rises after one
    on-policy step (train.batch_size = all 32 responses: ρ = 1, nothing clips, so the step follows ∇J)."""
    trainer = rloo_run(rloo_config(setup, batch_size=32, micro_batch_size=16, lr=3e-3), tmp_path / "run")
    trainer.reward = fixed_reward([float(i % 4 == 1) for i in range(32)])
    real_update = trainer.update
    exp, loss_fn = captured_step(trainer)

    def objective():
        with torch.no_grad():
            return float((exp.advantages * score_responses(trainer.policy, exp.rollout).sum(-1)).mean())

    before = objective()
    metrics = real_update(exp, loss_fn)
    assert metrics["clipfrac"] == 0.0 and metrics["epochs"] == 1
    assert objective() > before + 1e-3


@pytest.fixture(scope="module")
def toy_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    train_rloo(rloo_config(setup, "kl.adaptive=true", "kl.target=0.5"), out)
    return out


def test_a_short_run_moves_the_policy_and_writes_the_run_directory(toy_run, setup):
    train = [r for r in read_metrics(toy_run) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    for key in ("reward", "kl", "beta", "equal_reward_groups", "clipfrac", "entropy", "response_length"):
        assert key in train[-1]
    assert train[0]["beta"] == 0.1 and train[-1]["beta"] != 0.1  # the adaptive controller moved it
    final, start = weights(toy_run / "model"), weights(setup["policy"])
    assert any(not torch.equal(final[k], start[k]) for k in start)
    summary = json.loads((toy_run / "summary.json").read_text())
    assert summary["stage"] == "rloo" and summary["k"] == 4
    assert {"kl_from_base", "win_rate_vs_base"} <= set(summary["instruments"])


def test_resume_after_a_crash_gives_identical_weights(setup, tmp_path, toy_run):
    """As the toy run, with checkpoints every 2 iterations and a crash inside iteration 4's update: the
    resumed run (β controller restored) ends with the uninterrupted run's weights."""
    out = tmp_path / "run"
    cfg = rloo_config(setup, "kl.adaptive=true", "kl.target=0.5", save_every=2)
    trainer = rloo_run(cfg, out)
    real_update = trainer.update

    def crashing_update(exp, loss_fn):
        if trainer.iteration == 3:
            trainer.loop.optimizer_step()
            raise RuntimeError("killed")
        return real_update(exp, loss_fn)

    trainer.update = crashing_update
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    train_rloo(cfg, out, resume=True)
    assert same_weights(out / "model", toy_run / "model")
    betas = [r["beta"] for r in read_metrics(out) if r["kind"] == "train"]
    assert betas == [r["beta"] for r in read_metrics(toy_run) if r["kind"] == "train"]


def test_beta_zero_needs_no_reference(setup, tmp_path):
    trainer = rloo_run(rloo_config(setup, "kl.beta=0"), tmp_path / "run")
    assert trainer.ref is None
    exp, loss_fn = captured_step(trainer)
    assert exp.kl is None and torch.equal(exp.rewards, exp.scores)


def test_the_default_config_loads():
    from pathlib import Path

    from tether.config import RLOOConfig, load_config

    cfg = load_config(RLOOConfig, Path(__file__).resolve().parents[1] / "configs" / "rloo.yaml")
    assert (cfg.rollout.batch_size * cfg.rloo.k) % cfg.train.batch_size == 0
