"""tether.trainers.base.Loop: schedule, accumulation, clipping, NaN guard, atomic resumable checkpoints.

The loss in these tests is `tether.losses.sft_loss` on a fixed batch of a tiny random Llama; the references
are independent: the gradient norm is recomputed with a plain `backward()` on a copy of the model, the
schedule values are worked out by hand in each test.
"""

import copy
import math
import os
import random

import numpy as np
import pytest
import torch
from plumbing_helpers import tiny_model, tiny_tokenizer, word_id

from tether.config import LoopConfig
from tether.data import SFTTokens, collate_sft, position_ids
from tether.errors import TetherError
from tether.losses import sft_loss
from tether.trainers import checkpoint as ckpt
from tether.trainers.base import Loop, TrainingDiverged, lr_factor
from tether.trainers.metrics import read_metrics

A, B, C, D, EOS = word_id("a"), word_id("b"), word_id("c"), word_id("d"), 3
ITEMS = [SFTTokens([A, B], [C, D, EOS]), SFTTokens([B], [A, EOS]), SFTTokens([C, C, D], [EOS]),
         SFTTokens([D], [A, B, C, EOS])]


def _loop(tmp_path, model=None, total_steps=10, **cfg):
    cfg = LoopConfig(**{"lr": 1e-2, "progress": False, **cfg})
    return Loop(cfg, tmp_path, model or tiny_model(), tiny_tokenizer(), total_steps=total_steps)


def _loss(model, items, num_tokens):
    batch = collate_sft(items, 0)
    ids, attn = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits
    loss, _ = sft_loss(logits[:, :-1], ids[:, 1:], batch["loss_mask"][:, 1:], num_tokens=num_tokens)
    return loss


def _train_step(loop, items, n_micro=1):
    total = sum(len(x.completion_ids) for x in items)
    size = len(items) // n_micro
    loss_sum = 0.0
    for j in range(n_micro):
        with loop.accumulate(sync=j == n_micro - 1):
            loss = _loss(loop.model, items[j * size : (j + 1) * size], total)
            loop.backward(loss)
        loss_sum += float(loss.detach())
    return loss_sum, loop.optimizer_step()


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_factor_by_hand():
    # warm-up 4 of 10 steps: (s + 1) / 4, then linear 1 - (s - 4) / 6, or cosine ½(1 + cos(π (s - 4) / 6))
    assert [lr_factor(s, 4, 10, "constant") for s in (0, 1, 2, 3, 9)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_factor(s, 4, 10, "linear") for s in (4, 7, 10)] == [1.0, 0.5, 0.0]
    assert lr_factor(7, 4, 10, "cosine") == pytest.approx(0.5) and lr_factor(10, 4, 10, "cosine") == 0.0


def test_scheduler_warms_up_per_applied_step(tmp_path):
    loop = _loop(tmp_path, warmup_steps=2, schedule="linear", total_steps=4)
    lrs = [_train_step(loop, ITEMS)[1]["lr"] for _ in range(4)]
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.005])  # 1e-2 × (1/2, 2/2, 1 - 0/2, 1 - 1/2)


def test_accumulated_micro_batches_equal_one_batch(tmp_path):
    """Each micro-batch loss is divided by the step's total token count, so 2 micro-batches of 2 give the
    same gradients (up to float rounding) as 1 batch of 4; three AdamW steps keep the weights together."""
    one, two = _loop(tmp_path / "one"), _loop(tmp_path / "two")
    for _ in range(3):
        loss1, _ = _train_step(one, ITEMS, n_micro=1)
        loss2, _ = _train_step(two, ITEMS, n_micro=2)
        assert loss1 == pytest.approx(loss2, rel=1e-5)
    for k, v in _weights(one.model).items():
        assert torch.allclose(v, _weights(two.model)[k], atol=1e-5), k


def test_parameters_change_and_loss_falls_on_a_fixed_batch(tmp_path):
    loop = _loop(tmp_path)
    before = _weights(loop.model)
    losses = [_train_step(loop, ITEMS)[0] for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]
    assert any(not torch.equal(v, _weights(loop.model)[k]) for k, v in before.items())


