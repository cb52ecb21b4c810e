"""The math of RLHF as pure functions of tensors: losses return `(loss, metrics)`, metrics are detached
0-dim tensors. Masks mark response tokens (EOS included); see `_reduce` for how token means are taken."""

from tether.losses._reduce import masked_mean
from tether.losses.advantages import gae, grpo_advantages, rloo_advantages, whiten
from tether.losses.kl import REWARD_KL, kl_estimate, token_kl
from tether.losses.policy_gradient import (
    chunked_token_logprobs,
    grpo_loss,
    kl_shaped_rewards,
    ppo_policy_loss,
    token_logprobs,
    value_loss,
)
from tether.losses.preference import DPO_LOGPROB_REDUCTION, bradley_terry_loss, dpo_loss
from tether.losses.sft import sft_loss

__all__ = [
    "REWARD_KL",
    "DPO_LOGPROB_REDUCTION",
    "bradley_terry_loss",
    "chunked_token_logprobs",
    "dpo_loss",
    "gae",
    "grpo_advantages",
    "grpo_loss",
    "kl_estimate",
    "kl_shaped_rewards",
    "masked_mean",
    "ppo_policy_loss",
    "rloo_advantages",
    "sft_loss",
    "token_kl",
    "token_logprobs",
    "value_loss",
    "whiten",
]
