"""The configs of the RL stages: PPO, GRPO and RLOO, and the sections they share (prompts, sampling,
rewards, the KL penalty, evaluation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal

from tether.config.loader import SEED, is_default, ranged
from tether.config.supervised import TemplateConfig, column_problems
from tether.config.train import LoopConfig, LoRAConfig, schedule_problems
from tether.errors import TetherError
from tether.functions import import_function, is_function_spec

# ------------------------------------------------------------------------------------------------ PPO


@dataclasses.dataclass
class PPODataConfig:
    """Prompts to sample responses for (tether.data prompt records: {"prompt"} plus any metadata)."""

    train: str = ranged(rule="non-empty")
    """Prompts for the training rollouts: a .jsonl, .json, .parquet or .csv file, a directory saved by
    `datasets`, or a Hub dataset `owner/name:split` (tether.data_sources)."""
    test: str | None = None
    """Held-out prompts for the final evaluation (reward, gold reward, KL, win-rate vs SFT)."""
    columns: dict[str, str] = ranged({}, "non-empty")
    """The source's column holding tether's prompt, e.g. {prompt: question}."""
    max_prompt_length: int = ranged(128, ">= 1")
    """Longest prompt in tokens; see too_long for what happens to a longer one."""
    too_long: Literal["error", "skip", "truncate"] = "error"
    """A prompt over max_prompt_length: 'error' names the record, 'skip' drops and counts it, 'truncate'
    keeps its last max_prompt_length tokens (the end the response follows)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """As for SFT: the tokenizer's chat template for messages prompts when it has one."""
    template: TemplateConfig = dataclasses.field(default_factory=TemplateConfig)
    """As for SFT; the policy is saved with it."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a renamed column that nothing reads."""
        return column_problems(self, ("prompt",))


@dataclasses.dataclass
class PPORolloutConfig:
    """How each iteration samples responses (tether.rollout.sample: batched, KV-cached, left-padded)."""

    batch_size: int = ranged(64, ">= 1")
    """Prompts per iteration, one response each: the experience every PPO epoch goes over."""
    max_new_tokens: int = ranged(32, ">= 1")
    """Longest response; a response cut here has not ended (see reward.no_eos)."""
    temperature: float = ranged(1.0, ">= 0")
    """Sampling temperature. Log-probs (policy and reference) are scored at the same temperature, so with
    T ≠ 1 the KL penalty and the reported KL are those of the sampling distributions, not of the models.
    0: greedy decoding, log-probs at T = 1 (PPO only: a group's greedy responses would all be the same)."""
    top_p: float = ranged(1.0, "(0, 1]")
    """Nucleus sampling mass; 1 samples from the whole (temperature-scaled) distribution."""
    stop: list[str] = ranged([], "non-empty")
    """Strings that end a response like EOS: it is cut after the first one it contains."""
    engine: Literal["hf", "vllm"] = "hf"
    """Who samples: 'hf' (tether.rollout on the policy itself) or 'vllm' (a vLLM engine per process, policy
    weights copied in each iteration; needs the vllm package and a CUDA GPU, else an error at start-up)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a value that greedy decoding would ignore."""
        if self.temperature == 0 and self.top_p < 1:
            yield "top_p", (f"is {self.top_p}, but with temperature 0 (greedy) the most likely token is "
                            "taken and top_p is never read: use temperature > 0, or top_p=1")


@dataclasses.dataclass
class PPORewardConfig:
    """The sequence score's source and its conditioning before the KL penalty (tether.rewards)."""

    source: str = ranged("gold", "non-empty")
    """A reward model directory, 'gold' (the lab's gold reward) or 'module:function' taking (prompts,
    responses) lists of strings and returning one float per response: tether imports that module and runs
    it, with your rights (any module on sys.path; RUN/config.yaml's provenance.code records the file's path
    and sha256), so name only code you trust. Each gets the prompt record as the data
    gives it (text or messages; whole, even when data.too_long=truncate cut the policy's copy) and the
    response as text: its tokens up to EOS (or through a stop string) decoded without special tokens, stripped
    of surrounding whitespace. A reward model re-tokenises that text as its own training rows were built
    (its run's data.chat_template and data.max_length, EOS appended), so it may read other ids than the
    policy sampled."""
    normalize: bool = False
    """Divide scores by a running std and subtract a running mean over every score seen so far (saved in
    checkpoints); off keeps β in the reward's own units, as in E[R] − β·KL."""
    no_eos: Literal["keep", "replace", "offset"] = "offset"
    """A response that never ended (cut at max_new_tokens): 'keep' its score, 'replace' the score with
    no_eos_score, or 'offset' it by no_eos_score. Applied after normalisation."""
    no_eos_score: float = -1.0
    """The replacement score or the offset for responses without EOS (or a stop string)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a value that no_eos would ignore."""
        if self.no_eos == "keep" and not is_default(self, "no_eos_score"):
            yield "no_eos_score", (f"is {self.no_eos_score}, but no_eos=keep keeps every score as it is: use "
                                   "no_eos=replace or offset, or leave no_eos_score out")


