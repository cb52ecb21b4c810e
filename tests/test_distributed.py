"""Two processes on the CPU (gloo), launched as a user launches them (torchrun, accelerate launch).

Supervised stages: the config's train.batch_size is the batch of one optimizer step over all processes, each
process takes half of it and divides its loss by the whole step's count, and DDP sums the gradients (the Loop
scales the loss by the process count since DDP averages). So 2 processes × 4 examples must reach the weights
of 1 process × 8 examples (2 accumulated micro-batches of 2 on each process, against 2 of 4 on one). The
losses and gradient norms agree to float rounding (rel 1e-5); the weights differ by float rounding amplified
by Adam, which divides each update by sqrt(v) (a gradient near 0 turns a rounding difference into an update
difference): measured 1.3e-5 after 4 steps at lr 1e-2, so the tolerance is 1e-4, 1% of one step's size. A
gradient off by the process count (DDP averages) fails the grad_norm check and, through clipping at 1.0, the
weights.

One torchrun launch runs the 2-process SFT, RM, PPO and GRPO runs one after the other (as `tether run` chains
stages in one process), and one accelerate launch the DPO run: each launch costs seconds of imports.

RL stages: each process samples its share of the prompts, so the run differs from a 1-process one; the checks
are that an iteration completes, both processes end with identical weights (gradients were synchronised,
the critic's included), and each logged metric is the mean over the processes of what each computed alone
(tests/dist_worker.py dumps them), tokens_per_s their sum.

Resume: SIGTERM to one process of a 2-process run stops both at the same step with a checkpoint; resuming
with 1 process is refused; resuming with 2 ends with weights identical to an uninterrupted 2-process run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from plumbing_helpers import sft_config, sft_overrides, sft_setup, write_jsonl, write_model_dir
from ppo_helpers import ppo_overrides, ppo_setup
from test_dpo import overrides as dpo_overrides
from test_dpo import reversal_pairs

from tether.cli import main as tether_main
from tether.config import DPOConfig, load_config
from tether.trainers import checkpoint as ckpt
from tether.trainers.dpo import train_dpo
from tether.trainers.metrics import read_metrics
from tether.trainers.sft import train_sft

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKER = TESTS / "dist_worker.py"
TIMEOUT = 240


def env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(launcher: str, dump: Path, *argv) -> list[str]:
    """torchrun or accelerate launch (its torchrun-based launcher: `--cpu` would start a single process)."""
    if launcher == "torchrun":
        head = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        head = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                str(free_port())]
    return [sys.executable, *head, str(WORKER), str(dump), *(str(a) for a in argv)]


def launch(launcher: str, dump: Path, *argv) -> subprocess.CompletedProcess:
    """Run dist_worker.py under `launcher` with 2 processes; argv may chain commands with "+"."""
    proc = subprocess.run(command(launcher, dump, *argv), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rank_weights(dump: Path) -> list[dict[str, torch.Tensor]]:
    """Each process's final weights, as dist_worker.py dumped them (keys "<model name>.<parameter>")."""
    return [torch.load(dump / f"weights-{r}.pt", weights_only=True) for r in (0, 1)]


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


def assert_close(ref: dict, got: dict, atol: float = 1e-4) -> None:
    """`got` (keys "model.<name>") equals `ref` (keys "<name>") within atol."""
    worst = max(float((ref[k] - got[f"model.{k}"]).abs().max()) for k in ref)
    assert worst < atol, worst


# ------------------------------------------------------------------------------------------------ supervised


SFT_TRAIN = {"batch_size": 8, "micro_batch_size": 2, "max_steps": 4, "save_every": 2, "eval_every": 2}


@pytest.fixture(scope="module")
def sft_paths(tmp_path_factory):
    return sft_setup(tmp_path_factory.mktemp("sft"), n_train=32, n_test=5)  # 5: the processes score 3 and 2


@pytest.fixture(scope="module")
def rl_paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl")
    return {**ppo_setup(tmp), "pairs": write_jsonl(tmp / "pairs.jsonl", reversal_pairs(16, seed=1))}


def rm_argv(sft_paths, rl_paths, micro: int) -> list[str]:
    """A reward model on the SFT model's trunk; its scores go through `token_scores`, whose gradients DDP
    synchronises only through the wrapper's forward (the ranks drifted apart when it called the trunk)."""
    return [f"model={sft_paths['model']}", f"data.train={rl_paths['pairs']}", "data.max_length=16",
            "train.lr=0.01", "train.batch_size=8", f"train.micro_batch_size={micro}", "train.max_steps=3",
            "train.progress=false"]