def test_grad_norm_is_the_norm_before_clipping_and_clipping_applies(tmp_path):
    model = tiny_model()
    reference = copy.deepcopy(model)
    total = sum(len(x.completion_ids) for x in ITEMS)
    _loss(reference, ITEMS, total).backward()
    expected = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in reference.parameters()))
    loop = _loop(tmp_path, model=model, max_grad_norm=0.01)
    seen = []

    def grad_norm_at_step(optimizer, args, kwargs):
        seen.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in loop.params)))

    loop.optimizer.optimizer.register_step_pre_hook(grad_norm_at_step)
    _, info = _train_step(loop, ITEMS)
    assert expected > 0.01 and info["grad_norm"] == pytest.approx(expected, rel=1e-4)
    assert seen[0] == pytest.approx(0.01, rel=1e-4)  # the optimizer saw the clipped gradient


def test_nan_steps_are_skipped_then_the_run_stops_with_the_last_checkpoint_intact(tmp_path):
    loop = _loop(tmp_path, max_bad_steps=3)
    _train_step(loop, ITEMS)
    good = loop.save()
    weights = _weights(loop.model)
    nan = torch.tensor(float("nan"), requires_grad=True)

    def bad_step():
        with loop.accumulate():
            loop.backward(_loss(loop.model, ITEMS, 10) * nan)
        return loop.optimizer_step()

    assert bad_step()["skipped"] == 1.0
    _train_step(loop, ITEMS)  # a finite step resets the streak
    weights = _weights(loop.model)
    assert bad_step()["skipped"] and bad_step()["skipped"]
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps .* last good checkpoint: .*step-1"):
        bad_step()
    assert all(torch.equal(v, _weights(loop.model)[k]) for k, v in weights.items())  # skipped: unchanged
    assert ckpt.find_latest(loop.checkpoints) == good and ckpt.is_complete(good)
    skips = [r for r in read_metrics(tmp_path) if r["kind"] == "skip"]
    assert [r["step"] for r in skips] == [2, 4, 5, 6] and skips[0]["reason"] == "non-finite loss"


def test_a_nan_gradient_with_a_finite_loss_is_skipped(tmp_path):
    loop = _loop(tmp_path)
    weights = _weights(loop.model)
    p = next(loop.model.parameters())
    with loop.accumulate():
        loop.backward(torch.sqrt((p - p.detach()) ** 2).sum())  # loss 0, gradient 0 × ∞ = NaN
    info = loop.optimizer_step()
    assert info["skipped"] and math.isnan(info["grad_norm"])
    assert all(torch.equal(v, _weights(loop.model)[k]) for k, v in weights.items())
    assert read_metrics(tmp_path)[-1]["reason"] == "non-finite gradient"


def test_resume_restores_weights_optimizer_schedule_and_rng(tmp_path):
    loop = _loop(tmp_path, warmup_steps=3)
    for _ in range(2):
        _train_step(loop, ITEMS)
    loop.log({"loss": 1.0})
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    loop.save(extra={"position": 7})
    draws = (random.random(), np.random.rand(), torch.rand(1).item())  # what a resume must bring back
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    for _ in range(2):
        _train_step(loop, ITEMS)
        loop.log({"loss": 2.0})
    final = _weights(loop.model)

    other = _loop(tmp_path, model=tiny_model(seed=9), warmup_steps=3)  # different initial weights
    random.seed(5)
    assert other.resume() == {"position": 7} and other.state.step == 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [2]  # records past the checkpoint are dropped
    assert other.scheduler.get_last_lr()[0] == pytest.approx(1e-2)  # (2 + 1) / 3 of the peak
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    for _ in range(2):
        _train_step(other, ITEMS)
    assert all(torch.equal(v, _weights(other.model)[k]) for k, v in final.items())


def test_last_k_checkpoints_are_kept_and_each_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    loop = _loop(tmp_path, keep_last=2)
    for _ in range(4):
        _train_step(loop, ITEMS)
        loop.save()
    assert [s for s, _ in ckpt.list_checkpoints(loop.checkpoints)] == [3, 4]
    loaded = AutoModelForCausalLM.from_pretrained(loop.checkpoints / "step-4")
    assert all(torch.equal(v, _weights(loop.model)[k]) for k, v in loaded.state_dict().items())