@dataclasses.dataclass
class PPOKLConfig:
    """The KL penalty to the frozen SFT model: per-token estimator and coefficient β (tether.losses.kl)."""

    estimator: Literal["k1", "k3", "token_kl"] = "k1"
    """Per-token KL penalty (tether.losses.kl derives each): 'k1' log π − log π_ref at the sampled token in
    the reward (InstructGPT); 'token_kl' the exact KL of the next-token distributions, in the reward for the
    positions after each token and in the loss for its own (one more reference forward pass per
    minibatch). Both give the gradient of β·KL(π‖π_ref) in expectation; k1's is the quieter near the
    optimum, where r − β·Σ k1 is the same for every response. 'k3' is refused: as a reward its gradient is
    not the KL's."""
    beta: float = ranged(0.05, ">= 0")
    """KL coefficient in reward units per nat (the initial value when adaptive)."""
    adaptive: bool = False
    """Adapt β towards target (Ziegler et al. 2019's proportional controller) instead of keeping it fixed."""
    target: float = ranged(6.0, "> 0")
    """Adaptive β: the sequence-level KL in nats to hold the policy at."""
    horizon: float = ranged(10000.0, "> 0")
    """Adaptive β: responses over which β may change by at most ±20%."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of an estimator that would train another objective as a reward, and of adaptive-only
        settings given to a fixed β."""
        from tether.losses.kl import REFUSED_IN_REWARD

        if self.estimator in REFUSED_IN_REWARD:
            yield "estimator", f"{self.estimator!r} is refused: {REFUSED_IN_REWARD[self.estimator]}"
        for name in ("target", "horizon"):
            if not self.adaptive and not is_default(self, name):
                yield name, ("is read by the adaptive controller only, and β is fixed: set adaptive=true or "
                             f"leave {name} out")


@dataclasses.dataclass
class PPOEvalConfig:
    """The held-out evaluation at the end (and every train.eval_every iterations): policy vs SFT samples."""

    max_prompts: int = ranged(200, ">= 1")
    """Held-out prompts to evaluate on (the first ones of data.test)."""
    temperature: float = ranged(1.0, "> 0")
    """The temperature the policy and the base are both sampled at (top-p 1); 1: the models' own
    distributions. KL-from-base is then that of the temperature-T distributions."""
    gold: str = ranged("auto", "non-empty")
    """The gold reward that judges the win-rate and is logged beside the proxy (tether.rewards.gold_source):
    auto, the lab's if every prompt is the lab's; lab, the lab's (they must be); none; or 'module:function',
    a gold reward on real text called like a reward function (it gets the prompt files' columns, e.g.
    tether.verifiable:correct reads `answer`), also logged on the training samples."""
    cache_base_samples: bool = True
    """Keep the base's held-out samples in $TETHER_CACHE/eval-samples and reuse them in this run's later
    evaluations and in runs from the same start: the seed makes them the same samples (keyed by the base's
    files, how it is made of them, the prompts and the sampling settings; tether/instruments/sample_cache.py).
    false: sample them anew each time."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of a gold that is neither a mode nor a function that imports."""
        yield from gold_problems(self.gold)


