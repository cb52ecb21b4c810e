"""`tether ppo` on tiny random models: one iteration's numbers by hand, training on a toy reward, the frozen
reference, a reward-model reward and critic, resume after a crash, stop strings, bad input."""

import argparse
import dataclasses
import json
import math
import signal
from pathlib import Path

import pytest
import torch
from plumbing_helpers import tiny_tokenizer, word_id, write_jsonl
from ppo_helpers import ppo_config, ppo_overrides, ppo_run, ppo_setup
from safetensors.torch import load_file

from tether.commands import ppo as ppo_command
from tether.config import PPOAlgoConfig
from tether.errors import DataError, TetherError
from tether.losses import masked_mean, token_kl
from tether.losses._reduce import masked_var
from tether.rewards import RunningMoments, load_reward, penalize_unended
from tether.rollout import Rollout, cut_at_stop
from tether.trainers.base import TrainingInterrupted
from tether.trainers.experience import policy_logits
from tether.trainers.metrics import read_metrics
from tether.trainers.ppo import (
    Experience,
    advantages_and_returns,
    make_experience,
    minibatch_loss,
    ppo_objective,
    train_ppo,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return ppo_setup(tmp_path_factory.mktemp("ppo"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _rollout(B: int, R: int) -> Rollout:
    ids = torch.full((B, R), 4)
    return Rollout(
        torch.full((B, 1), 5),
        torch.ones(B, 1, dtype=torch.long),
        ids,
        torch.ones(B, R, dtype=torch.long),
        torch.zeros(B, R),
        torch.ones(B, dtype=torch.bool),
        1.0,
    )


def test_one_iteration_by_hand():
    """One response of 2 tokens; k1 penalty, β = 0.1, γ = 1, λ = 0.95, ε = 0.2, value ε = 0.2, no whitening.

    Sampling time: log π_old = (−1.0, −0.5), log π_ref = (−1.2, −0.4), V = (0.5, 0.3), score 1.0.
      kl = log π_old − log π_ref = (0.2, −0.1)
      rewards = (−0.1·0.2, −0.1·(−0.1) + 1.0) = (−0.02, 1.01)
      δ₁ = 1.01 + 0 − 0.3 = 0.71                 A₁ = 0.71
      δ₀ = −0.02 + 0.3 − 0.5 = −0.22             A₀ = −0.22 + 0.95·0.71 = 0.4545
      returns = A + V = (0.9545, 1.01)
    Update: log π = (−0.7, −0.6), so ρ = (e^0.3, e^−0.1) = (1.349859, 0.904837).
      token 0: max(−0.4545·1.349859, −0.4545·1.2) = −0.5454 (clipped)
      token 1: −0.71·0.904837 = −0.642435 (inside the clip range)
      policy loss = (−0.5454 − 0.642435)/2 = −0.593917, clipfrac 0.5, approx_kl = ½·(0.09 + 0.01)/2 = 0.025
    New V = (0.8, 0.2): token 0 clips to 0.5 + 0.2 = 0.7: max((0.8 − 0.9545)², (0.7 − 0.9545)²) = 0.06477025;
      token 1 moves 0.1 < 0.2: (0.2 − 1.01)² = 0.6561; value loss = ½·(0.06477025 + 0.6561)/2 = 0.18021756
    Entropy (1.0, 0.5), mean 0.75; loss = −0.593917 + 0.1·0.180218 − 0.01·0.75 = −0.583396.
    With whitening the two advantages become (−1, +1) (two values: ±1 std around their mean).
    """
    cfg = PPOAlgoConfig(
        clip_eps=0.2,
        value_clip_eps=0.2,
        vf_coef=0.1,
        ent_coef=0.01,
        gamma=1.0,
        lam=0.95,
        whiten_advantages=False,
    )
    old, ref = torch.tensor([[-1.0, -0.5]]), torch.tensor([[-1.2, -0.4]])
    values, mask, score = torch.tensor([[0.5, 0.3]]), torch.ones(1, 2), torch.tensor([1.0])
    kl = old - ref
    rewards, adv, ret, scale = advantages_and_returns(kl, values, score, mask, beta=0.1, cfg=cfg)
    assert scale == 1.0  # not whitened
    assert rewards[0].tolist() == pytest.approx([-0.02, 1.01])
    assert adv[0].tolist() == pytest.approx([0.4545, 0.71])
    assert ret[0].tolist() == pytest.approx([0.9545, 1.01])
    exp = Experience(_rollout(1, 2), score, old, ref, values, kl, rewards, adv, ret)
    loss, m = ppo_objective(
        torch.tensor([[-0.7, -0.6]]), torch.tensor([[0.8, 0.2]]), torch.tensor([[1.0, 0.5]]), exp, cfg
    )
    assert float(m["policy_loss"]) == pytest.approx(-0.593917, abs=1e-6)
    assert float(m["value_loss"]) == pytest.approx(0.18021756, abs=1e-6)
    assert (float(m["clipfrac"]), float(m["approx_kl"]), float(m["entropy"])) == pytest.approx(
        (0.5, 0.025, 0.75)
    )
    assert float(loss) == pytest.approx(-0.583396, abs=1e-6)

    cfg.whiten_advantages = True
    _, white, _, scale = advantages_and_returns(kl, values, score, mask, beta=0.1, cfg=cfg)
    assert white[0].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)
    # two advantages 0.4545 and 0.71: population std (0.71 − 0.4545) / 2 = 0.12775, the whitening scale 1/σ
    assert scale == pytest.approx(1 / 0.12775, rel=1e-4)


def test_the_ratio_is_one_before_the_first_update(setup):
    """Sampling log-probs, the scoring pass and the update's forward pass agree: ρ = 1, nothing clipped."""
    trainer = ppo_run(ppo_config(setup), setup["policy"].parent / "ratio-run")
    items = trainer.prompt_batch(0)
    rollout = trainer.rollout(items, seed=0)
    exp = make_experience(
        trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16), 0.1, trainer.cfg
    )
    assert torch.allclose(exp.old_logprobs, rollout.logprobs, atol=1e-5)
    assert torch.allclose(exp.ref_logprobs, exp.old_logprobs, atol=1e-6) and exp.kl.abs().max() < 1e-5
    part = exp.rows(slice(0, 8)).trimmed()
    _, m = minibatch_loss(trainer.policy, trainer.critic, None, trainer.cfg.ppo, part)
    assert float(m["approx_kl"]) < 1e-10 and float(m["clipfrac"]) == 0.0


def test_old_logprobs_are_the_samplers_without_a_policy_pass_unless_the_estimator_reads_logits(setup):
    """A float32 run sampled by the hf engine takes π_old's log-probs from the sampler (run.sampled_logprobs):
    with k1 they are rollout.logprobs exactly and the policy runs no forward pass while scoring (the
    reference and the critic still do); token_kl needs the policy's logits, so it runs one pass per chunk of
    train.micro_batch_size rows (16 rows, chunks of 4: four) and its log-probs come from those passes."""
    trainer = ppo_run(ppo_config(setup), setup["policy"].parent / "sampled-run")
    assert trainer.sampled_logprobs
    rollout = trainer.rollout(trainer.prompt_batch(0), seed=0)
    calls = []
    hook = trainer.policy.register_forward_hook(lambda *a: calls.append(1))
    try:
        exp = make_experience(trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16), 0.1,
                              trainer.cfg, sampled_logprobs=True)
        assert calls == [] and torch.equal(exp.old_logprobs, rollout.logprobs * rollout.response_mask)
        cfg = dataclasses.replace(trainer.cfg, kl=dataclasses.replace(trainer.cfg.kl, estimator="token_kl"))
        exp = make_experience(trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16), 0.1, cfg,
                              sampled_logprobs=True)
    finally:
        hook.remove()
    assert len(calls) == 16 // trainer.cfg.train.micro_batch_size == 4
    assert not torch.equal(exp.old_logprobs, rollout.logprobs)
    assert torch.allclose(exp.old_logprobs, rollout.logprobs, atol=1e-5)


