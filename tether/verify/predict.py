"""What the paper's GRPO and IPO converge to instead of π* ∝ π_ref·exp(r/β), computed on the exact task.

GRPO (Shao et al. 2024, eq. 3) differs from REINFORCE on E[r] − β·KL(π‖π_ref) in three ways.

1. The KL penalty β·k3 sits inside the loss, k3 = π_ref/π − log(π_ref/π) − 1 at each sampled token (eq. 4),
   and is differentiated through π only, not through the sampling. For one state s and its sampled token
   a ~ π(·|s), ∇k3 = (1 − π_ref(a|s)/π(a|s))·∇log π(a|s), whose expectation is

       Σ_a π(a|s)·∇log π(a|s) − Σ_a π_ref(a|s)·∇log π(a|s) = 0 + ∇[−Σ_a π_ref(a|s)·log π(a|s)]
       = ∇ KL(π_ref(·|s) ‖ π(·|s)).

   So the penalty's gradient is that of the *forward* KL(π_ref‖π), token by token at the states the policy
   visits (their distribution held fixed), not that of KL(π‖π_ref), the reverse KL whose optimum is π*.
   Setting the per-state gradient of E[r] − β·Σ_s d(s)·KL(π_ref(·|s)‖π(·|s)) to zero on the simplex gives,
   with Q(s, a) = E[r | s, a] the plain (not soft) expected reward and λ_s a normaliser above max_a Q,

       π(a|s) = β·π_ref(a|s) / (λ_s − Q(s, a))          (solved from the last tokens backwards)

   instead of π*(a|s) ∝ π_ref(a|s)·exp(Q_soft(s, a)/β): a heavier tail (1/x, not exp), and no soft value.
2. Dividing the centred rewards by the group's std σ divides the reward term by σ and leaves the penalty
   alone: the update is (1/σ)·[reward term − β·σ·penalty term], so the effective coefficient is β·σ, in
   reward units. σ is the std of r under the policy itself, so β_eff shrinks as the policy concentrates.
   The group mean includes the response's own reward, which scales the reward term by (G − 1)/G:
   β_eff = β·σ·G/(G − 1).
3. sequence_mean divides each response's token terms by its length |y|, so the reward term is that of
   E[(r − b)/|y|] (shorter responses' rewards count more; the baseline b no longer cancels) and the penalty
   of a state is weighted by the mean 1/|y| of the responses through it.

`grpo_fixed_point` finds the policy where GRPO's expected update vanishes with all three in place: the
policy is tabular (one softmax per prefix, which the tiny LM can represent exactly), the expected update is
the exact sum over the responses of the trainer's per-response surrogate (π/π_old = 1, one step per
batch), with b = E_π[r] and σ = std_π(r) (the large-G limits of the group's mean and std), iterated to zero.
With kl="k1_reward", scale="none", aggregation="token_sum" the same code must return π* (a check of the
machinery, in the tests), and with kl="k3_loss", scale="none", aggregation="token_sum" the closed form of
point 1 (`forward_kl_fixed_point`, β' = β·G/(G − 1)).

Measured by `tether verify` (β = 0.5, G = 8, 600 iterations): the paper's GRPO ends at KL(π‖π*) = 0.372
nats (0.430 with training seed 1), E[r] = 2.590, KL(π‖π_ref) = 0.959; the predicted fixed point is at
0.324 from π*, E[r] = 2.633, KL to π_ref 0.997, β_eff = 0.306; KL(π_grpo‖prediction) = 0.026 (0.031 with
seed 1), against 0.37 to π*. What is left: (a) the group of 8 is not the large-G limit: E[1/s] > 1/σ
shrinks β_eff a little more (a Monte-Carlo estimate of E[(r − r̄)/s] for G = 8 moved the prediction by
0.012 nats, towards the measurement: 0.022); (b) the run's own noise: with std scaling the advantages
stay O(1) at the fixed point, whereas with the KL in the reward r − β·log(π*/π_ref) = β·log Z is the same
for every response at π*, so REINFORCE's advantages, and its gradient noise, vanish there (hence
grpo_kl_in_reward's 0.001).

IPO (Azar et al. 2024) regresses h = f(y_w) − f(y_l) onto 1/(2τ), f(y) = (1/|y|)·log(π(y)/π_ref(y)) here
(tether's IPO averages log-probs over response tokens). With every pair of the N responses once, least
squares gives f(y) = (P(y ≻ μ) − 1/2)/τ + c, μ uniform over the responses (Azar et al. 2024's optimum,
with the length average): `ipo_optimum`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tether.verify.task import ExactTask


@dataclass(frozen=True)
class Tree:
    """The responses as paths through prefixes: token t of response i is action `actions[i][t]` (0 = EOS,
    w = word w) taken at state `states[i][t]` (an index into `prefixes`)."""

    prefixes: list[tuple[str, ...]]
    states: list[list[int]]
    actions: list[list[int]]


def response_tree(task: ExactTask) -> Tree:
    prefixes = [p for p in task.responses if len(p) < task.max_words]
    where = {p: i for i, p in enumerate(prefixes)}
    states, actions = [], []
    for y in task.responses:
        ids = task.token_ids(y)
        states.append([where[y[:t]] for t in range(len(ids))])
        actions.append(ids)
    return Tree(prefixes, states, actions)


def _flat(tree: Tree) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, state, action) of every token of every response, each (total tokens,) long."""
    rows = [i for i, a in enumerate(tree.actions) for _ in a]
    states = [s for st in tree.states for s in st]
    actions = [a for ac in tree.actions for a in ac]
    return torch.tensor(rows), torch.tensor(states), torch.tensor(actions)