@dataclasses.dataclass
class RLStageConfig:
    """The fields every RL stage (PPO, GRPO, RLOO) has: models, prompts, rewards, sampling, evaluation and
    the loop, whose train.eval_every, save_every and log_every count iterations. PPO takes the sections as
    they are; GRPO and RLOO (GroupStageConfig) their group forms of reward and rollout."""

    policy: str = ranged(rule="non-empty")
    """The SFT model directory: the policy starts from it and (unless `reference` is set) the frozen
    reference is a copy of it."""
    data: PPODataConfig
    """Training and held-out prompts."""
    reference: str | None = None
    """Another model directory as the frozen reference of the KL penalty; none: a copy of `policy`."""
    reward: PPORewardConfig = dataclasses.field(default_factory=PPORewardConfig)
    """The reward source and its conditioning."""
    tokenizer: str | None = None
    """Tokenizer directory when it differs from the policy's."""
    trust_remote_code: bool = False
    """Let transformers run modelling code shipped inside a model directory; off: only its own classes."""
    iterations: int = ranged(100, ">= 1")
    """Rollout-and-update iterations."""
    rollout: PPORolloutConfig = dataclasses.field(default_factory=PPORolloutConfig)
    """Sampling."""
    eval: PPOEvalConfig = dataclasses.field(default_factory=PPOEvalConfig)
    """Held-out evaluation."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights' dtype; float32 gives exact CPU resume."""
    seed: int = ranged(0, SEED)
    """Seeds prompt order, sampling and minibatch order: the same seed gives the same weights on CPU."""
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """LoRA adapters instead of full fine-tuning (lora.r > 0)."""
    train: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(lr=1e-5, batch_size=16, micro_batch_size=16, save_every=0)
    )
    """Optimisation of the policy (and PPO's critic, in one AdamW), warm-up, clipping, checkpoints."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields that every RL stage shares."""
        if self.rollout.engine == "vllm" and self.lora.r > 0:  # its weight copy takes plain names only
            yield "rollout.engine", "vllm does not take LoRA adapters yet: use lora.r=0 or rollout.engine=hf"
        if self.lora.dropout > 0:
            # π_old is scored without gradients, where LoRA dropout is off (tether.lora.train_while_grad), and
            # π is trained with it on: the first minibatch's ratio π/π_old would be dropout noise, not 1 (in
            # the clipping, clipfrac and the approx-KL early stop)
            yield "lora.dropout", (f"must be 0 in an RL stage, got {self.lora.dropout}: π_old is scored "
                                   "without dropout, so the ratio π/π_old would not start at 1")
        yield from schedule_problems(self)


@dataclasses.dataclass
class PPOAlgoConfig:
    """The PPO update on each iteration's experience (Schulman et al. 2017; losses in tether.losses)."""

    epochs: int = ranged(4, ">= 1")
    """Passes over the iteration's responses, in minibatches of train.batch_size responses."""
    clip_eps: float = ranged(0.2, "> 0")
    """Clip range ε of the policy ratio π/π_old."""
    value_clip_eps: float = ranged(0.2, "> 0")
    """Clip range of the value update around the values at sampling time (in reward units)."""
    vf_coef: float = ranged(0.1, ">= 0")
    """Weight of the value loss in the summed loss (the critic shares the optimizer, not the weights)."""
    ent_coef: float = ranged(0.0, ">= 0")
    """Weight of the entropy bonus (mean per-token entropy, subtracted from the loss)."""
    gamma: float = ranged(1.0, "[0, 1]")
    """Discount per token; 1 makes the return the undiscounted score − β·KL of the rest of the response."""
    lam: float = ranged(0.95, "[0, 1]")
    """GAE λ: 0 is the one-step TD advantage, 1 the Monte-Carlo return minus the value."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the iteration's response tokens."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop the iteration's remaining epochs once an epoch's mean approx_kl (to the sampling policy) passes
    this; none: always run every epoch."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of an early stop that has no epochs to stop."""
        yield from approx_kl_problems(self)


