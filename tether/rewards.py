"""Reward sources behind one interface, and what PPO does to a score before the KL penalty.

A reward source is a callable `(prompts, responses, **columns) -> torch.Tensor` of shape (B,), float32: the
score of each response to its prompt. prompts are as the data gives them (text, or a messages list for chat
records); responses are decoded text without EOS (the trainers decode the sampled tokens without special
tokens and strip surrounding whitespace); columns are the prompt file's other columns, one list of B values
each (the ground-truth `answer` of a verifiable task, say; None where a record lacks the column).
`load_reward(spec)` builds one from a spec:

    "runs/rm/model"         a reward model directory (`tether rm`'s RUN/model), scored by
                            tether.reward_model.score_texts on the text re-tokenised as its training rows
                            were: prompt with the RM run's data.chat_template, response + EOS cut to its
                            data.max_length (RUN/config.yaml; "auto" and no cut without one)
    "gold"                  the lab's gold reward (tether.lab.gold_reward); lab prompts only
    "my_pkg.rewards:score"  a Python function: score(prompts: list, responses: list[str], **columns)
                            returning one float per response (a list, tuple, NumPy array or tensor of length
                            B), or None for a response it does not apply to (it then adds 0 to the weighted
                            sum and is left out of that term's logged mean). It receives the columns its
                            signature names, or all of them with **kwargs. This imports
                            my_pkg.rewards with Python's import system (sys.path, which under `python -m`
                            starts with the working directory), so its code runs with the user's rights:
                            that is the feature; `imported_code` names the file for RUN/config.yaml.

    reward = load_reward("gold")
    reward(["what is 3 plus 4 ? answer:"], ["7"])      # tensor([1.])

`RunningMoments` normalises scores by a running mean and std; `penalize_unended` handles responses that
never ended (a table of the three choices, keyed like `PPORewardConfig.no_eos`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tether.config.rl import GOLD_CHOICES
from tether.errors import DataError, TetherError
from tether.functions import column_parameters, import_function, is_function_spec

RewardFn = Callable[[Sequence, Sequence[str]], torch.Tensor]


class RewardModelReward:
    """A trained reward model's score of each (prompt, response), tokenised as its own training rows were:
    with the data.chat_template and data.max_length its `tether rm` run recorded in RUN/config.yaml
    (tether.reward_model.training_settings), not the policy stage's settings."""

    def __init__(self, model_dir: str | Path, device=None, batch_size: int = 64):
        from tether.model_files import resolve_model
        from tether.reward_model import load_reward_model, training_settings

        self.model_dir = str(model_dir)
        local = resolve_model(model_dir)  # a Hub id: its snapshot in the HF cache
        self.model, self.tokenizer = load_reward_model(local, device=device)
        self.model.requires_grad_(False)
        self.chat_template, self.max_length = training_settings(local)
        self.batch_size = batch_size

    def __call__(self, prompts: Sequence, responses: Sequence[str], **columns) -> torch.Tensor:
        from tether.reward_model import score_texts

        scores = score_texts(
            self.model, self.tokenizer, prompts, responses, batch_size=self.batch_size,
            chat_template=self.chat_template, max_length=self.max_length,
        )
        return torch.tensor(scores, dtype=torch.float32)  # (B,)


def gold(prompts: Sequence, responses: Sequence[str], **columns) -> torch.Tensor:
    """The lab's gold reward of each response: (B,). TetherError for a prompt that is not a lab prompt. The
    prompt says everything the gold reward needs: other columns are not read."""
    from tether.lab import gold_reward

    out = []
    for p, r in zip(prompts, responses, strict=True):
        if not is_lab_prompt(p):  # a messages list, or text that is not the lab's
            raise TetherError(f"the gold reward needs the lab's prompts; got {p!r}")
        out.append(gold_reward(p, r))
    return torch.tensor(out, dtype=torch.float32)


def is_lab_prompt(prompt) -> bool:
    """Whether the gold reward can score responses to `prompt`."""
    from tether.lab import parse_prompt

    if not isinstance(prompt, str):  # a messages list (real chat data): never a lab prompt
        return False
    try:
        parse_prompt(prompt)
    except (ValueError, AttributeError):
        return False
    return True


def require_lab_prompts(examples: Sequence, why: str) -> None:
    """DataError naming FILE:LINE of the first example (a tether.data.PromptExample) whose prompt is not a
    lab prompt; `why` says what needs lab prompts."""
    for ex in examples:
        if not is_lab_prompt(ex.prompt):
            what = " (a messages list)" if isinstance(ex.prompt, list) else ""
            raise DataError(ex.path, ex.line, f"not a lab prompt{what}: {why}")


