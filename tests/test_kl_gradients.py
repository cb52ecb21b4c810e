"""Every KL option of PPO, RLOO and GRPO, checked against the exact gradient on enumerable problems.

The policy is a table of logits: one categorical over V tokens (one step), or a first-token table θ0 (V,)
and a second-token table θ1 (V, V) indexed by the first token (two steps, V² sequences). For each option
the per-sample loss is built with the trainers' own functions (the reward term of `REWARD_KL`,
`kl_shaped_rewards`, GAE or the sequence reward, `ppo_objective` / `grpo_loss` with the option's loss
term), at ρ = π/π_old = 1 and with the score 0, so only the KL part is left. Its expectation over every
sequence y, E[∇L] = Σ_y π(y)·∇L(y) (π(y) held constant), is compared with the gradient the option
promises, computed independently by autograd on the enumerated divergence:
- PPO / RLOO / GRPO-kl_in_reward (k1, token_kl): β·∇KL(π‖π_ref), KL = Σ_y π(y)·log(π(y)/π_ref(y));
- GRPO's paper form (β·k3 in the loss): β·Σ_t E_{s_t ~ π}[∇ KL(π_ref(·|s_t)‖π(·|s_t))], the forward KL
  at each visited state, the state distribution held constant (tether.losses.kl's derivation).
Cosine ≥ 0.999 and norm within 1 % are the issue's criteria; in float64 the match is ~1e-12.
"""

import itertools

import pytest
import torch

from tether.config import PPOAlgoConfig, PPOConfig, RLOOConfig, load_config
from tether.errors import TetherError
from tether.losses import REWARD_KL, grpo_loss, kl_shaped_rewards, masked_mean, token_kl
from tether.losses.kl import kl_estimate, masked_k3
from tether.rollout import Rollout
from tether.trainers.ppo import Experience, advantages_and_returns, ppo_objective

BETA = 0.7
D = torch.float64


class Tabular:
    """A policy over sequences of `steps` tokens (1 or 2) from V, logits in tables; `ref` is another."""

    def __init__(self, V: int, steps: int, seed: int, scale: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.V, self.steps = V, steps
        self.theta0 = (scale * torch.randn(V, generator=g, dtype=D)).requires_grad_()
        self.theta1 = (scale * torch.randn(V, V, generator=g, dtype=D)).requires_grad_()

    def params(self):
        return [self.theta0] if self.steps == 1 else [self.theta0, self.theta1]

    def logits(self, y: tuple[int, ...]) -> torch.Tensor:
        """(1, steps, V): the logits that predict each token of y (teacher forcing)."""
        rows = [self.theta0] + ([self.theta1[y[0]]] if self.steps == 2 else [])
        return torch.stack(rows)[None]

    def sequences(self):
        return list(itertools.product(range(self.V), repeat=self.steps))


def logprobs_of(logits: torch.Tensor, y) -> torch.Tensor:
    """(1, T) log-probs of the tokens y under logits (1, T, V)."""
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor([y])[..., None]).squeeze(-1)


def expected_grad(pi: Tabular, ref: Tabular, per_sample_loss) -> torch.Tensor:
    """Σ_y π(y)·∇L(y), flattened over the policy's parameters."""
    total = [torch.zeros_like(p) for p in pi.params()]
    for y in pi.sequences():
        logits, ref_logits = pi.logits(y), ref.logits(y).detach()
        lp, ref_lp = logprobs_of(logits, y), logprobs_of(ref_logits, y)
        weight = lp.sum().exp().detach()  # π(y)
        loss = per_sample_loss(logits, ref_logits, lp, ref_lp, torch.ones(1, pi.steps))
        grads = torch.autograd.grad(loss, pi.params(), allow_unused=True)
        total = [t + weight * (g if g is not None else 0) for t, g in zip(total, grads, strict=True)]
    return torch.cat([t.flatten() for t in total])


def reverse_kl_grad(pi: Tabular, ref: Tabular) -> torch.Tensor:
    """β·∇KL(π‖π_ref) over sequences, by enumeration and autograd."""
    kl = 0
    for y in pi.sequences():
        lp = logprobs_of(pi.logits(y), y).sum()
        kl = kl + lp.exp() * (lp - logprobs_of(ref.logits(y).detach(), y).sum())
    return torch.cat([g.flatten() for g in torch.autograd.grad(BETA * kl, pi.params())])