@dataclasses.dataclass
class PPOConfig(RLStageConfig):
    """`tether ppo`: RL from a reward with a KL penalty to the SFT model (InstructGPT stage 3).

    train.batch_size is the PPO minibatch (responses per optimizer step) and train.micro_batch_size the
    forward-pass size; iterations × ppo.epochs fix the length of the run (train has no epochs or max_steps);
    train.eval_every and save_every count iterations.
    """

    critic: Literal["auto", "rm", "policy"] = "auto"
    """Value model: 'rm' a separate critic initialised from the reward model (InstructGPT), 'policy' one
    initialised from the SFT model with a new scalar head; 'auto': rm when reward.source is a directory."""
    kl: PPOKLConfig = dataclasses.field(default_factory=PPOKLConfig)
    """The KL penalty."""
    ppo: PPOAlgoConfig = dataclasses.field(default_factory=PPOAlgoConfig)
    """The PPO update."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        r, t = self.rollout, self.train
        if r.batch_size % t.batch_size:
            m = t.batch_size
            yield "rollout.batch_size", f"must be a multiple of train.batch_size ({m}), got {r.batch_size}"
        yield from super().problems()


# ------------------------------------------------------------------------------------------------ GRPO, RLOO


@dataclasses.dataclass
class RewardTerm:
    """One weighted reward function of a summed score."""

    source: str = ranged(rule="non-empty")
    """A reward model directory, 'gold' or 'module:function' (as PPORewardConfig.source)."""
    weight: float = 1.0
    """Its coefficient in the sum."""


@dataclasses.dataclass
class GroupRewardConfig(PPORewardConfig):
    """PPO's reward options, plus more weighted reward functions: the score of a response is
    weight·source + Σ extra[i].weight·extra[i].source, then normalize and no_eos apply to the sum."""

    weight: float = 1.0
    """Coefficient of `source` in the sum; 0 leaves it out (and does not load it)."""
    extra: list[RewardTerm] = dataclasses.field(default_factory=list)
    """More reward functions, e.g. [{source: 'my_pkg.rewards:format', weight: 0.2}]."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields."""
        yield from super().problems()
        if not any([self.weight, *(t.weight for t in self.extra)]):
            yield "weight", "is 0 and so is every extra[i].weight: nothing to optimise"


@dataclasses.dataclass
class GroupRolloutConfig(PPORolloutConfig):
    """Sampling for the group methods: each prompt of an iteration is sampled group_size times."""

    batch_size: int = ranged(16, ">= 1")
    """Prompts per iteration; with G responses each an iteration holds batch_size × G responses, and
    train.batch_size (responses per optimizer step) must divide that."""


@dataclasses.dataclass
class GRPOAlgoConfig:
    """The GRPO update (Shao et al. 2024, eq. 3; advantages of sec. 4.1.2; losses in tether.losses).

    The form whose optimum is exactly π* ∝ π_ref·exp(r/β) (as PPO's and RLOO's): kl_in_reward=true,
    scale=none, aggregation=token_sum. The paper's form is kl_in_reward=false, scale=group,
    aggregation=sequence_mean."""

    group_size: int = ranged(8, ">= 2")
    """G, responses sampled per prompt; the group's mean (and std) is each response's baseline."""
    epochs: int = ranged(1, ">= 1")
    """Passes over each iteration's responses (μ of the paper's algorithm 1); with 1, and one minibatch
    per iteration, π_old = π and the update is on-policy."""
    eps_low: float = ranged(0.2, "(0, 1)")
    """Lower clip range of the ratio π/π_old."""
    eps_high: float = ranged(0.2, "> 0")
    """Upper clip range; above eps_low is DAPO's clip-higher (Yu et al. 2025 use 0.28)."""
    scale: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group's std (paper), the batch's, or not at all (Dr. GRPO). Group
    scaling makes the effective β of the KL term β·std, different for each prompt."""
    aggregation: Literal["sequence_mean", "token_mean", "constant_norm", "token_sum"] = "sequence_mean"
    """How per-token losses become one number: mean per response then over responses (paper), mean over
    all tokens (DAPO), sum / (B·max_new_tokens) (Dr. GRPO), or sum per response, mean over responses."""
    beta: float = ranged(0.04, ">= 0")
    """KL coefficient (nats): of the k3 term in the loss, or of the k1 penalty in the reward when
    kl_in_reward. 0 skips the reference model in training (it is loaded for the evaluation only)."""
    kl_in_reward: bool = False
    """Subtract β·Σ_t (log π_old − log π_ref) from each response's score before the group baseline (as RLOO)
    instead of adding β·k3 to the loss."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop an iteration's remaining epochs once an epoch's mean approx_kl passes this; none: run all."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of an early stop that has no epochs to stop."""
        yield from approx_kl_problems(self)


@dataclasses.dataclass
class GroupStageConfig(RLStageConfig):
    """GRPO's and RLOO's layer over RLStageConfig: weighted reward sums, G responses per prompt sampled
    from rollout.batch_size prompts, and a larger default train.batch_size (responses per step)."""

    reward: GroupRewardConfig = dataclasses.field(default_factory=GroupRewardConfig)
    """The reward sources, their weights and conditioning."""
    rollout: GroupRolloutConfig = dataclasses.field(default_factory=GroupRolloutConfig)
    """Sampling."""
    train: LoopConfig = dataclasses.field(
        default_factory=lambda: LoopConfig(lr=1e-5, batch_size=64, micro_batch_size=16, save_every=0)
    )
    """Optimisation of the policy, warm-up, clipping, checkpoints."""

    size_key = ""  # the dotted key of the group size: grpo.group_size, rloo.k

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of each broken rule between the fields; the groups have `size_key` responses."""
        yield from super().problems()
        r, t = self.rollout, self.train
        if r.temperature == 0:
            yield "rollout.temperature", ("must be > 0 for a group method, got 0.0 (greedy): the "
                                          "responses sampled for a prompt would all be the same, and so "
                                          "every advantage 0")
        section, name = self.size_key.split(".")
        n = r.batch_size * getattr(getattr(self, section), name)
        if n % t.batch_size:
            per_iteration = f"rollout.batch_size × {self.size_key} = {n} responses"
            yield "train.batch_size", f"must divide {per_iteration}, got {t.batch_size}"


