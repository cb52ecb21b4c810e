"""The exact task of `tether verify`: one prompt whose every possible response can be listed.

The vocabulary is EOS and the words of `ExactTask.words`, nothing else (no pad, BOS or unknown token), so a
model over it can only emit those. A response is a sequence of at most `max_words` words: one with fewer
words ends with EOS; one with `max_words` words ends there because the rollouts stop after
`max_new_tokens = max_words` tokens — the model's EOS is forced at that point, with probability 1. So

    π(y) = Π_t π(y_t | x, y_<t)     over y's emitted tokens (EOS included when it has one)

sums to exactly 1 over the Σ_{k ≤ L} W^k responses (W words, L = max_words; 40 for the default W = 3,
L = 3), and KL(π‖π*), E_π[r] and KL(π‖π_ref) are sums over that list, computed from one teacher-forced
forward pass over every response (`sequence_logprobs`).

How the trainers keep to the list: the RL trainers sample with rollout.max_new_tokens = max_words and
reward.no_eos = keep, so a response cut after `max_words` words keeps its score and its log-prob is the sum
over the `max_words` tokens, as above; DPO's pairs are tokenised with data.max_length = prompt tokens +
max_words, which cuts the EOS that the data path appends to a `max_words`-word response (tether.data keeps
the first tokens) and leaves the others whole. The empty response (EOS at once) is written "∅" in pair
files, because the data path rightly refuses an empty chosen or rejected text; the task's tokenizer deletes
"∅" before splitting, so it encodes to EOS alone and decodes (like every response) without it.

The reward is a fixed table, seeded uniform numbers in [0, reward_range) with one response (`best`) lifted
`best_lead` above all others; `reward` is its `module:function` source for the trainers.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from tether.data import position_ids
from tether.errors import TetherError
from tether.losses import token_logprobs
from tether.models import build_tiny_llama
from tether.quiet import quiet_transformers
from tether.theory import optimal_policy

EOS = "<eos>"
EMPTY = "∅"  # the empty response in pair files (the data path refuses "")
REWARD_SOURCE = "tether.verify.task:reward"


@dataclass(frozen=True)
class ExactTask:
    """One prompt, every response up to `max_words` words over `words`, and a reward table."""

    words: tuple[str, ...] = ("a", "b", "c")
    max_words: int = 3
    prompt: str = "c b a"
    best: str = "b c a"
    reward_range: float = 3.0
    """Rewards are seeded uniform numbers in [0, reward_range): at β = 0.5 this puts π* about 0.6 nats from
    the starting policy, 30 times the 0.02 target."""
    best_lead: float = 0.3
    reward_seed: int = 0
    model_seed: int = 0

    # ------------------------------------------------------------------------------------------- tokens

    @cached_property
    def tokenizer(self):
        """EOS (id 0, also the pad id) and the words (ids 1..W); "∅" is deleted before splitting."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(self.words)}}
        tok = Tokenizer(models.WordLevel(vocab))
        tok.normalizer = normalizers.Replace(EMPTY, "")
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)

    @property
    def vocab_size(self) -> int:
        return len(self.words) + 1

    @cached_property
    def prompt_ids(self) -> list[int]:
        return self.tokenizer(self.prompt, add_special_tokens=False)["input_ids"]

    @cached_property
    def responses(self) -> list[tuple[str, ...]]:
        """Every response as a tuple of words: by length, then in the order of `words`."""
        out: list[tuple[str, ...]] = []
        for n in range(self.max_words + 1):
            out.extend(itertools.product(self.words, repeat=n))
        return out

    @cached_property
    def texts(self) -> list[str]:
        """Each response as the trainers' rollouts decode it ("" for the empty one)."""
        return [" ".join(y) for y in self.responses]

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.texts)}

    def token_ids(self, response: tuple[str, ...]) -> list[int]:
        """The tokens the model emits for `response`: its words, then EOS unless it has max_words words."""
        ids = [self.words.index(w) + 1 for w in response]
        return ids + [0] if len(response) < self.max_words else ids

    def pair_text(self, i: int) -> str:
        """Response i as written in a preference file ("∅" for the empty one)."""
        return self.texts[i] or EMPTY

    # ------------------------------------------------------------------------------------------- reward

    @cached_property
    def rewards(self) -> torch.Tensor:
        """(N,) float64: seeded uniform in [0, reward_range) (3 decimals), `best` set to the others' maximum +
        best_lead."""
        rng = random.Random(self.reward_seed)
        r = torch.tensor([round(rng.random() * self.reward_range, 3) for _ in self.texts],
                         dtype=torch.float64)
        b = self.index[self.best]
        others = torch.cat([r[:b], r[b + 1 :]])
        r[b] = float(others.max()) + self.best_lead
        return r

    def reward_of(self, texts) -> list[float]:
        try:
            return [float(self.rewards[self.index[t.strip()]]) for t in texts]
        except KeyError as e:
            raise TetherError(f"response {e.args[0]!r} is not one of the task's {len(self.texts)}") from None

    def optimum(self, reference_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
        """π* ∝ π_ref·exp(r/β) over the responses (tether.theory.optimal_policy), (N,) float64."""
        return optimal_policy(reference_logprobs.exp(), self.rewards, beta, normalize=True).policy

    # ------------------------------------------------------------------------------------------- models

    def build_reference(self):
        """The starting policy: a tiny Llama over the task's vocabulary (no pad or BOS token)."""
        return build_tiny_llama(
            self.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
            max_position_embeddings=16, seed=self.model_seed, pad_token_id=None, bos_token_id=None,
            eos_token_id=0,
        )

    def build_perturbed(self, std: float = 0.2, seed: int = 1):
        """The reference with seeded Gaussian noise (std `std`) added to every weight: a start away from π_ref
        (KL(π‖π_ref) ≈ 0.7 nats for the default task) for the β limits."""
        model = self.build_reference()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * std)
        return model

    def save(self, model, path: Path) -> Path:
        with quiet_transformers():
            model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