def ppo_argv(rl_paths, *extra: str) -> list[str]:
    return ppo_overrides(rl_paths, "iterations=1", "rollout.batch_size=8", "ppo.epochs=1",
                         "eval.max_prompts=2", *extra, batch_size=8, micro_batch_size=2)


def grpo_argv(rl_paths) -> list[str]:
    return [f"policy={rl_paths['policy']}", f"data.train={rl_paths['train']}",
            f"data.test={rl_paths['test']}", "reward.source=ppo_helpers:count_a", "iterations=1",
            "rollout.batch_size=4", "rollout.max_new_tokens=4", "grpo.group_size=4", "grpo.scale=batch",
            "grpo.beta=0.1", "eval.max_prompts=2", "train.batch_size=8", "train.micro_batch_size=2",
            "train.lr=0.01", "train.progress=false"]


@pytest.fixture(scope="module")
def two(sft_paths, rl_paths, tmp_path_factory):
    """One torchrun launch: an uninterrupted 2-process SFT run, 3 RM steps, a PPO and a GRPO iteration; SFT
    and PPO report to TensorBoard (whose trackers must end without ending the process group the next stage
    uses). {stage: (run directory, dump directory)}."""
    tmp = tmp_path_factory.mktemp("two")
    launch("torchrun", tmp / "dump",
           "sft", "--out", tmp / "sft", *sft_overrides(sft_paths, **SFT_TRAIN, report_to="[tensorboard]"),
           "+",
           "rm", "--out", tmp / "rm", *rm_argv(sft_paths, rl_paths, micro=2), "+",
           "ppo", "--out", tmp / "ppo", *ppo_argv(rl_paths, "train.report_to=[tensorboard]"), "+",
           "grpo", "--out", tmp / "grpo", *grpo_argv(rl_paths))
    stages = ["sft", "rm", "ppo", "grpo"]
    return {stage: (tmp / stage, tmp / "dump" / str(i)) for i, stage in enumerate(stages)}


def test_sft_two_processes_equal_one_process_with_twice_the_batch(sft_paths, two, tmp_path):
    run2, dump = two["sft"]
    train_sft(sft_config(sft_paths, **{**SFT_TRAIN, "micro_batch_size": 4}), tmp_path / "one")
    w0, w1 = rank_weights(dump)
    assert_identical(w0, w1)
    assert_close(model_weights(tmp_path / "one"), w0)
    one, two = read_metrics(tmp_path / "one"), read_metrics(run2)
    assert [(r["step"], r["kind"]) for r in one] == [(r["step"], r["kind"]) for r in two]  # rank 0 writes
    for a, b in zip(one, two, strict=True):
        for k in ("loss", "grad_norm", "test_loss"):  # loss and eval: sums over processes of their shares
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5), k
    assert json.loads((run2 / "summary.json").read_text())["steps"] == 4


def test_rm_two_processes_equal_one_process_with_twice_the_batch(sft_paths, rl_paths, two, tmp_path):
    run2, dump = two["rm"]
    one = tmp_path / "one"
    assert tether_main(["rm", "--out", str(one), *rm_argv(sft_paths, rl_paths, micro=4)]) == 0
    w0, w1 = rank_weights(dump)
    assert_identical(w0, w1)
    assert_close(model_weights(one), w0)
    assert [r["loss"] for r in read_metrics(run2)] == pytest.approx([r["loss"] for r in read_metrics(one)],
                                                                     rel=1e-5)