@dataclasses.dataclass
class GRPOConfig(GroupStageConfig):
    """`tether grpo`: group-relative policy optimisation, no critic (Shao et al. 2024).

    Each iteration samples grpo.group_size responses for each of rollout.batch_size prompts; train.batch_size
    counts responses per optimizer step. iterations × grpo.epochs fix the length of the run;
    train.eval_every and save_every count iterations.
    """

    grpo: GRPOAlgoConfig = dataclasses.field(default_factory=GRPOAlgoConfig)
    """Group size, clipping, KL and aggregation."""

    size_key = "grpo.group_size"


@dataclasses.dataclass
class RLOOAlgoConfig:
    """The RLOO update (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline, clipped like PPO
    when a batch is used for more than one step."""

    k: int = ranged(4, ">= 2")
    """Responses sampled per prompt; each one's baseline is the mean score of the other k − 1."""
    epochs: int = ranged(1, ">= 1")
    """Passes over each iteration's responses; with 1, and one minibatch per iteration, the update is
    exactly REINFORCE with the leave-one-out baseline (the ratio is 1, nothing clips)."""
    clip_eps: float = ranged(0.2, "> 0")
    """Clip range of π/π_old for the minibatches after the first (off-policy by then)."""
    max_approx_kl: float | None = ranged(None, "> 0")
    """Stop an iteration's remaining epochs once an epoch's mean approx_kl passes this; none: run all."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, reason) of an early stop that has no epochs to stop."""
        yield from approx_kl_problems(self)


@dataclasses.dataclass
class RLOOConfig(GroupStageConfig):
    """`tether rloo`: REINFORCE leave-one-out, the KL to the SFT model in the reward (Ahmadian et al. 2024).

    Each iteration samples rloo.k responses for each of rollout.batch_size prompts; train.batch_size counts
    responses per optimizer step. kl.estimator is the per-token KL summed into the sequence penalty (k1:
    β·Σ log π/π_ref, as in the paper). train.eval_every and save_every count iterations.
    """

    kl: PPOKLConfig = dataclasses.field(default_factory=PPOKLConfig)
    """The KL penalty in the reward: estimator, β, fixed or adaptive. β = 0 skips the reference model."""
    rloo: RLOOAlgoConfig = dataclasses.field(default_factory=RLOOAlgoConfig)
    """Samples per prompt and the update."""

    size_key = "rloo.k"


GOLD_MODES = ("auto", "lab", "none")  # the settings of `gold` besides a 'module:function' gold reward
GOLD_CHOICES = "auto, lab, none or a reward function 'module:function'"


def gold_problems(gold: str) -> Iterator[tuple[str, str]]:
    """("gold", reason) when an evaluation's gold setting is neither a mode nor a function that imports
    (importing runs the module, as the training reward's import does)."""
    if gold in GOLD_MODES:
        return
    if not is_function_spec(gold):
        yield "gold", f"must be {GOLD_CHOICES}, got {gold!r}"
        return
    try:
        import_function(gold, "gold")
    except TetherError as e:
        yield "gold", f"cannot be loaded: {e}"


def approx_kl_problems(algo) -> Iterator[tuple[str, str]]:
    """The approx-KL early stop (tether.trainers.rl `update`) cuts the epochs after the one that passed the
    bound: with one epoch there are none, and max_approx_kl would do nothing."""
    if algo.max_approx_kl is not None and algo.epochs == 1:
        yield "max_approx_kl", ("stops the epochs after the one whose approx_kl passes it, and epochs is 1: "
                                "set epochs > 1, or max_approx_kl=null")