def gold_source(mode: str, examples: Sequence) -> str | None:
    """The gold reward that judges an evaluation on `examples` (tether.data.PromptExample) and is reported
    beside the proxy reward: "gold" (the lab's), a 'module:function' spec, or None. The one place this is
    decided; the `gold` setting of an evaluation (eval.gold, `tether eval --gold`) is `mode`:

        auto             the lab's when every prompt is a lab prompt, else none
        lab              the lab's; a DataError at the first prompt that is not a lab prompt
        none             none (the proxy, or a given judge, judges)
        module:function  that function (a gold reward on real text: an exact-answer check, a classifier),
                         called as a reward function (tether.rewards: it receives the columns it names);
                         a DataError at the first example that lacks or leaves null a column it requires
    """
    if mode == "auto":
        return "gold" if all(is_lab_prompt(ex.prompt) for ex in examples) else None
    if mode == "lab":
        require_lab_prompts(examples, "gold is 'lab' (use gold=auto or gold=none for other prompts)")
        return "gold"
    if mode == "none":
        return None
    if is_function_spec(mode):
        for name in FunctionReward(mode, "gold").required:
            for ex in examples:
                if ex.meta.get(name) is None:
                    raise DataError(ex.path, ex.line, f"no {name!r}, which the gold reward {mode!r} reads")
        return mode
    raise TetherError(f"gold must be {GOLD_CHOICES}; got {mode!r}")


def gold_scorer(source: str | None):
    """The gold reward `gold_source` named, as a function (prompts, responses, **columns) → list[float] of
    one score per response; None for None. A gold function's None (does not apply) is refused: a gold
    reward scores every response it is asked about."""
    if source is None:
        return None
    fn = gold if source == "gold" else FunctionReward(source, "gold")

    def score(prompts: Sequence, responses: Sequence[str], **columns) -> list[float]:
        out = fn(prompts, responses, **columns)
        if bool(out.isnan().any()):
            n = int(out.isnan().sum())
            raise TetherError(f"gold {source!r} returned None for {n} of {len(out)} responses: a gold reward "
                              "must score every response")
        return out.tolist()

    return score


class FunctionReward:
    """A user function `module:function` returning one float per response, as a (B,) float32 tensor."""

    def __init__(self, spec: str, what: str = "reward"):
        self.spec, self.what = spec, what  # `what` starts its error messages ("reward", "gold")
        self.fn, self.file = import_function(spec, what)  # the file imported (None for a built-in module)
        # the columns it takes after (prompts, responses): all with **kwargs (None), else those it names
        self.columns, self.required = column_parameters(self.fn)

    def __call__(self, prompts: Sequence, responses: Sequence[str], **columns) -> torch.Tensor:
        missing = [name for name in self.required if name not in columns]
        if missing:
            have = ", ".join(sorted(columns)) or "none"
            raise TetherError(f"{self.what} {self.spec!r} asks for the column(s) {', '.join(missing)}, which "
                              f"the prompts do not have (their other columns: {have})")
        if self.columns is not None:
            columns = {k: v for k, v in columns.items() if k in self.columns}
        out = self.fn(list(prompts), list(responses), **columns)
        if isinstance(out, list | tuple):  # None: this reward does not apply to that response
            out = [math.nan if v is None else v for v in out]
        scores = torch.as_tensor(out, dtype=torch.float32).flatten()
        if scores.shape[0] != len(responses):
            raise TetherError(
                f"{self.what} {self.spec!r} returned {scores.shape[0]} scores for {len(responses)} responses"
            )
        return scores


def columns_of(examples: Sequence) -> dict[str, list]:
    """The prompt files' other columns of `examples` (tether.data.PromptExample), one list per column in
    the examples' order, None where an example lacks the column: what reward functions receive."""
    names = sorted({k for ex in examples for k in ex.meta})
    return {k: [ex.meta.get(k) for ex in examples] for k in names}


def term_names(specs: Sequence[str]) -> list[str]:
    """A short name for each reward source, logged as reward/<name>: 'gold', the function's name of
    'module:function', 'rm' for a reward model directory; a repeated name gets its position (rm_2)."""
    base = ["gold" if s == "gold" else s.partition(":")[2] if is_function_spec(s) else "rm" for s in specs]
    return [n if base.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(base)]