def conditionals(task: ExactTask, logp: torch.Tensor) -> torch.Tensor:
    """log π(a | prefix) for every prefix and action, (S, V) float64, from response log-probs (N,).

    P(prefix) = Σ π(y) over the responses that start with it; π(a|s) = P(s·a)/P(s), with s·EOS the response s.
    """
    tree = response_tree(task)
    p = logp.exp()
    out = torch.full((len(tree.prefixes), task.vocab_size), -math.inf, dtype=torch.float64)
    mass = torch.zeros(len(tree.prefixes), task.vocab_size, dtype=torch.float64)
    for i, (st, ac) in enumerate(zip(tree.states, tree.actions, strict=True)):
        for s, a in zip(st, ac, strict=True):
            mass[s, a] += p[i]
    total = mass.sum(-1, keepdim=True)
    out = torch.where(mass > 0, mass.log() - total.log(), out)
    return out


def tabular_logprobs(tree: Tree, logits: torch.Tensor) -> torch.Tensor:
    """Response log-probs (N,) of the tabular policy softmax(logits[s]) (S, V)."""
    rows, states, actions = _flat(tree)
    token = torch.log_softmax(logits, -1)[states, actions]  # (total tokens,)
    return torch.zeros(len(tree.actions), dtype=token.dtype).index_add(0, rows, token)


@dataclass
class FixedPoint:
    logp: torch.Tensor  # (N,) float64, log π of the fixed point
    beta_eff: float  # β·σ·G/(G − 1) at the fixed point (β·G/(G − 1) without std scaling)
    residual: float  # max |expected update| at the end (0 at an exact fixed point)