def test_token_kl_adds_the_exact_kl_to_the_loss_on_the_advantages_scale(setup):
    """kl.estimator=token_kl: the rewards carry −β·KL_t (the later positions' part of ∇KL) and the loss adds
    (β/σ_A)·mean_t KL_t with its gradient (each position's own part), σ_A the std the advantages were
    whitened by, so that both parts keep the objective's ratio (tether.losses.kl). The policy is moved off
    the reference first, so that KL_t and its gradient are not 0."""
    trainer = ppo_run(ppo_config(setup, "kl.estimator=token_kl"), setup["policy"].parent / "token-kl-run")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    rollout = trainer.rollout(trainer.prompt_batch(0), seed=0)
    beta = 0.1
    exp = make_experience(trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16), beta,
                          trainer.cfg)
    logits, ref_logits = policy_logits(trainer.policy, rollout), policy_logits(trainer.ref, rollout)
    assert torch.allclose(exp.kl, token_kl(logits, ref_logits, exp.mask), atol=1e-6) and exp.kl.sum() > 0
    plain = dataclasses.replace(trainer.cfg.ppo, whiten_advantages=False)
    unwhitened = advantages_and_returns(exp.kl, exp.old_values, exp.scores, exp.mask, beta, plain)[1]
    sigma = masked_var(unwhitened, exp.mask).sqrt()
    assert exp.kl_loss_coef == pytest.approx(beta / float(sigma), rel=1e-5)

    part = exp.rows(slice(0, 8)).trimmed()
    with_kl, _ = minibatch_loss(trainer.policy, trainer.critic, trainer.ref, trainer.cfg.ppo, part)
    without, _ = minibatch_loss(trainer.policy, trainer.critic, None, trainer.cfg.ppo,
                                dataclasses.replace(part, kl_loss_coef=0.0))
    exact = token_kl(policy_logits(trainer.policy, part.rollout), policy_logits(trainer.ref, part.rollout),
                     part.mask)
    expected = exp.kl_loss_coef * masked_mean(exact.detach(), part.mask)
    gap = float((with_kl - without).detach())
    assert float(expected) > 0 and gap == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError, match="reference"):
        minibatch_loss(trainer.policy, trainer.critic, None, trainer.cfg.ppo, part)


