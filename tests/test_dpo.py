"""`tether dpo` on a tiny random Llama: losses against hand computations (the first step with π = π_ref, soft
labels, every loss type), precomputed against per-step reference log-probs, learning a fixed batch, the
held-out evaluation, resume, bad input.

Notation: ℓ(x) = −log σ(x) = log(1 + e^{−x}); for a pair,
h = (log π − log π_ref)(y_w) − (log π − log π_ref)(y_l) with log π(y|x) the sum of the response tokens'
log-probs (EOS included). DPO's loss is ℓ(βh) (Rafailov et al. 2023, eq. 7). Log-probs "by hand" run each
prompt + response alone through the model (no padding, no masks, no position ids) and add up log_softmax at
the response tokens in float64: an independent computation of what the trainer gets from padded, batched
forward passes.
"""

import argparse
import json
import math
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from plumbing_helpers import WORDS, tiny_tokenizer, write_jsonl, write_model_dir
from safetensors.torch import load_file

from tether.commands import dpo as dpo_command
from tether.config import DPOConfig, load_config
from tether.errors import DataError, TetherError
from tether.trainers import checkpoint as ckpt
from tether.trainers import dpo
from tether.trainers.base import Loop
from tether.trainers.dpo import DPOPair, DPOTask, attach_reference, load_causal_lm, load_dpo_pairs
from tether.trainers.metrics import read_metrics

LOG2 = math.log(2)


def reversal_pairs(n: int, seed: int) -> list[dict]:
    """Prompt: 1-3 random words; chosen: the prompt reversed; rejected: as many other random words (never the
    same as chosen); label: a soft P(chosen ≻ rejected) in [0.6, 1]."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
        chosen = " ".join(reversed(words))
        other = [rng.choice(WORDS) for _ in words]
        while " ".join(other) == chosen:  # a pair of equal responses cannot be learned (h = 0 always)
            other = [rng.choice(WORDS) for _ in words]
        label = round(rng.uniform(0.6, 1.0), 2)
        out.append({"prompt": " ".join(words), "chosen": chosen, "rejected": " ".join(other), "label": label})
    return out


def overrides(paths: dict[str, Path], *more: str, **train) -> list[str]:
    """A small, fast run: 12 steps over the same 16 pairs (batch_size = the data), micro-batches of 8,
    a checkpoint every 4 steps, eval every 6 (KL on 4 held-out prompts, up to 4 new tokens)."""
    loop = {"lr": 1e-2, "batch_size": 16, "micro_batch_size": 8, "max_steps": 12, "save_every": 4,
            "eval_every": 6, "keep_last": 2, "progress": False, **train}
    return [
        f"policy={paths['policy']}",
        f"data.train={paths['train']}",
        f"data.test={paths['test']}",
        "data.max_length=16",
        "beta=0.5",
        "eval.kl_prompts=4",
        "eval.max_new_tokens=4",
        *(f"train.{k}={v}" for k, v in loop.items()),
        *more,
    ]


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    dpo_command.add_arguments(parser)
    return dpo_command.run(parser.parse_args([str(a) for a in argv]))


def config(paths, *more: str) -> DPOConfig:
    return load_config(DPOConfig, None, overrides(paths, *more))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    return {
        "policy": write_model_dir(tmp / "policy", seed=0),
        "other": write_model_dir(tmp / "other", seed=1),  # a reference that differs from the policy
        "train": write_jsonl(tmp / "train.jsonl", reversal_pairs(16, seed=1)),
        "test": write_jsonl(tmp / "test.jsonl", reversal_pairs(8, seed=2)),
    }


@pytest.fixture(scope="module")
def reference_run(paths, tmp_path_factory):
    """An uninterrupted run through the command (reference log-probs precomputed, the default)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _run("--out", out, *overrides(paths)) == 0
    return out


def items_of(paths, split: str, *more: str) -> list[DPOPair]:
    cfg = config(paths, *more)
    return load_dpo_pairs(paths[split], tiny_tokenizer(), cfg.data)


def logprob_by_hand(model, prompt: list[int], response: list[int], reduction: str = "sum") -> float:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)  # (T, V)
    total = sum(float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(response))
    return total if reduction == "sum" else total / len(response)


def h_by_hand(policy, ref, pair: DPOPair, reduction: str = "sum") -> float:
    t = pair.tokens
    lp = {
        (name, side): logprob_by_hand(m, t.prompt_ids, ids, reduction)
        for name, m in (("pol", policy), ("ref", ref))
        for side, ids in (("w", t.chosen_ids), ("l", t.rejected_ids))
    }
    return (lp["pol", "w"] - lp["ref", "w"]) - (lp["pol", "l"] - lp["ref", "l"])


