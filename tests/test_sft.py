"""`tether sft` end to end on a tiny random Llama: outputs, an independently recomputed test loss, training
progress, resume after SIGKILL and after SIGTERM (identical final weights), bad input.

The reference run and every resumed run use the same overrides (8 steps of 8 examples from 32, a checkpoint
every 2 steps, eval every 4); on CPU in float32 a resumed run must end with bit-identical weights.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from plumbing_helpers import sft_config, sft_overrides, sft_setup, tiny_model, write_jsonl
from safetensors.torch import load_file

from tether.commands import sft as sft_command
from tether.data import SFTTokens
from tether.errors import DataError, TetherError
from tether.trainers import checkpoint as ckpt
from tether.trainers.base import Loop
from tether.trainers.metrics import read_metrics
from tether.trainers.sft import SFTTask, train_sft

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    sft_command.add_arguments(parser)
    return sft_command.run(parser.parse_args([str(a) for a in argv]))


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return sft_setup(tmp_path_factory.mktemp("sft"))


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """An uninterrupted run through the command, with the overrides every resume test uses."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _run("--out", out, *sft_overrides(setup, eval_every=4)) == 0
    return out


def test_sft_loss_is_the_mean_nll_of_completion_tokens():
    """Recomputed by hand: for each completion token (EOS included) −log softmax(logits at the previous
    position)[token], averaged over the 3 + 2 = 5 completion tokens of the batch."""
    model, a, b, c, eos = tiny_model(), 4, 5, 6, 3
    items = [SFTTokens([a, b], [c, eos]), SFTTokens([c], [a, b, eos])]
    task = SFTTask(pad_value=0, micro_batch_size=2)
    loss, _ = task.loss(model, task.collate(items), num_units=task.count(items))
    nll = []
    for x in items:
        seq = x.prompt_ids + x.completion_ids
        logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].double(), -1)
        nll += [-logp[len(x.prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(x.completion_ids)]
    assert task.count(items) == 5 and float(loss.detach()) == pytest.approx(sum(nll) / 5, rel=1e-5)


def test_a_run_writes_config_metrics_checkpoints_model_and_summary(reference, setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = read_metrics(reference)
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 9))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]
    assert all(r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"])) for r in evals)
    assert [s for s, _ in ckpt.list_checkpoints(reference / "checkpoints")] == [4, 6, 8]  # keep_last=3
    cfg_text = (reference / "config.yaml").read_text()
    assert "provenance:" in cfg_text and str(setup["train"]) in cfg_text
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["test_loss"] == evals[-1]["test_loss"]

    # The test loss, recomputed from the saved model: summed NLL of completion tokens / their count.
    model = AutoModelForCausalLM.from_pretrained(reference / "model").eval()
    tok = AutoTokenizer.from_pretrained(reference / "model")
    total, count = 0.0, 0
    for line in setup["test"].read_text().splitlines():
        rec = json.loads(line)
        p, c = tok(rec["prompt"])["input_ids"], tok(rec["completion"])["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        total -= sum(logp[len(p) - 1 + t, x].item() for t, x in enumerate(c))
        count += len(c)
    assert summary["test_loss"] == pytest.approx(total / count, rel=1e-5)


def test_parameters_change_and_loss_falls_on_a_fixed_batch(setup, tmp_path):
    """8 examples and batch_size 8: every step sees the same batch."""
    first8 = [json.loads(x) for x in setup["train"].read_text().splitlines()[:8]]
    fixed = write_jsonl(tmp_path / "fixed.jsonl", first8)
    cfg = sft_config({**setup, "train": fixed}, max_steps=12, save_every=0)
    cfg.data.test = None
    run = train_sft(cfg, tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(run) if r["kind"] == "train"]
    assert len(losses) == 12 and losses[-1] < 0.6 * losses[0]
    before = load_file(setup["model"] / "model.safetensors")
    after = _final_weights(run)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_after_sigkill_gives_identical_weights(reference, setup, tmp_path):
    """A subprocess runs the same command and SIGKILLs itself right after optimizer step 5 (checkpoints
    exist for steps 2 and 4); `--resume` continues from step 4 and must end bit-identical."""
    out = tmp_path / "run"
    script = (
        "import os, signal, sys, torch\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import plumbing_helpers\n"
        "from tether.trainers.base import Loop\n"
        "real = Loop.optimizer_step\n"
        "def step_then_die(self):\n"
        "    info = real(self)\n"
        "    if self.state.step == 5:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return info\n"
        "Loop.optimizer_step = step_then_die\n"
        "import test_sft\n"
        "test_sft._run(*sys.argv[1:])\n"
    )
    argv = ["--out", str(out), *sft_overrides(setup, eval_every=4)]
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ckpt.find_latest(out / "checkpoints") == out / "checkpoints" / "step-4"
    assert not (out / "model").exists()

    assert _run("--out", out, "--resume") == 0  # the run's own config.yaml
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == list(range(1, 9))
    ref, got = _final_weights(reference), _final_weights(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_sigterm_saves_a_checkpoint_then_resume_is_identical(reference, setup, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = Loop.optimizer_step

    def step_then_term(self):
        info = real(self)
        if self.state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: save at the end of this step
        return info

    monkeypatch.setattr(Loop, "optimizer_step", step_then_term)
    argv = ["--out", out, *sft_overrides(setup, eval_every=4)]
    before = signal.getsignal(signal.SIGTERM)
    assert _run(*argv) == 143
    assert ckpt.find_latest(out / "checkpoints") == out / "checkpoints" / "step-3"
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    monkeypatch.undo()
    assert _run(*argv, "--resume") == 0
    ref, got = _final_weights(reference), _final_weights(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_bad_data_names_file_and_line(setup, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(DataError, match=rf"^{bad}:2: missing column 'completion'"):
        _run("--out", tmp_path / "run", *sft_overrides(setup), f"data.train={bad}")
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": " ".join(["a"] * 20), "completion": "b"}])
    with pytest.raises(DataError, match=rf"^{long}:1: prompt is 20 tokens"):
        _run("--out", tmp_path / "run2", *sft_overrides(setup), f"data.train={long}")


def test_an_existing_run_is_not_overwritten_without_resume(reference, setup):
    with pytest.raises(TetherError, match="already holds a run"):
        _run("--out", reference, *sft_overrides(setup))


def test_loop_config_rejects_a_batch_that_does_not_split(setup, tmp_path):
    with pytest.raises(TetherError, match="train.batch_size must be a multiple of micro_batch_size"):
        train_sft(sft_config(setup, batch_size=6, micro_batch_size=4), tmp_path / "run")