DEFAULT_TASK = ExactTask()


def reward(prompts: list, responses: list[str]) -> list[float]:
    """The default task's reward of each response (the `module:function` source the trainers load)."""
    return DEFAULT_TASK.reward_of(responses)


# ------------------------------------------------------------------------------------------- exact sums


@torch.no_grad()
def sequence_logprobs(model, task: ExactTask) -> torch.Tensor:
    """log π(y | x) of every response of `task`, by teacher forcing in one batch: (N,) float64.

    Row i is prompt + token_ids(response i), right-padded; the log-prob of each emitted token is read from
    the logits at the position before it (float64 log-softmax) and the row's are summed. A response of
    max_words words has no EOS term: the model's EOS is forced there (probability 1).
    """
    P = len(task.prompt_ids)
    rows = [task.prompt_ids + task.token_ids(y) for y in task.responses]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)  # (N, T), padded with EOS (masked)
    attn = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
    was_training = model.training
    model.eval()
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits
    model.train(was_training)
    lp = token_logprobs(logits[:, P - 1 : -1].double(), ids[:, P:])  # (N, T − P): predicts token P + t
    return (lp * attn[:, P:]).sum(-1)


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p‖q) = Σ p·(log p − log q) over the responses, from log-probabilities (N,)."""
    p = logp.exp()
    on = p > 0
    return float((p[on] * (logp[on] - logq[on])).sum())


@dataclass
class Exact:
    """A policy's exact numbers on the task against π_ref and π* (all sums over the N responses)."""

    kl_to_optimum: float
    expected_reward: float
    kl_to_reference: float
    mass: float  # Σ π(y): 1 up to rounding when nothing leaks outside the list
    best_probability: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "kl_to_optimum": self.kl_to_optimum,
            "expected_reward": self.expected_reward,
            "kl_to_reference": self.kl_to_reference,
            "best_probability": self.best_probability,
            "mass": self.mass,
            **self.extra,
        }


def exact(task: ExactTask, logp: torch.Tensor, ref_logp: torch.Tensor, optimum: torch.Tensor) -> Exact:
    """KL(π‖π*), E_π[r], KL(π‖π_ref), Σπ and π(best) of the policy with log-probs `logp` (N,)."""
    p = logp.exp()
    mass = float(p.sum())
    if not math.isclose(mass, 1.0, abs_tol=1e-4):
        raise TetherError(f"the policy's probabilities sum to {mass:.6f} over the task's responses, not 1")
    return Exact(
        kl_to_optimum=kl(logp, optimum.log()),
        expected_reward=float((p * task.rewards).sum()),
        kl_to_reference=kl(logp, ref_logp),
        mass=mass,
        best_probability=float(p[task.index[task.best]]),
    )