def ell(x: float) -> float:
    return math.log1p(math.exp(-x))


# ------------------------------------------------------------------------------------------------ the losses


@pytest.mark.parametrize(
    "more, expected",
    [
        ([], LOG2),
        (["label_smoothing=0.2"], LOG2),
        (["loss_type=robust", "label_smoothing=0.1"], LOG2),
        (["loss_type=hinge"], 1.0),
        (["loss_type=ipo"], 1.0),
        (["loss_type=ipo", "beta=0.1"], 25.0),
    ],
)
def test_loss_with_policy_equal_to_reference(paths, more, expected):
    """π = π_ref makes every log-ratio 0, so h = 0 for every pair, whatever the responses:
    sigmoid: ℓ(0) = −log σ(0) = −log(1/2) = log 2; with label smoothing ε = 0.2, 0.8·ℓ(0) + 0.2·ℓ(−0) = log 2;
    robust (ε = 0.1): [0.9·ℓ(0) − 0.1·ℓ(0)] / (1 − 0.2) = 0.8·log 2 / 0.8 = log 2; hinge: relu(1 − β·0) = 1;
    ipo: (0 − 1/(2β))² = 1/(4β²) = 1 at β = 0.5 and 25 at β = 0.1. Implicit rewards and margin are 0, and
    accuracy (chosen strictly ahead) is 0."""
    cfg = config(paths, *more)
    policy = load_causal_lm(str(paths["policy"]), "float32")
    task = DPOTask(cfg, tiny_tokenizer(), reference=load_causal_lm(str(paths["policy"]), "float32"))
    items = items_of(paths, "train")[:8]
    loss, metrics = task.loss(policy, task.collate(items), num_units=8)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)
    assert abs(float(metrics["margin"])) < 1e-5 and abs(float(metrics["chosen_reward"])) < 1e-5


def test_soft_labels_and_hard_labels_against_hand_computation(paths):
    """Policy and reference are two different random models, so h ≠ 0. With β = 0.5 and soft labels p:
    the loss of the batch is (1/B)·Σ_i [p_i·ℓ(βh_i) + (1 − p_i)·ℓ(−βh_i)], and the task returns the
    batch's sum divided by num_units, i.e. that mean × B / num_units. Hard labels (use_soft_labels off)
    make every p_i = 1: (1/B)·Σ ℓ(βh_i). A label of 1/2 weighs both directions equally, so that pair's
    term is ℓ(βh)/2 + ℓ(−βh)/2 whatever the sign of h."""
    policy = load_causal_lm(str(paths["policy"]), "float32")
    ref = load_causal_lm(str(paths["other"]), "float32")
    items = items_of(paths, "train", "data.use_soft_labels=true")[:3]
    items[2].tokens.label = 0.5
    hs = [h_by_hand(policy, ref, x) for x in items]
    assert all(abs(h) > 0.05 for h in hs)  # the test would not tell soft from hard labels otherwise
    terms = [x.label * ell(0.5 * h) + (1 - x.label) * ell(-0.5 * h) for x, h in zip(items, hs, strict=True)]
    soft = sum(terms) / 3
    hard = sum(ell(0.5 * h) for h in hs) / 3

    task = DPOTask(config(paths, "data.use_soft_labels=true"), tiny_tokenizer(), reference=ref)
    loss, metrics = task.loss(policy, task.collate(items), num_units=6)
    assert float(loss.detach()) == pytest.approx(soft * 3 / 6, rel=1e-5)
    assert float(metrics["margin"]) == pytest.approx(0.5 * sum(hs) / 3, rel=1e-4, abs=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(sum(h > 0 for h in hs) / 3)
    plain = DPOTask(config(paths), tiny_tokenizer(), reference=ref)
    loss, _ = plain.loss(policy, plain.collate(items), num_units=3)
    assert float(loss.detach()) == pytest.approx(hard, rel=1e-5) and abs(hard - soft) > 1e-3


def test_ipo_uses_length_averaged_log_probs(paths):
    """IPO (Azar et al. 2024) regresses h onto 1/(2β) with h from log-probs averaged over response tokens
    (DPO_LOGPROB_REDUCTION): the loss is (1/B)·Σ (h_i − 1/(2β))², β = 0.5, h_i computed by hand with means."""
    policy = load_causal_lm(str(paths["policy"]), "float32")
    ref = load_causal_lm(str(paths["other"]), "float32")
    items = items_of(paths, "train")[:4]
    expected = sum((h_by_hand(policy, ref, x, "mean") - 1.0) ** 2 for x in items) / 4
    task = DPOTask(config(paths, "loss_type=ipo"), tiny_tokenizer(), reference=ref)
    loss, _ = task.loss(policy, task.collate(items), num_units=4)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_precomputed_reference_log_probs_equal_per_step_ones(paths, tmp_path):
    """attach_reference scores every pair once (batches of micro_batch_size) and caches them in
    RUN/ref_logprobs.pt; each equals the log-prob by hand, and a batch's loss is the same whether its
    reference log-probs come from the cache or from a forward pass of the reference at the step."""
    cfg = config(paths, f"reference={paths['other']}")
    ref = load_causal_lm(str(paths["other"]), "float32")
    policy = load_causal_lm(str(paths["policy"]), "float32")
    items = items_of(paths, "train")
    attach_reference(cfg, tmp_path, ref, {"train": items}, pad_value=0, device="cpu")
    assert (tmp_path / "ref_logprobs.pt").is_file()
    for x in items[:4]:
        by_hand = (logprob_by_hand(ref, x.tokens.prompt_ids, x.tokens.chosen_ids),
                   logprob_by_hand(ref, x.tokens.prompt_ids, x.tokens.rejected_ids))
        assert x.ref == pytest.approx(by_hand, abs=1e-4)

    batch = items[3:9]
    cached = DPOTask(cfg, tiny_tokenizer(), reference=None)
    per_step = DPOTask(cfg, tiny_tokenizer(), reference=ref)
    plain = [DPOPair(x.tokens) for x in batch]  # no ref: scored at the step
    assert "ref_chosen" in cached.collate(batch) and "ref_chosen" not in per_step.collate(plain)
    a, ma = cached.loss(policy, cached.collate(batch), num_units=6)
    b, mb = per_step.loss(policy, per_step.collate(plain), num_units=6)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-6)
    assert float(ma["margin"]) == pytest.approx(float(mb["margin"]), rel=1e-5, abs=1e-6)

    other_items = items_of(paths, "test")  # another split under the same name: the cache does not fit
    with pytest.raises(TetherError, match="computed for other pairs"):
        attach_reference(cfg, tmp_path, ref, {"train": other_items}, pad_value=0, device="cpu")