def forward_kl_per_state_grad(pi: Tabular, ref: Tabular) -> torch.Tensor:
    """β·Σ_t E_{s_t~π}[∇KL(π_ref(·|s_t)‖π(·|s_t))], the visiting probabilities held constant."""

    def fwd(theta, ref_theta):
        ref_logp = torch.log_softmax(ref_theta.detach(), -1)
        return (ref_logp.exp() * (ref_logp - torch.log_softmax(theta, -1))).sum()

    total = fwd(pi.theta0, ref.theta0)
    if pi.steps == 2:
        first = torch.softmax(pi.theta0, -1).detach()  # P(s_1 = y_0)
        total = total + sum(first[v] * fwd(pi.theta1[v], ref.theta1[v]) for v in range(pi.V))
    grads = torch.autograd.grad(BETA * total, pi.params(), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, pi.params(), strict=True)])


def _rollout(lp: torch.Tensor, mask: torch.Tensor) -> Rollout:
    B, T = mask.shape
    zeros = torch.zeros(B, T, dtype=torch.long)
    ended = torch.ones(B, dtype=torch.bool)
    return Rollout(zeros[:, :1], torch.ones(B, 1), zeros, mask, lp.detach(), ended, 1.0)


def ppo_loss(estimator: str):
    """PPO's loss on one sequence: the reward term in GAE (γ = λ = 1, values 0, no whitening), then
    `ppo_objective` at ρ = 1 with the token_kl loss term where the placement has one. num_tokens = 1 makes
    the token mean a sum, so E[∇L] should be β·∇KL exactly."""
    cfg = PPOAlgoConfig(gamma=1.0, lam=1.0, whiten_advantages=False, vf_coef=0.0, ent_coef=0.0)
    placement = REWARD_KL[estimator]

    def loss(logits, ref_logits, lp, ref_lp, mask):
        c = placement.in_reward(lp.detach(), ref_lp, logits.detach(), ref_logits, mask)  # (1, T)
        values = torch.zeros_like(c)
        score = torch.zeros(1, dtype=D)
        rewards, adv, returns, scale = advantages_and_returns(c, values, score, mask, BETA, cfg)
        assert scale == 1.0
        exp = Experience(_rollout(lp, mask), torch.zeros(1, dtype=D), lp.detach(), ref_lp, values, c, rewards,
                         adv, returns, BETA if placement.in_loss else 0.0)
        exact = token_kl(logits, ref_logits, mask) if placement.in_loss else None
        out, _ = ppo_objective(lp, values, torch.zeros_like(lp), exp, cfg, num_tokens=1.0, exact_kl=exact)
        return out

    return loss


def sequence_reward_loss(estimator: str):
    """RLOO's (and GRPO-kl_in_reward's) loss on one sequence: advantage = score − β·Σ_t c_t (a baseline
    independent of the sample only adds a zero-mean term), `grpo_loss` with token sums, one sequence, and
    the token_kl loss term where the placement has one."""
    placement = REWARD_KL[estimator]

    def loss(logits, ref_logits, lp, ref_lp, mask):
        c = placement.in_reward(lp.detach(), ref_lp, logits.detach(), ref_logits, mask)
        advantage = kl_shaped_rewards(torch.zeros(1, dtype=D), c, mask, BETA).sum(-1)  # (1,)
        term = BETA * token_kl(logits, ref_logits, mask) if placement.in_loss else None
        out, _ = grpo_loss(lp, lp.detach(), None, advantage, mask, 0.0, 0.2, 0.2, "token_sum",
                           num_sequences=1, kl_term=term)
        return out

    return loss


def grpo_paper_loss(logits, ref_logits, lp, ref_lp, mask):
    """GRPO's paper form: β·k3 inside the loss, advantage 0 (the score's part is not under test)."""
    out, _ = grpo_loss(lp, lp.detach(), ref_lp, torch.zeros(1, dtype=D), mask, BETA, 0.2, 0.2, "token_sum",
                       num_sequences=1)
    return out


OPTIONS = {
    "ppo k1": (ppo_loss("k1"), reverse_kl_grad),
    "ppo token_kl": (ppo_loss("token_kl"), reverse_kl_grad),
    "rloo / grpo kl_in_reward, k1": (sequence_reward_loss("k1"), reverse_kl_grad),
    "rloo token_kl": (sequence_reward_loss("token_kl"), reverse_kl_grad),
    "grpo paper (k3 in the loss)": (grpo_paper_loss, forward_kl_per_state_grad),
}


