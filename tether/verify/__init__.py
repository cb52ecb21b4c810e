"""`tether verify`: on a task small enough to enumerate, does each optimiser reach π* ∝ π_ref·exp(r/β)?

    result = verify()            # the JSON of `tether verify --json`
    failures(result)             # the targets missed ([] when all are met)

The task (tether.verify.task): one prompt, all 40 responses of up to 3 words over {a, b, c}, a fixed reward
table with a unique best response, and a tiny Llama as the policy. Each algorithm runs through its real
trainer (tether.verify.runs) with β = 0.5 from that model, which is also the frozen reference; afterwards
the trained policy's probability of every response is computed exactly by teacher forcing, and with it
KL(π_θ‖π*), E_π[r] and KL(π_θ‖π_ref) as sums over the 40 responses.

Targets: KL(π_θ‖π*) ≤ 0.005 nats for ppo and rloo with each accepted kl.estimator (k1, token_kl), ≤ 0.02
for dpo and grpo_kl_in_reward. The paper's grpo optimises
another objective (tether.verify.predict derives which): its gap to π* is reported, and its distance to
that objective's own fixed point, computed on the same task, is its target (KL ≤ 0.05). IPO's optimum
is π(y) ∝ π_ref(y)·exp(|y|·(P(y ≻ μ)/τ + c)) here (tether's IPO averages log-probs over the |y| response
tokens; c normalises): its gap and its distance to that prediction are reported, without a target.
The limits start from the reference model with noise on its weights (about 0.7 nats away) and train
against the reference model: β = 0.01 must put ≥ 0.95 on the best response, β = 100 must come back to
within 0.02 nats of π* (≈ π_ref). Both use RLOO: DPO at β = 0.01 has to open log-ratio gaps of
Δr/β = 30-300 nats and, measured, sank the best response to 2e-5 in 150 steps on the way.

`quick` runs a shorter RLOO only (20-30 s on 2 cores), against the looser 0.02 nats.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from tether.errors import TetherError
from tether.verify.predict import grpo_fixed_point, ipo_optimum
from tether.verify.runs import Run, run_one, write_files
from tether.verify.task import DEFAULT_TASK, ExactTask, exact, kl, sequence_logprobs

BETA = 0.5
TARGET_KL = 0.02  # nats, KL(π_θ‖π*) after training
TARGET_KL_PENALTY = 0.005  # nats, the same for PPO and RLOO with each kl.estimator (k1, token_kl)
TARGET_BEST = 0.95  # π_θ(best response) at β = 0.01
TARGET_GRPO_KL = 0.05  # nats, KL(π_grpo‖its predicted fixed point)

RUNS = {
    # The sizes keep each run's sampling noise well inside its target. Measured with seeds 0-2 (nats): ppo
    # 64 prompts 0.002-0.005, 128 0.0003-0.004, 256 (below) 0.00006-0.0017; rloo 16 × 4 0.002-0.005, 32 × 4
    # (below) 0.0003-0.0016. token_kl's gradient is as exact as k1's but noisier near π*: with k1 the shaped
    # return r − β·Σ_t r_t is the same (β·log Z) for every response at the optimum, so the update's noise
    # vanishes there; with token_kl it does not (ppo 256 prompts 0.0026-0.0038, 512 (below) 0.0015; rloo
    # 64 × 4 over 1200 iterations 0.0013-0.0023).
    "ppo": Run("ppo", BETA, length=600, lr=2e-3, prompts=256, group=1),
    # (ppo_token_kl at 600 iterations read 0.0052 with seed 0 once tether.packing's bin_length changed the
    # rounding, 2026-12-02; 800 iterations read 0.0012 and 0.0013 with seeds 0 and 1 but ran over 2 minutes,
    # 700 read 0.0015 and 0.0014)
    "ppo_token_kl": Run("ppo_token_kl", BETA, length=700, lr=2e-3, prompts=512, group=1),
    "rloo": Run("rloo", BETA, length=600, lr=2e-3, prompts=32, group=4),
    # (rloo_token_kl at 1200 iterations read 0.0078 with seed 0 after the sampler's change of 2026-12-02, and
    # 0.0018-0.0019 with seeds 1-2; 1600 iterations read 0.0013 with seed 0)
    "rloo_token_kl": Run("rloo_token_kl", BETA, length=1600, lr=2e-3, prompts=64, group=4),
    "dpo": Run("dpo", BETA, length=150, lr=3e-3),
    "grpo_kl_in_reward": Run("grpo_kl_in_reward", BETA, length=600, lr=2e-3, prompts=8, group=8),
    # the paper's GRPO against its predicted fixed point: 8 prompts × 8 read 0.033-0.057 nats over seeds 0-2
    # and two samplers, at the 0.05 target; 16 × 8 read 0.014-0.030
    "grpo": Run("grpo", BETA, length=600, lr=2e-3, prompts=16, group=8),
    "ipo": Run("ipo", BETA, length=150, lr=3e-3),
}
# --quick: RLOO alone, shorter, against the looser 0.02 (seeds 0-2 with 32 prompts measured 0.002-0.008 nats
# in 400 iterations, 16 prompts seed 0 0.005)
QUICK = {"rloo": Run("rloo", BETA, length=400, lr=2e-3, prompts=16, group=4)}
LIMITS = {
    # many samples per step: at β = 0.01 the objective is close to pure reward maximisation, and a policy
    # that concentrates before it has sampled the best response enough stays on a runner-up. The perturbed
    # start gives the best response 0.001, so 64 prompts × 4 (0.26 expected draws of it a step) stayed on a
    # runner-up with 2 to 3 of seeds 0-7 (measured with two samplers); 128 × 4 reached 0.9967-0.9979 with
    # all eight
    "beta_0.01": Run("rloo", 0.01, length=300, lr=1e-3, prompts=128, group=4, start="perturbed"),
    "beta_100": Run("rloo", 100.0, length=300, lr=2e-3, prompts=16, group=4, start="perturbed"),
}


def _load_logprobs(path: Path, task: ExactTask) -> torch.Tensor:
    from tether.model_files import load_causal_lm

    model = load_causal_lm(path, dtype=torch.float32)
    return sequence_logprobs(model, task)


def _numbers(task, logp, ref, optimum) -> dict:
    e = exact(task, logp, ref, optimum)
    return {"kl_to_optimum": e.kl_to_optimum, "expected_reward": e.expected_reward,
            "kl_to_reference": e.kl_to_reference, "best_probability": e.best_probability}


def _predicted(task, logp, ref, optimum, predicted) -> dict:
    """The prediction's own numbers and the trained policy's KL to it."""
    return {"prediction": _numbers(task, predicted, ref, optimum), "kl_to_prediction": kl(logp, predicted)}


def _check(entry: dict, target: dict | None) -> dict:
    """Add "target" and "pass" (None without a target): kl_* targets are upper bounds, the rest lower."""
    entry["target"] = target
    if target is not None:
        entry["pass"] = all(entry[k] <= v if k.startswith("kl") else entry[k] >= v for k, v in target.items())
    else:
        entry["pass"] = None
    return entry


def algorithm_entry(name: str, run: Run, task: ExactTask, logp, seconds: float, ref, optimum,
                    quick: bool = False) -> dict:
    """The entry of algorithm run `name` that trained to `logp` in `seconds`, checked against its target."""
    entry = {**_numbers(task, logp, ref, optimum), "seconds": seconds}
    if name == "grpo":
        fixed = grpo_fixed_point(task, ref, run.beta, run.group)
        entry.update(_predicted(task, logp, ref, optimum, fixed.logp), beta_eff=fixed.beta_eff)
        return _check(entry, {"kl_to_prediction": TARGET_GRPO_KL})
    if name == "ipo":
        entry.update(_predicted(task, logp, ref, optimum, ipo_optimum(task, ref, run.beta)))
        return _check(entry, None)
    penalty = run.algorithm.startswith(("ppo", "rloo")) and not quick  # --quick is a short smoke check
    target = TARGET_KL_PENALTY if penalty else TARGET_KL
    return _check(entry, {"kl_to_optimum": target})


def limit_entry(run: Run, task: ExactTask, logp, seconds: float, ref, start) -> dict:
    """The entry of a limit run from `start` that trained to `logp`, checked against its target."""
    optimum = task.optimum(ref, run.beta)
    entry = {"beta": run.beta, "algorithm": run.algorithm, "start_kl_to_reference": kl(start, ref),
             "start_best_probability": float(start.exp()[task.index[task.best]]),
             **_numbers(task, logp, ref, optimum), "seconds": seconds}
    target = {"best_probability": TARGET_BEST} if run.beta < BETA else {"kl_to_optimum": TARGET_KL}
    return _check(entry, target)


def run_all(runs: dict[str, Run], task: ExactTask, files, work: Path, workers: int):
    """Yield (name, (logp, seconds)) of every run in `runs`, in their order, training `workers` at a time in
    separate processes (each run is seeded and one thread, so which process trains it changes nothing)."""
    workers = min(workers, len(runs))
    if workers <= 1:
        for name, run in runs.items():
            yield name, run_one(run, task, files, work / name)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(run_one, run, task, files, work / name) for name, run in runs.items()}
        for name, future in futures.items():
            yield name, future.result()


def verify(quick: bool = False, out: str | Path | None = None,
           progress: Callable[[str, dict], None] | None = None, workers: int = 2) -> dict:
    """Train every algorithm (quick: a shorter rloo only, no limits) on the exact task and measure it.

    out: keep the run directories there (default: a temporary directory, deleted). progress(name, entry)
    is called after each run, in the table's order. workers: runs trained at once, each in its own process
    with one thread (1: one after another in this process). Returns {"beta", "algorithms", "optimum",
    "limits"} (see `tether verify`).
    """
    if workers < 1:
        raise TetherError(f"workers must be at least 1, got {workers}")
    torch.set_num_threads(1)
    task = DEFAULT_TASK
    runs = QUICK if quick else RUNS
    with tempfile.TemporaryDirectory(prefix="tether-verify-") as tmp:
        work = Path(out) if out is not None else Path(tmp)
        files = write_files(task, work)
        ref = _load_logprobs(files.reference, task)
        start = None if quick else _load_logprobs(files.perturbed, task)  # the limits' starting policy
        optimum = task.optimum(ref, BETA)
        algorithms, limits = {}, {}
        every = {**runs, **({} if quick else LIMITS)}
        for name, (logp, seconds) in run_all(every, task, files, work, workers):
            if name in runs:
                entry = algorithms[name] = algorithm_entry(name, runs[name], task, logp, seconds, ref,
                                                           optimum, quick)
            else:
                entry = limits[name] = limit_entry(LIMITS[name], task, logp, seconds, ref, start)
            if progress:
                progress(name, entry)
    p = optimum
    return {
        "beta": BETA,
        "algorithms": algorithms,
        "optimum": {
            "expected_reward": float((p * task.rewards).sum()),
            "kl_to_reference": kl(p.log(), ref),
            "best_probability": float(p[task.index[task.best]]),
            "reference_expected_reward": float((ref.exp() * task.rewards).sum()),
            "reference_kl_to_optimum": kl(ref, p.log()),
            "responses": len(task.texts),
        },
        "limits": limits,
    }


def failures(result: dict) -> list[str]:
    """'name: key value vs target' for every entry whose target is missed."""
    out = []
    for group in ("algorithms", "limits"):
        for name, entry in result[group].items():
            if entry.get("pass") is False:
                missed = ", ".join(f"{k} {entry[k]:.4g} (target {v:g})" for k, v in entry["target"].items())
                out.append(f"{name}: {missed}")
    return out