def test_evaluation_at_the_start_gives_log_2_and_zero_kl(paths, tmp_path):
    """Before any update π = π_ref: every held-out pair's loss is log 2 (h = 0, see above), no pair counts as
    won, and the KL of the policy's own samples from the reference is exactly 0 per token (the two models'
    next-token distributions are the same), so 0 summed over each response."""
    cfg = config(paths)
    policy = load_causal_lm(str(paths["policy"]), "float32")
    task = DPOTask(cfg, tiny_tokenizer(), reference=load_causal_lm(str(paths["policy"]), "float32"))
    loop = Loop(cfg.train, tmp_path, policy, tiny_tokenizer(), total_steps=1)
    out = task.evaluate(loop, items_of(paths, "test"))
    assert out["test_loss"] == pytest.approx(LOG2, abs=1e-5) and out["test_accuracy"] == 0
    assert out["test_pairs"] == 8 and out["kl_prompts"] == 4
    assert out["kl_from_reference"] == pytest.approx(0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ runs


def test_first_step_loss_is_log_2_and_a_fixed_batch_is_learned(reference_run):
    """Step 1's loss is computed before any update, with π = π_ref: log 2 (derivation above). The data is
    one batch (16 pairs, batch_size 16), so every step sees the same pairs and the loss must fall well
    below log 2 while the preference accuracy reaches 1; the held-out evaluation logs its metrics and a
    KL that has moved off 0."""
    records = read_metrics(reference_run)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 13)) and [r["step"] for r in evals] == [6, 12]
    assert train[0]["loss"] == pytest.approx(LOG2, abs=1e-5) and abs(train[0]["margin"]) < 1e-5
    assert train[-1]["loss"] < 0.2 and train[-1]["accuracy"] == 1.0 and train[-1]["margin"] > 1.0
    keys = {"test_loss", "test_accuracy", "test_margin", "test_chosen_reward", "test_rejected_reward",
            "kl_from_reference", "kl_from_reference_stderr", "kl_prompts"}
    assert all(keys <= r.keys() for r in evals) and evals[-1]["kl_from_reference"] > 0.01

    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["stage"] == "dpo" and summary["steps"] == 12 and summary["loss_type"] == "sigmoid"
    ins = summary["instruments"]
    assert ins["preference_accuracy"] == {"value": evals[-1]["test_accuracy"], "n": 8}
    assert ins["kl_from_reference"]["n"] == 4 and ins["kl_from_reference"]["unit"] == "nats"
    assert (reference_run / "ref_logprobs.pt").is_file() and (reference_run / "config.yaml").is_file()