def assert_same_direction_and_norm(got: torch.Tensor, want: torch.Tensor):
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=0)
    assert cosine >= 0.999, f"cosine {float(cosine):.4f}"
    assert abs(got.norm() / want.norm() - 1) <= 0.01, f"norm ratio {float(got.norm() / want.norm()):.4f}"


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize(("V", "steps", "seed"), [(6, 1, 0), (6, 1, 1), (3, 2, 2), (4, 2, 3)])
def test_each_accepted_kl_option_has_the_promised_expected_gradient(name, V, steps, seed):
    loss, target = OPTIONS[name]
    pi, ref = Tabular(V, steps, seed), Tabular(V, steps, seed + 100)
    assert_same_direction_and_norm(expected_grad(pi, ref, loss), target(pi, ref))


def test_the_checks_catch_what_tether_refuses_and_what_it_no_longer_does():
    """The criteria can fail: k3 as a reward (refused at load) and token_kl in the reward without its loss
    term (the form before the fix) both miss β·∇KL on these problems."""

    def reward_only(estimate):
        def loss(logits, ref_logits, lp, ref_lp, mask):
            c = estimate(lp, ref_lp, logits, ref_logits, mask)
            advantage = kl_shaped_rewards(torch.zeros(1, dtype=D), c, mask, BETA).sum(-1)
            return grpo_loss(lp, lp.detach(), None, advantage, mask, 0.0, 0.2, 0.2, "token_sum",
                             num_sequences=1)[0]
        return loss

    k3 = reward_only(lambda lp, ref_lp, *_: kl_estimate(lp.detach(), ref_lp, "k3"))
    token_kl_reward_only = reward_only(lambda lp, ref_lp, logits, ref_logits, mask: token_kl(
        logits.detach(), ref_logits, mask))
    for loss in (k3, token_kl_reward_only):
        for V, steps, seed in [(6, 1, 0), (3, 2, 2)]:
            pi, ref = Tabular(V, steps, seed), Tabular(V, steps, seed + 100)
            with pytest.raises(AssertionError):
                assert_same_direction_and_norm(expected_grad(pi, ref, loss), reverse_kl_grad(pi, ref))


@pytest.mark.parametrize("cls", [PPOConfig, RLOOConfig])
def test_k3_in_the_reward_is_refused_at_load_with_the_reason(cls):
    with pytest.raises(TetherError, match=r"kl\.estimator 'k3' is refused: .*wrong expected gradient"):
        load_config(cls, None, ["policy=p", "data.train=d.jsonl", "kl.estimator=k3"])
    assert load_config(cls, None, ["policy=p", "data.train=d.jsonl", "kl.estimator=token_kl"]).kl.estimator \
        == "token_kl"


def test_grpo_k3_gives_finite_gradients_at_padding_far_below_the_reference():
    """A pad position whose log-prob is −100 (a low temperature makes such values common) against a
    reference log-prob of 0: exp(−r) = e^100 overflows float32. Masked before the exponential, the loss
    and its gradient are finite and equal those of the response tokens alone (the pad contributes 0).
    By hand, with one response token at log-prob −0.1 (ref −0.2, old −0.1, advantage 0): k3 = e^{−0.1} +
    0.1 − 1 and the loss is β·k3 (sequence_mean over one token); d/dlp = β·(1 − e^{−0.1})."""
    lp = torch.tensor([[-0.1, -100.0]], requires_grad=True)
    ref = torch.tensor([[-0.2, 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    loss, metrics = grpo_loss(lp, lp.detach(), ref, torch.zeros(1), mask, BETA, 0.2, 0.2, "sequence_mean")
    loss.backward()
    k3 = torch.exp(torch.tensor(-0.1)) + 0.1 - 1
    assert torch.isfinite(lp.grad).all()
    assert torch.allclose(loss, BETA * k3, atol=1e-7)
    want = BETA * (1 - torch.exp(torch.tensor(-0.1)))
    assert torch.allclose(lp.grad, torch.tensor([[want, 0.0]]), atol=1e-7)
    assert torch.allclose(metrics["ref_kl"], k3, atol=1e-7)
    assert torch.equal(masked_k3(lp, ref, mask)[0, 1], torch.tensor(0.0))
    assert masked_mean(masked_k3(lp, ref, mask), mask) == metrics["ref_kl"]
