"""KL(π‖π_ref) in the RL objective, all in one place: the per-token estimators, where each may be placed
(reward or loss) so that the expected gradient is the right one (`REWARD_KL`, the one registry), and the
coefficient β's controllers, fixed or adaptive (`kl_controller`).

Shapes: B sequences, T positions, V vocabulary; r_t = log π(y_t|s_t) − log π_ref(y_t|s_t) at the sampled
token y_t of the state s_t (prompt + y_<t).

Estimating a KL and differentiating one are different questions (Schulman 2020, "Approximating KL
divergence"; Tang & Munos 2025, "On a few pitfalls in KL divergence gradient estimation for RL"; Shah et al.
2025). PPO and RLOO put the penalty in the *reward* and differentiate only log π of the sampled tokens
(the score function, reward held constant). For a per-token penalty c_t that gives, in expectation,

    E[Σ_t ∇log π(y_t|s_t) · Σ_{t' ≥ t} c_{t'}].                                                        (1)

The gradient to match is that of the sequence KL, KL(π‖π_ref) = E[Σ_t KL_t] with KL_t = KL(π(·|s_t)‖
π_ref(·|s_t)) the exact KL at s_t:

    ∇KL(π‖π_ref) = E[Σ_t ∇log π(y_t|s_t) · Σ_{t' > t} KL_{t'}]  +  E[Σ_t ∇_θ KL_t]                     (2)

(the first term: each token's effect on the states after it; the second: each state's own next-token
distribution, differentiated in place). Per placement:

- `k1` in the reward, c_t = r_t: E[r_t · ∇log π(y_t|s_t) | s_t] = ∇_θ KL_t (score function of Σ_v π(v)·r(v)
  with Σ_v ∇π(v) = 0), and E[r_{t'} | s_{t'}] = KL_{t'} for the later terms, so (1) = (2). Exact, as in
  InstructGPT (Ouyang et al. 2022, eq. 2).
- `token_kl`: c_t = KL_t (the exact per-position KL) in the reward, plus KL_t differentiated through
  π(·|s_t) in the loss. KL_t depends on s_t but not on y_t, so in (1) the term t' = t has expectation 0 and
  the terms t' > t are (2)'s first term; the loss supplies (2)'s second term. Exact too, at the cost of
  the reference's full next-token distribution in the update. Its KL *estimate* has lower variance than
  k1's (the sum over the vocabulary replaces one sampled token), but its *gradient* does not, near π*: with
  k1 the shaped return r(y) − β·Σ_t r_t = r(y) − β·log(π(y)/π_ref(y)) equals β·log Z for every y at the
  optimum, so every advantage, and the update's noise, vanishes there; with token_kl it does not
  (`tether verify` needs about four times the samples for the same distance to π*).
- `k3` in the reward (c_t = e^{−r_t} + r_t − 1): E[k3(y)·∇log π(y)] is not ∇KL_t (on a 6-way categorical
  it can point away from it), so tether refuses it. k3 is a fine *estimate* of KL (unbiased, ≥ 0).
- k3 in the *loss* (GRPO, Shao et al. 2024 eq. 3-4), differentiated at the sampled tokens:
  ∇k3 = (1 − π_ref(y_t)/π(y_t))·∇log π(y_t), whose expectation over y_t ~ π is −Σ_v π_ref(v|s_t)·∇log
  π(v|s_t) = ∇_θ KL(π_ref(·|s_t)‖π(·|s_t)): the gradient of the *forward* KL at each visited state, the
  states themselves not differentiated. tether.verify.predict derives the fixed point this leads to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tether.losses._reduce import upcast

# --- estimators ----------------------------------------------------------------------------------------


def _k1(log_ratio):
    return log_ratio


def _k2(log_ratio):
    return 0.5 * log_ratio**2


def _k3(log_ratio):
    # exp(−r) − (−r) − 1, with expm1 for accuracy when r is small
    return torch.expm1(-log_ratio) + log_ratio


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) at the sampled tokens: (B, T), (B, T) → (B, T).

    `k1` = logπ − logπ_ref; `k2` = ½(logπ − logπ_ref)²; `k3` = exp(logπ_ref − logπ) − (logπ_ref − logπ) − 1
    (Schulman 2020; k3 is the GRPO penalty, Shao et al. 2024 eq. 4). Summed over a response, k1 and k3
    estimate the sequence KL without bias. Unmasked: multiply by the mask or use `masked_mean`. These are
    estimates of the value; which may be differentiated, and how, is the module docstring's subject.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[kind](logprobs - ref_logprobs)


def masked_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 at the response tokens and exactly 0 (with a zero gradient) elsewhere: (B, T) ×3 → (B, T).

    The log-ratio is replaced by 0 off the mask *before* the exponential: a padded position's log-prob can
    be far below −88.7, where exp(−r) overflows float32, and multiplying the inf by a 0 mask afterwards
    gives NaN in the backward pass (0·inf).
    """
    log_ratio = torch.where(mask.bool(), logprobs - ref_logprobs, logprobs.new_zeros(()))
    return _k3(log_ratio)


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact KL between the next-token distributions at each response position: (B, T, V) ×2 → (B, T).

    kl_t = Σ_v π(v | s_t)·(log π(v | s_t) − log π_ref(v | s_t)), 0 where the mask is 0. Aligned like
    `token_logprobs` (and divided by the same temperature). Summed over the response it is the
    Rao-Blackwellised form of k1: the same expectation, the sequence KL, with lower variance, because the
    sum over the vocabulary replaces the one sampled token. Differentiable through `logits` (the loss
    term of the `token_kl` placement); `ref_logits` are taken as constants by the callers.
    """
    logp = F.log_softmax(upcast(logits), dim=-1)  # (B, T, V)
    ref_logp = F.log_softmax(upcast(ref_logits), dim=-1)  # (B, T, V)
    kl = (logp.exp() * (logp - ref_logp)).sum(dim=-1)  # (B, T)
    return torch.where(mask.bool(), kl, torch.zeros((), dtype=kl.dtype, device=kl.device))


# --- placements ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RewardKL:
    """How one `kl.estimator` of PPO and RLOO enters the objective (see the module docstring).

    in_reward(logprobs, ref_logprobs, logits, ref_logits, mask) → (B, T): the per-token penalty c_t,
    subtracted as β·c_t from the rewards (no gradient). in_loss: whether the exact per-position KL
    (`token_kl` of the current policy's logits) is also added to the loss with coefficient β. uses_logits:
    whether in_reward reads the full next-token distributions (logits), not only the sampled tokens'
    log-probs.
    """

    in_reward: Callable[..., torch.Tensor]
    in_loss: bool
    uses_logits: bool


REWARD_KL: dict[str, RewardKL] = {
    "k1": RewardKL(lambda lp, ref_lp, logits, ref_logits, mask: kl_estimate(lp, ref_lp, "k1"), in_loss=False,
                   uses_logits=False),
    "token_kl": RewardKL(lambda lp, ref_lp, logits, ref_logits, mask: token_kl(logits, ref_logits, mask),
                         in_loss=True, uses_logits=True),
}
"""Every `kl.estimator` PPO and RLOO accept; each gives the exact gradient of β·KL(π‖π_ref) in expectation."""

REFUSED_IN_REWARD = {
    "k3": "k3 in the reward has the wrong expected gradient (E[k3·∇log π] ≠ ∇KL; Schulman 2020's k3 is an "
          "estimate of KL, not a reward); use k1, or token_kl for lower variance",
}
"""Estimators that estimate KL well but would train another objective as a reward, with the reason."""


# --- the coefficient β ------------------------------------------------------------------------------------


class FixedKLController:
    """A constant β; `update` does nothing."""

    def __init__(self, beta: float):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """β adapted so that the measured KL tracks `target_kl`, by the proportional controller of
    Ziegler et al. 2019: e = clip(KL / target − 1, −0.2, 0.2), β ← β·(1 + e·n_steps / horizon).

    n_steps is the number of samples (or steps) since the last update; over `horizon` of them β can change
    by at most ±20%, which keeps the controller from chasing noise in the KL estimate.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: float):
        if not init_beta >= 0:
            raise ValueError(f"init_beta must be >= 0, got {init_beta}")
        if not target_kl > 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_beta)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """One proportional step towards the target; `current_kl` may be a float or a 0-dim tensor."""
        error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def kl_controller(beta: float, adaptive: bool, target: float, horizon: float):
    """β fixed, or adapted towards `target` nats over `horizon` samples (a `kl` block of the RL configs).
    The KL its `update` receives is the trainer's measure: sequence-level nats (the sum of per-token
    estimates over a response), averaged over the batch."""
    return AdaptiveKLController(beta, target, horizon) if adaptive else FixedKLController(beta)