def test_dpo_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    paths = {
        "policy": write_model_dir(tmp_path / "policy", seed=0),
        "train": write_jsonl(tmp_path / "train.jsonl", reversal_pairs(16, seed=1)),
        "test": write_jsonl(tmp_path / "test.jsonl", reversal_pairs(3, seed=2)),
    }
    argv = dpo_overrides(paths, max_steps=3, save_every=0, eval_every=0, batch_size=8, micro_batch_size=2)
    launch("accelerate", tmp_path / "dump", "dpo", "--out", tmp_path / "two", *argv)
    one = load_config(DPOConfig, None, [*argv, "train.micro_batch_size=4"])
    train_dpo(one, tmp_path / "one")
    w0, w1 = rank_weights(tmp_path / "dump" / "0")
    assert_identical(w0, w1)
    assert_close(model_weights(tmp_path / "one"), w0)
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["loss"] for r in m2 if r["kind"] == "train"] == pytest.approx(
        [r["loss"] for r in m1 if r["kind"] == "train"], rel=1e-5)
    test1, test2 = m1[-1], m2[-1]  # the final evaluation: 3 held-out pairs scored 2 + 1
    assert test2["test_pairs"] == 3 and test2["test_loss"] == pytest.approx(test1["test_loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------ RL


def check_logged_means(run_dir: Path, dump: Path, iterations: int) -> None:
    """Every numeric logged train metric is the mean of the processes' own values (throughput: the sum)."""
    logged = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    local = [json.loads((dump / f"metrics-{r}.json").read_text()) for r in (0, 1)]
    assert len(logged) == len(local[0]) == len(local[1]) == iterations
    for rec, a, b in zip(logged, *local, strict=True):
        numeric = [k for k, v in a.items() if isinstance(v, float)]
        assert {"reward", "policy_loss", "entropy", "tokens_per_s"} <= set(numeric)
        for k in numeric:
            expected = a[k] + b[k] if k == "tokens_per_s" else (a[k] + b[k]) / 2
            assert rec[k] == pytest.approx(expected, rel=1e-6, abs=1e-9), k
        assert isinstance(rec["iteration"], int) and rec["iteration"] == a["iteration"] == b["iteration"]
    assert local[0][0]["reward"] != local[1][0]["reward"] or local[0][0]["entropy"] != local[1][0]["entropy"]


def test_ppo_iteration_on_two_processes(two):
    run, dump = two["ppo"]
    w0, w1 = rank_weights(dump)
    assert any(k.startswith("value.") for k in w0)  # the critic was trained and kept in step too
    assert_identical(w0, w1)
    check_logged_means(run, dump, iterations=1)
    assert (run / "summary.json").is_file() and (run / "model").is_dir()


@pytest.mark.parametrize("stage", ["sft", "ppo"])
def test_only_the_main_process_writes_tensorboard_events(two, stage):
    """One event file (and one hparams directory) in RUN/tensorboard/tether, holding exactly metrics.jsonl's
    numbers (written by the main process only): a second process's writer would add a file."""
    from test_tracking import assert_same, expected_scalars, read_events, scalars

    run, _ = two[stage]
    files = sorted(p.name for p in (run / "tensorboard" / "tether").iterdir() if p.is_file())
    assert len(files) == 1 and files[0].startswith("events.out.tfevents"), files
    events = read_events(run)
    assert_same(scalars(events, "train/") | scalars(events, "eval/"), expected_scalars(run))


def test_grpo_iteration_on_two_processes(two):
    run, dump = two["grpo"]
    assert_identical(*rank_weights(dump))
    check_logged_means(run, dump, iterations=1)


# ------------------------------------------------------------------------------------------------ resume


def test_sigterm_to_one_process_then_resume_with_two_gives_identical_weights(sft_paths, two, tmp_path,
                                                                           capsys):
    """Rank 1 alone gets SIGTERM after the first logged step; both stop at the same step boundary with a
    checkpoint (one process asked to stop is enough). The run's 4 steps are slowed to 1.5 s each so the
    signal lands mid-run on a busy machine."""
    run, dump = tmp_path / "run", tmp_path / "dump" / "0"
    argv = ["sft", "--out", run, *sft_overrides(sft_paths, **SFT_TRAIN)]
    log = open(tmp_path / "log.txt", "w+")  # a file, not a pipe: nothing blocks on a full pipe
    proc = subprocess.Popen(command("torchrun", dump.parent, *argv), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, text=True, env=env(TETHER_TEST_STEP_DELAY="1.5"))
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and read_metrics(run) and (dump / "pid-1").is_file():
            os.kill(int((dump / "pid-1").read_text()), signal.SIGTERM)
            break
        time.sleep(0.05)
    proc.wait(timeout=TIMEOUT)
    log.seek(0)
    err = log.read()
    log.close()
    assert proc.returncode != 0, "the run ended before it was signalled"
    assert "interrupted by SIGTERM" in err, err[-3000:]
    latest = ckpt.find_latest(run / "checkpoints")
    assert latest is not None and not (run / "model").exists()
    stopped_at = int(latest.name.split("-")[1])
    assert 1 <= stopped_at < 4

    capsys.readouterr()
    assert tether_main(["sft", "--out", str(run), "--resume"]) == 2  # 1 process: refused, nothing lost
    assert "saved by 2 processes; resume with the same number" in capsys.readouterr().err
    assert ckpt.find_latest(run / "checkpoints") == latest

    launch("torchrun", tmp_path / "dump2", "sft", "--out", run, "--resume")
    resumed = rank_weights(tmp_path / "dump2" / "0")
    assert_identical(*resumed)
    assert_identical(rank_weights(two["sft"][1])[0], resumed[0])
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