def grpo_fixed_point(task: ExactTask, ref_logp: torch.Tensor, beta: float, group_size: int,
                     scale: str = "group", aggregation: str = "sequence_mean", kl: str = "k3_loss",
                     steps: int = 20000, lr: float = 0.05) -> FixedPoint:
    """The tabular policy where GRPO's expected update is zero (see the module docstring).

    scale: "group" (advantage / σ) or "none"; aggregation: "sequence_mean" (each response's token terms / |y|)
    or "token_sum"; kl: "k3_loss" (β·k3 per token in the loss) or "k1_reward" (β·log(π/π_ref) of the
    response subtracted from its reward, as grpo.kl_in_reward does). Adam on the expected update, from π_ref.
    """
    tree = response_tree(task)
    rows, states, actions = _flat(tree)
    ref_cond = conditionals(task, ref_logp)  # (S, V)
    ref_token = ref_cond[states, actions]  # (total tokens,)
    weight = torch.tensor([1.0 / len(a) if aggregation == "sequence_mean" else 1.0 for a in tree.actions],
                          dtype=torch.float64)  # (N,)
    r, centre = task.rewards, (group_size - 1) / group_size
    logits = ref_cond.clamp(min=-30).clone().requires_grad_(True)  # (S, V)
    opt = torch.optim.Adam([logits], lr=lr)
    residual = math.inf
    for _ in range(steps):
        token = torch.log_softmax(logits, -1)[states, actions]  # (total tokens,) with gradient
        seq = torch.zeros(len(tree.actions), dtype=token.dtype).index_add(0, rows, token)  # (N,)
        with torch.no_grad():
            p = seq.exp()
            reward = r - beta * (seq - ref_logp) if kl == "k1_reward" else r
            mean = (p * reward).sum()
            sigma = ((p * (reward - mean) ** 2).sum()).sqrt() if scale == "group" else torch.tensor(1.0)
            adv = centre * (reward - mean) / sigma  # (N,)
        per_token = adv[rows] * token  # the surrogate's reward term at π/π_old = 1
        if kl == "k3_loss":
            u = token - ref_token
            per_token = per_token - beta * (torch.expm1(-u) + u)  # − β·k3
        per_seq = torch.zeros(len(tree.actions), dtype=token.dtype).index_add(0, rows, per_token)
        surrogate = (p * weight * per_seq).sum()  # E_π[w(y)·Σ_t (A·log π − β·k3)], ascent
        opt.zero_grad()
        (-surrogate).backward()
        residual = float(logits.grad.abs().max())
        if residual < 1e-10:
            break
        opt.step()
    with torch.no_grad():
        logp = tabular_logprobs(tree, logits)
        p = logp.exp()
        sigma = float(((p * (r - (p * r).sum()) ** 2).sum()).sqrt()) if scale == "group" else 1.0
    return FixedPoint(logp=logp, beta_eff=beta * sigma / centre, residual=residual)


def forward_kl_fixed_point(task: ExactTask, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """The closed form π(a|s) = β·π_ref(a|s)/(λ_s − Q(s, a)) of point 1, by backward induction: the
    stationary point of E[r] − β·Σ_s d(s)·KL(π_ref(·|s)‖π(·|s)) (token_sum, no std scaling). (N,) log π."""
    tree = response_tree(task)
    ref_cond = conditionals(task, ref_logp).exp()  # (S, V)
    child = {}  # (state, action) → response index (EOS, or a word at the last level) or next state
    for i, (st, ac) in enumerate(zip(tree.states, tree.actions, strict=True)):
        for t, (s, a) in enumerate(zip(st, ac, strict=True)):
            child[(s, a)] = ("state", st[t + 1]) if t + 1 < len(st) else ("leaf", i)
    cond = torch.zeros_like(ref_cond)
    value = torch.zeros(len(tree.prefixes), dtype=torch.float64)
    for s in sorted(range(len(tree.prefixes)), key=lambda k: -len(tree.prefixes[k])):  # deepest first
        q = torch.tensor([float(task.rewards[c[1]]) if c[0] == "leaf" else float(value[c[1]])
                          for c in (child[(s, a)] for a in range(task.vocab_size))], dtype=torch.float64)
        lo, hi = float(q.max()), float(q.max()) + beta * 2 + 1.0  # Σ_a β·p_a/(λ − q_a) falls from ∞ to < 1
        for _ in range(200):
            lam = (lo + hi) / 2
            lo, hi = (lam, hi) if float((beta * ref_cond[s] / (lam - q)).sum()) > 1 else (lo, lam)
        cond[s] = beta * ref_cond[s] / (hi - q)
        cond[s] /= cond[s].sum()
        value[s] = (cond[s] * q).sum()
    return tabular_logprobs(tree, cond.log())


def ipo_optimum(task: ExactTask, ref_logp: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO's optimum with hard preferences (the higher reward wins) over every pair once: (N,) log-probs
    π(y) = π_ref(y)·exp(|y|·(f(y) + c)), f(y) = (P(y ≻ μ) − 1/2)/τ, c such that Σ π = 1."""
    r = task.rewards
    wins = (r[:, None] > r[None, :]).double() + 0.5 * (r[:, None] == r[None, :]).double()  # (N, N)
    f = (wins.mean(1) - 0.5) / tau  # (N,)
    length = torch.tensor([len(task.token_ids(y)) for y in task.responses], dtype=torch.float64)

    def log_mass(c: float) -> float:
        return float(torch.logsumexp(ref_logp + length * (f + c), 0))

    lo, hi = -50.0, 50.0  # log_mass rises with c
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if log_mass(c) < 0 else (lo, c)
    logp = ref_logp + length * (f + (lo + hi) / 2)
    return logp - torch.logsumexp(logp, 0)