def imported_code(reward) -> dict[str, dict]:
    """{spec: {"path", "sha256"}} of the file each 'module:function' source of `reward` (one source or a
    WeightedReward) was imported from, for the run's provenance; {} when it imported none."""
    from tether.config import sha256_file

    fns = reward.fns if isinstance(reward, WeightedReward) else [reward]
    return {
        fn.spec: {"path": str(Path(fn.file).resolve()) if fn.file else None,
                  "sha256": sha256_file(fn.file) if fn.file else None}
        for fn in fns
        if isinstance(fn, FunctionReward)
    }


def is_reward_model_dir(spec: str) -> bool:
    """A reward model directory (with config.json), or a Hub id (owner/name[@revision]) that is not a local
    path: a reward model on the Hub, fetched (or read from the HF cache) when loaded."""
    from tether.model_files import HUB_ID

    if Path(spec).exists():
        return Path(spec).is_dir() and (Path(spec) / "config.json").is_file()
    return bool(HUB_ID.match(spec))


def load_reward(spec: str, device=None) -> RewardFn:
    """The reward source a spec names: a reward model directory or Hub id, "gold" or "module:function"."""
    if spec == "gold":
        return gold
    if is_reward_model_dir(spec):
        return RewardModelReward(spec, device=device)
    if is_function_spec(spec):
        return FunctionReward(spec)
    raise TetherError(
        f"unknown reward {spec!r}: expected a reward model directory (with config.json) or Hub id, "
        "'gold', or 'module:function'"
    )


# ------------------------------------------------------------------------------------------------ scores


class RunningMoments:
    """Running mean and (population) std of every score seen, merged batch by batch (Chan et al. 1979)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of scores (B,)."""
        x = x.double().flatten()
        n = x.numel()
        if n == 0:
            return
        mean, m2 = float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std with the statistics so far (std floored at 1e-4)."""
        return ((x - self.mean) / max(self.std, 1e-4)).to(x.dtype)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# What happens to the score of a response that never ended (no EOS, no stop string): scores, ended (B,) bool,
# value → (B,). Ziegler et al. 2019 replaced it with a fixed low score (−1).
NO_EOS = {
    "keep": lambda scores, ended, value: scores,
    "replace": lambda scores, ended, value: torch.where(ended, scores, torch.full_like(scores, value)),
    "offset": lambda scores, ended, value: torch.where(ended, scores, scores + value),
}


def penalize_unended(scores: torch.Tensor, ended: torch.Tensor, mode: str, value: float) -> torch.Tensor:
    """Scores (B,) with those of unended responses kept, replaced by `value` or offset by `value`."""
    return NO_EOS[mode](scores, ended.to(scores.device).bool(), value)


# ------------------------------------------------------------------------------------------------ sums


class WeightedReward:
    """Σ_i w_i·r_i(prompt, response) over several reward sources: (B,) float32.

    terms: (spec, weight) pairs, each spec as `load_reward` takes it; `parts` gives each term's own scores
    (unweighted, NaN where a function returned None) so a trainer can log them under `names`. A NaN part
    adds 0 to the sum (the term does not apply to that response).
    """

    def __init__(self, terms: Sequence[tuple[str, float]], device=None):
        if not terms:
            raise TetherError("no reward source: give reward.source a weight or add reward.extra terms")
        self.specs = [spec for spec, _ in terms]
        self.weights = [float(w) for _, w in terms]
        self.fns = [load_reward(spec, device=device) for spec in self.specs]
        self.names = term_names(self.specs)

    def parts(self, prompts: Sequence, responses: Sequence[str], **columns) -> list[torch.Tensor]:
        return [fn(prompts, responses, **columns) for fn in self.fns]

    def combine(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([w * p for w, p in zip(self.weights, parts, strict=True)]).nansum(0)

    def __call__(self, prompts: Sequence, responses: Sequence[str], **columns) -> torch.Tensor:
        return self.combine(self.parts(prompts, responses, **columns))


def load_weighted_reward(terms: Sequence[tuple[str, float]], device=None) -> RewardFn:
    """The reward of several weighted sources; a single source of weight 1 is that source itself (so
    `load_weighted_reward([("gold", 1.0)]) is gold`), except a Python function, kept in a WeightedReward so
    that a None it returns counts as 0 and it is logged by name."""
    terms = [(spec, w) for spec, w in terms if w != 0]
    if len(terms) == 1 and terms[0][1] == 1.0 and not is_function_spec(terms[0][0]):
        return load_reward(terms[0][0], device=device)
    return WeightedReward(terms, device=device)