def test_a_crash_during_save_leaves_no_valid_looking_checkpoint(tmp_path, monkeypatch):
    loop = _loop(tmp_path)
    _train_step(loop, ITEMS)
    first = loop.save()
    _train_step(loop, ITEMS)

    real_save = torch.save

    def crash_on_state(obj, f, *a, **kw):  # the optimizer state: written after the weights and RNG
        if str(getattr(f, "name", f)).endswith(ckpt.STATE_FILE):  # a path, or the file tether opened
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", crash_on_state)
    with pytest.raises(OSError):
        loop.save()
    monkeypatch.undo()
    assert not (loop.checkpoints / "step-2").exists()
    assert ckpt.find_latest(loop.checkpoints) == first
    partial = ckpt.tmp_dir(loop.checkpoints, 2)
    assert (partial / "model.safetensors").exists()  # weights were written, but no marker
    with pytest.raises(TetherError, match="not a complete checkpoint"):
        ckpt.check_complete(partial)
    with pytest.raises(TetherError, match="not a complete checkpoint"):
        _loop(tmp_path / "elsewhere").resume(partial)
    _loop(tmp_path)  # a new loop on the run clears the debris
    assert not partial.exists() and ckpt.find_latest(loop.checkpoints) == first


def test_extra_models_are_optimised_saved_and_restored(tmp_path):
    """A PPO-style value head (a plain module, not an HF model) rides along: same optimizer, own sub-dir."""
    head = torch.nn.Linear(4, 1)
    cfg = LoopConfig(lr=1e-2, progress=False)
    loop = Loop(cfg, tmp_path, tiny_model(), tiny_tokenizer(), total_steps=5, extra_models={"value": head})
    assert any(p is head.weight for p in loop.params)
    with loop.accumulate():
        loop.backward(_loss(loop.model, ITEMS, 10) + loop.models["value"](torch.ones(1, 4)).sum())
    loop.optimizer_step()
    saved = head.weight.detach().clone()
    path = loop.save()
    assert (path / "value" / "model.safetensors").is_file()
    other_head = torch.nn.Linear(4, 1)
    extra = {"value": other_head}
    other = Loop(cfg, tmp_path, tiny_model(), tiny_tokenizer(), total_steps=5, extra_models=extra)
    other.resume()
    assert torch.equal(other_head.weight, saved)


def test_every_file_of_a_checkpoint_is_synced_before_its_marker(tmp_path, monkeypatch):
    """A crash right after the save may leave only what was fsynced: the marker is only worth something if
    every file of step-N (weights, tokenizer, optimizer state, RNG, the value head in its own directory) and
    every directory entry was fsynced before COMPLETE existed; the rename is made durable by syncing
    RUN/checkpoints after it. os.fsync is wrapped to record, for each synced file or directory (by inode),
    whether the marker existed at that moment."""
    cfg = LoopConfig(lr=1e-2, progress=False)
    extra = {"value": torch.nn.Linear(4, 1)}
    loop = Loop(cfg, tmp_path, tiny_model(), tiny_tokenizer(), total_steps=5, extra_models=extra)
    _train_step(loop, ITEMS)
    tmp, final = ckpt.tmp_dir(loop.checkpoints, 1), ckpt.step_dir(loop.checkpoints, 1)
    synced = []  # (inode, marker existed, step-1 existed)
    real_fsync = os.fsync

    def recording_fsync(fd):
        marker = (tmp / ckpt.MARKER).exists() or (final / ckpt.MARKER).exists()
        synced.append((os.fstat(fd).st_ino, marker, final.exists()))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    assert loop.save() == final
    monkeypatch.undo()
    before_marker = {ino for ino, marker, _ in synced if not marker}
    files = [p for p in final.rglob("*") if p.is_file() and p.name != ckpt.MARKER]
    dirs = [final, *(p for p in final.rglob("*") if p.is_dir())]
    assert {"model.safetensors", ckpt.STATE_FILE, "rng-0.pt", "tokenizer.json"} <= {p.name for p in files}
    assert (final / "value").is_dir()
    unsynced = [str(p.relative_to(final)) for p in files + dirs if p.stat().st_ino not in before_marker]
    assert unsynced == []
    assert (final / ckpt.MARKER).stat().st_ino in {ino for ino, _, _ in synced}
    assert loop.checkpoints.stat().st_ino in {ino for ino, _, renamed in synced if renamed}
