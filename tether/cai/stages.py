"""RL-CAI end to end: label a policy's samples (or a preference file) with a constitutional judge, and the
lab's AI-feedback stage that `tether run --feedback ai` puts where the simulated human labels were.

    from tether.cai import run_labelling
    run_labelling("tether/configs/constitution.yaml", "lab", "runs/cai", prompts="prompts.jsonl",
                  policy="runs/demo/sft/model")
    # then: tether rm data.train=runs/cai/prefs.jsonl data.use_soft_labels=true ...  (or tether dpo)
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tether import rundir
from tether.cai.constitution import load_constitution
from tether.cai.judges import LabRater, load_judge
from tether.cai.label import Pair, label_pairs, pairs_from_file, sample_pairs, write_labels
from tether.errors import TetherError
from tether.files import write_json, write_text_atomic
from tether.rewards import require_lab_prompts


def load_policy(policy_dir: str | Path):
    """(model, tokenizer) of a causal-LM directory, in eval mode; TetherError if it cannot be loaded."""
    from tether.model_files import load_causal_lm, load_tokenizer

    return load_causal_lm(policy_dir).eval(), load_tokenizer(policy_dir)


def _lab_labelers(lab_dir):
    from tether.lab import LabConfig, open_lab

    return LabConfig.from_yaml(open_lab(lab_dir).config).labeler_mix()


def _made_by(stage: str, *names: str):
    """A directory from before tether.rundir's markers: only these files, its summary's "stage" `stage`."""
    return rundir.holds_only({*names, "summary.json"}, lambda s: s.get("stage") == stage)


@rundir.claiming("cai label", "out", _made_by("cai-label", "prefs.jsonl", "card.json", "card.txt"))
def run_labelling(constitution: str | Path | None, judge: str, out: str | Path, *, prompts=None, policy=None,
                  pairs=None, lab=None, samples: int = 2, seed: int = 0, max_new_tokens: int = 64,
                  temperature: float = 1.0, limit: int | None = None) -> dict:
    """`tether cai label`: pairs of `policy`'s samples on the prompts file `prompts`, or the pairs of the
    preference file `pairs`, labelled by `judge` ("lab" or "llm:DIR") under the constitution; writes
    OUT/prefs.jsonl, OUT/card.json, OUT/card.txt and OUT/summary.json (last: a finished labelling).
    `lab`: a built lab whose simulated labelers the card compares against (lab prompts only)."""
    from tether.data import load_prompts

    if (pairs is None) == (prompts is None or policy is None):
        raise TetherError("give either --prompts and --policy (label a policy's samples) or --pairs FILE")
    if samples < 2:
        raise TetherError(f"--samples must be at least 2, got {samples}")
    start = time.perf_counter()
    con = load_constitution(constitution)
    dropped = 0
    if pairs is not None:
        todo = pairs_from_file(pairs, seed, limit)
    else:
        model, tokenizer = load_policy(policy)
        examples = load_prompts(prompts)[:limit]
        todo, dropped = sample_pairs(model, tokenizer, examples, samples, seed, max_new_tokens, temperature)
        del model
    judge_ = load_judge(judge, con, seed)
    records, card = label_pairs(judge_, todo, _lab_labelers(lab) if lab else None, seed)
    card["dropped_prompts_all_same"] = dropped
    write_labels(out, records, card)
    summary = {"stage": "cai-label", "source": str(pairs or policy), "card": card,
               "wall_seconds": time.perf_counter() - start}
    write_json(Path(out) / "summary.json", summary)
    return summary


@rundir.claiming("cai revise", "out", _made_by("cai-revise", "sft.jsonl"))
def run_revision(constitution: str | Path | None, critic: str, out: str | Path, *, prompts, policy,
                 seed: int = 0, max_new_tokens: int = 64, temperature: float = 1.0, limit: int | None = None,
                 critic_tokens: int = 128) -> dict:
    """`tether cai revise` (SL-CAI): one sample of `policy` per prompt, critiqued and revised per principle
    by `critic` ("lab" or "llm:DIR", tether/cai/revise.py); writes OUT/sft.jsonl ({"prompt", "completion"}
    plus the steps) and OUT/summary.json (last). Replies still empty after revision are left out."""
    from tether.cai.label import sample_replies
    from tether.cai.revise import LabCritic, LLMCritic, revise
    from tether.data import load_prompts
    from tether.lab.jsonl import dumps

    start = time.perf_counter()
    con = load_constitution(constitution)
    examples = load_prompts(prompts)[:limit]
    if critic == "lab":  # it edits lab replies by the lab rater's reading of them: lab prompts only
        require_lab_prompts(examples, "the lab critic revises lab prompts only (use --critic llm:MODEL_DIR)")
        critic_ = LabCritic(LabRater(con, seed=seed))
    elif critic.startswith("llm:") and critic[4:]:
        critic_ = LLMCritic(*load_policy(critic[4:]), max_new_tokens=critic_tokens, seed=seed)
    else:
        raise TetherError(f"unknown critic {critic!r}: use 'lab' or 'llm:MODEL_DIR'")
    given, (replies,) = sample_replies(*load_policy(policy), examples, 1, seed, max_new_tokens, temperature)
    records = revise(critic_, con, given, replies)
    kept = [r for r in records if r["completion"].strip()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sft.jsonl", "".join(dumps(r) + "\n" for r in kept))
    summary = {"stage": "cai-revise", "critic": critic, "constitution": con.name, "records": len(kept),
               "dropped_empty": len(records) - len(kept),
               "changed": sum(1 for r in kept if r["completion"] != r["initial"].strip())}
    summary.update(_gold_before_after(kept))
    summary["wall_seconds"] = time.perf_counter() - start
    write_json(out / "summary.json", summary)
    return summary


def _gold_before_after(records: list[dict]) -> dict:
    """On lab prompts: the mean gold reward of the initial replies and of the revisions."""
    from tether.lab import gold_reward, parse_prompt

    try:
        infos = [parse_prompt(r["prompt"]) for r in records]
    except (ValueError, TypeError, AttributeError):
        return {}
    if not records:
        return {}
    before = sum(gold_reward(i, r["initial"]) for i, r in zip(infos, records, strict=True)) / len(records)
    after = sum(gold_reward(i, r["completion"]) for i, r in zip(infos, records, strict=True)) / len(records)
    return {"gold_initial": round(before, 4), "gold_revised": round(after, 4)}


@rundir.claiming("cai feedback", "out", _made_by("cai", "prefs.train.jsonl", "card.json", "card.txt"))
def ai_feedback_stage(lab_dir, policy_dir, out, constitution: str | Path | None = None, prompts: int = 3000,
                      samples: int = 4, seed: int = 0) -> dict:
    """The lab pipeline's comparison stage with AI labels: the lab's training pairs (re-labelled) plus
    pairs of the policy's samples on `prompts` fresh lab prompts, all labelled by the lab rater under the
    constitution. Writes OUT/prefs.train.jsonl (what the reward model or DPO trains on, soft labels in
    `label`), OUT/card.json / card.txt (AI against gold and against the lab's simulated labelers, on the
    same pairs) and OUT/summary.json last."""
    from tether.data import PromptExample
    from tether.lab import LabConfig, open_lab
    from tether.lab.base_model import draw_prompts

    start = time.perf_counter()
    lab = open_lab(lab_dir)
    config = LabConfig.from_yaml(lab.config)
    judge = LabRater(load_constitution(constitution), seed=seed)
    todo = pairs_from_file(lab.data("prefs", "train"), seed)
    for pair in todo:
        pair.human, pair.source = None, "lab"  # the lab's labels are the simulated humans': not used here
    dropped = 0
    if prompts > 0:
        model, tokenizer = load_policy(policy_dir)
        infos = draw_prompts(random.Random(f"{seed}-cai"), config, prompts)
        examples = [PromptExample(i.text, {}, "<lab prompts>", n + 1) for n, i in enumerate(infos)]
        policy_pairs, dropped = sample_pairs(model, tokenizer, examples, samples, seed,
                                             config.max_response_words)
        todo += policy_pairs
    records, card = label_pairs(judge, todo, config.labeler_mix(), seed)
    card["dropped_prompts_all_same"] = dropped
    write_labels(out, records, card, name="prefs.train.jsonl")
    summary = {"stage": "cai", "policy": str(policy_dir), "lab": str(lab.root), "pairs": len(records),
               "policy_pairs": len(todo) - sum(1 for p in todo if p.source == "lab"), "card": card,
               "wall_seconds": time.perf_counter() - start}
    write_json(Path(out) / "summary.json", summary)
    return summary


__all__ = ["Pair", "ai_feedback_stage", "load_policy", "run_labelling", "run_revision"]