def test_parameters_change(reference_run, paths):
    before = load_file(paths["policy"] / "model.safetensors")
    after = load_file(reference_run / "model" / "model.safetensors")
    weights = [k for k in after if k.endswith("proj.weight")]
    assert weights and all(not torch.equal(before[k], after[k]) for k in weights)


def test_per_step_reference_trains_like_the_precomputed_one(reference_run, paths, tmp_path):
    """precompute_reference=false scores the reference at each step instead: the same losses and, to float
    rounding (batches padded differently), the same weights; no cache file."""
    out = tmp_path / "run"
    assert _run("--out", out, *overrides(paths, "precompute_reference=false", max_steps=6, eval_every=0)) == 0
    ref_losses = [r["loss"] for r in read_metrics(reference_run) if r["kind"] == "train"][:6]
    got = [r["loss"] for r in read_metrics(out) if r["kind"] == "train"]
    assert got == pytest.approx(ref_losses, rel=1e-4)
    assert not (out / "ref_logprobs.pt").exists()


def test_sigterm_then_resume_gives_identical_weights(reference_run, paths, tmp_path, monkeypatch):
    """SIGTERM after step 5 saves checkpoint step-5; `--resume` reuses RUN/ref_logprobs.pt (scoring the
    reference again would fail here) and continues to step 12, bit-identical to the uninterrupted run."""
    out = tmp_path / "run"
    real = Loop.optimizer_step

    def step_then_term(self):
        info = real(self)
        if self.state.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return info

    monkeypatch.setattr(Loop, "optimizer_step", step_then_term)
    assert _run("--out", out, *overrides(paths)) == 143
    assert ckpt.find_latest(out / "checkpoints") == out / "checkpoints" / "step-5"
    monkeypatch.undo()

    def no_rescoring(*args, **kwargs):
        raise AssertionError("the reference was scored again")

    monkeypatch.setattr(dpo, "reference_logprobs", no_rescoring)
    assert _run("--out", out, "--resume") == 0
    ref = load_file(reference_run / "model" / "model.safetensors")
    got = load_file(out / "model" / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == list(range(1, 13))


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "line2, options, problem",
    [
        ('{"prompt": "b", "chosen": "a"}', [], "missing column 'rejected'"),
        ('{"prompt": "b", "chosen": "a", "rejected": ""}', [], "empty rejected"),
        ('{"prompt": "b", "chosen": "a", "rejected": "c"}', ["data.use_soft_labels=true"],
         "missing column 'label'"),
        ('{"prompt": "b", "chosen": "a", "rejected": "c", "label": 1.5}', ["data.use_soft_labels=true"],
         "column 'label' must be a probability"),
    ],
)
def test_bad_data_names_file_and_line(paths, tmp_path, line2, options, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "b", "chosen": "a", "rejected": "c", "label": 0.9}\n' + line2 + "\n")
    with pytest.raises(DataError, match=rf"^{bad}:2: {problem}"):
        _run("--out", tmp_path / "run", *overrides(paths), f"data.train={bad}", *options)


@pytest.mark.parametrize(
    "more, problem",
    [
        (["loss_type=ipo", "data.use_soft_labels=true"], "use_soft_labels needs loss_type sigmoid"),
        (["loss_type=hinge", "label_smoothing=0.1"], "does not take label_smoothing"),
        (["label_smoothing=0.5"], "label_smoothing must be in"),
        (["beta=0"], "beta must be > 0"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(paths, tmp_path, more, problem):
    with pytest.raises(TetherError, match=problem):
        _run("--out", tmp_path / "run", *overrides(paths), *more)
    assert not (tmp_path / "run").exists()


def test_config_file_loads():
    cfg = load_config(DPOConfig, Path(__file__).resolve().parents[1] / "configs" / "dpo.yaml")
    assert cfg.policy == "runs/sft/model" and cfg.data.train.endswith("prefs.train.jsonl")
    assert cfg.loss_type == "sigmoid" and cfg.precompute_reference and cfg.reference is None