@pytest.fixture(scope="module")
def toy_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    trainer = ppo_run(ppo_config(setup, "iterations=8"), out)
    ref_before = {k: v.clone() for k, v in trainer.ref.state_dict().items()}
    trainer.train()
    return out, trainer, ref_before


def test_a_toy_reward_rises_and_the_policy_moves_but_not_the_reference(toy_run, setup):
    out, trainer, ref_before = toy_run
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == list(range(1, 9))
    rewards = [r["reward"] for r in train]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.5  # "a" per response: ~0.25 at the start
    for key in (
        "gold",
        "kl",
        "beta",
        "entropy",
        "clipfrac",
        "approx_kl",
        "value_loss",
        "explained_variance",
        "response_length",
        "tokens_per_s",
    ):
        assert key in train[-1]
    assert train[-1]["kl"] > 0
    final, start = _weights(out / "model"), _weights(setup["policy"])
    assert any(not torch.equal(final[k], start[k]) for k in start)
    assert all(not p.requires_grad for p in trainer.ref.parameters())
    assert all(torch.equal(v, ref_before[k]) for k, v in trainer.ref.state_dict().items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["critic"] == "policy" and summary["instruments"]["kl_from_base"]["value"] > 0
    assert summary["rewards"]["policy"]["proxy"] > summary["rewards"]["base"]["proxy"]


def test_a_reward_model_directory_is_the_reward_and_the_critic(setup, tmp_path):
    from tether.reward_model import create_reward_model, score_texts

    torch.manual_seed(0)
    rm, tok = create_reward_model(setup["policy"])
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    reward = load_reward(str(tmp_path / "rm"))
    prompts, responses = ["a b", "c"], ["d e", "f"]
    assert reward(prompts, responses).tolist() == pytest.approx(score_texts(rm, tok, prompts, responses))

    out = tmp_path / "run"
    train_ppo(ppo_config(setup, f"reward.source={tmp_path / 'rm'}", "iterations=1"), out)
    assert json.loads((out / "summary.json").read_text())["critic"] == "rm"
    assert (out / "model" / "model.safetensors").is_file()


def test_resume_after_a_crash_gives_identical_weights(setup, tmp_path, toy_run):
    """The toy run (8 iterations) again, checkpointing every 2, crashing in the middle of iteration 7's
    update (after the checkpoint at 6); resumed, it ends with the uninterrupted run's weights."""
    reference, _, _ = toy_run
    out = tmp_path / "run"
    cfg = ppo_config(setup, "iterations=8", save_every=2)
    trainer = ppo_run(cfg, out)
    real_update = trainer.update

    def crashing_update(exp, loss_fn):
        if trainer.iteration == 6:
            trainer.loop.optimizer_step()  # the weights move in memory, never on disk
            raise RuntimeError("killed")
        return real_update(exp, loss_fn)

    trainer.update = crashing_update
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    train_ppo(cfg, out, resume=True)
    final, expected = _weights(out / "model"), _weights(reference / "model")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r["iteration"] for r in read_metrics(out) if r["kind"] == "train"] == list(range(1, 9))


def test_sigterm_saves_at_the_end_of_the_iteration_and_resume_finishes_the_run(setup, tmp_path, toy_run):
    reference, _, _ = toy_run
    out, cfg = tmp_path / "run", ppo_config(setup, "iterations=8")
    trainer = ppo_run(cfg, out)
    real_step = trainer.step

    def step():
        if trainer.iteration == 3:
            trainer.loop._on_sigterm(signal.SIGTERM, None)  # what the handler does when the signal arrives
        return real_step()

    trainer.step = step
    with pytest.raises(TrainingInterrupted) as e:
        trainer.train()
    assert torch.load(e.value.checkpoint / "trainer_state.pt", weights_only=True)["extra"]["iteration"] == 4
    train_ppo(cfg, out, resume=True)
    final, expected = _weights(out / "model"), _weights(reference / "model")
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_stop_strings_end_a_response():
    tok = tiny_tokenizer()
    a, b, c = word_id("a"), word_id("b"), word_id("c")
    r = _rollout(2, 4)
    r.response_ids = torch.tensor([[a, b, c, a], [c, c, c, c]])
    r.ended = torch.tensor([False, False])
    cut = cut_at_stop(r, tok, ["b c"], pad_value=0)
    assert cut.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert cut.response_ids[0].tolist() == [a, b, c, 0] and cut.ended.tolist() == [True, False]


def test_scores_of_unended_responses_and_running_normalisation():
    scores, ended = torch.tensor([1.0, 2.0]), torch.tensor([True, False])
    assert penalize_unended(scores, ended, "keep", -1.0).tolist() == [1.0, 2.0]
    assert penalize_unended(scores, ended, "replace", -1.0).tolist() == [1.0, -1.0]
    assert penalize_unended(scores, ended, "offset", -1.0).tolist() == [1.0, 1.0]
    m = RunningMoments()
    m.update(torch.tensor([1.0, 3.0]))
    m.update(torch.tensor([5.0]))
    assert (m.mean, m.std) == pytest.approx((3.0, math.sqrt(8 / 3)))


def test_a_bad_prompt_file_names_the_line(setup, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a b"}\n{"prompt": "c"\n')
    with pytest.raises(DataError, match=rf"^{bad}:2: malformed JSON"):
        train_ppo(ppo_config(setup, f"data.train={bad}"), tmp_path / "run")
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "a"}, {"prompt": "a b c d e"}])
    with pytest.raises(DataError, match=rf"^{long}:2: prompt is 5 tokens"):
        train_ppo(ppo_config(setup, f"data.train={long}", "data.max_prompt_length=4"), tmp_path / "run2")


def test_an_unknown_reward_is_a_one_line_error(setup, tmp_path, capsys):
    with pytest.raises(TetherError) as e:
        load_reward("no-such-reward")
    assert "'no-such-reward'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TetherError, match="no function 'missing'"):
        load_reward("ppo_helpers:missing")
    parser = argparse.ArgumentParser()
    ppo_command.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), *ppo_overrides(setup, "reward.source=nope")])
    with pytest.raises(TetherError, match="unknown reward 'nope'"):
        ppo_command.run(args)


def test_the_default_config_loads():
    from tether.config import PPOConfig, load_config

    cfg = load_config(PPOConfig, Path(__file__).resolve().parents[1] / "configs" / "ppo.yaml")
    assert cfg.reward.source == "runs/rm/model" and cfg.rollout.batch_size % cfg.train.batch_size == 0
