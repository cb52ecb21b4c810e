"""`tether sweep`: stage 3 once per β on shared lab, SFT and reward model, each run evaluated, against the
best-of-n reference curve — so β is chosen by measurement (the achieved KL beside every β), not by feel.

    from tether.pipeline import RunConfig
    from tether.sweep import run_sweep
    sweep = run_sweep(RunConfig(algo="ppo"), [0.01, 0.1], "runs/sweep")   # OUT/sweep.json, OUT/report.html

OUT/{lab,sft,compare,rm} are built once (or taken from a finished `tether run` directory with `reuse`),
OUT/beta-<β>/ holds each stage-3 run with its evaluation (OUT/beta-<β>/{<algo>,eval,summary.json,
report.html}), OUT/best_of_n.json the reference curve. Running it again in the same OUT skips every
finished piece, so an interrupted sweep continues and more betas can be added later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tether.config import dump_config
from tether.errors import TetherError
from tether.files import write_json
from tether.instruments.best_of_n import DEFAULT_NS
from tether.pipeline import (
    RunConfig,
    Shared,
    _prepare,
    check_overrides,
    claim_run_dir,
    evaluate_stage,
    policy_stage,
    shared_stages,
    write_outputs,
)

# the key of β in each stage-3 config
BETA_KEYS = {"ppo": "kl.beta", "rloo": "kl.beta", "grpo": "grpo.beta", "dpo": "beta"}


def recommend_beta(runs: list[dict]) -> tuple[float | None, str]:
    """(β, metric): among the runs not flagged as reward hacking, the β with the best gold reward — or the
    best win-rate against the base where any run lacks a gold reward. Ties go to the larger β (closer to
    the base). None when every run is flagged or none was measured."""
    gold = bool(runs) and all(r.get("gold_reward") is not None for r in runs)
    metric = "gold_reward" if gold else "win_rate_vs_base"
    eligible = [r for r in runs if r.get("reward_hacking") is not True and r.get(metric) is not None]
    if not eligible:
        return None, metric
    best = max(eligible, key=lambda r: (r[metric], r["beta"]))
    return best["beta"], metric


def beta_dir_name(beta: float) -> str:
    return f"beta-{beta:g}"


def run_record(beta: float, summary: dict, directory: str) -> dict:
    """One row of sweep.json's "runs" from a β run's summary (stage 3 + evaluation). Without a reward model
    (DPO) the proxy reward is DPO's implicit reward on the policy's samples, β·E[log π/π_ref] = β·KL (k1)."""
    ins, policy = summary["instruments"], summary["rewards"]["policy"]
    kl, hacking = ins.get("kl_from_base") or {}, ins.get("reward_hacking") or {}
    proxy, source = policy.get("proxy"), "rm"
    if proxy is None and kl.get("k1") is not None:
        proxy, source = beta * kl["k1"], "dpo_implicit"
    return {
        "beta": beta,
        "kl_from_base": kl.get("value"),
        "kl_stderr": kl.get("stderr"),
        "proxy_reward": proxy,
        "proxy_source": source,
        "gold_reward": policy.get("gold"),
        "win_rate_vs_base": (ins.get("win_rate_vs_base") or {}).get("value"),
        "reward_hacking": hacking.get("value"),
        "hacking_reasons": hacking.get("reasons", []),
        "length": (ins.get("length") or {}).get("value"),
        "dir": directory,
    }


def reuse_run(run_dir: str | Path) -> Shared:
    """The lab, SFT model, pairs and reward model of a finished `tether run` directory."""
    from tether.lab import open_lab

    run = Path(run_dir)
    sft = run / "sft" / "model"
    if not (sft / "config.json").is_file():
        raise TetherError(f"--reuse {run}: no finished SFT model in {sft}")
    lab_dir = run / "lab"
    if not (lab_dir / "card.json").is_file() and (run / "summary.json").is_file():
        lab_dir = Path(json.loads((run / "summary.json").read_text()).get("lab") or lab_dir)
    lab = open_lab(lab_dir)
    pairs = run / "compare" / "prefs.train.jsonl"
    rm = run / "rm" / "model"
    return Shared(
        lab,
        sft,
        pairs if pairs.is_file() else Path(lab.data("prefs", "train")),
        rm if (rm / "config.json").is_file() else None,
        {},
    )


def _one_beta(cfg: RunConfig, shared: Shared, out: Path, beta: float, progress: bool) -> dict:
    """Stage 3 at β into OUT/beta-<β>/, evaluated against SFT; its summary (reused when it exists)."""
    run_dir = out / beta_dir_name(beta)
    if (run_dir / "summary.json").is_file():
        print(f"tether sweep: beta {beta:g} already done, skipping", flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    print(f"tether sweep: {cfg.algo} at beta {beta:g}", flush=True)
    return run_stage3(cfg, shared, run_dir, progress, [f"{BETA_KEYS[cfg.algo]}={beta!r}"])


def run_stage3(cfg: RunConfig, shared: Shared, run_dir: Path, progress: bool, overrides=()) -> dict:
    """`tether run`'s stage 3 (cfg.algo, with `overrides` after the stage's own) and its evaluation against
    SFT on stages already trained (`shared`), into run_dir; writes and returns the run's summary, whose
    stage_seconds hold stage 3 and the evaluation only."""
    start = time.perf_counter()
    final = policy_stage(cfg, shared, run_dir, progress, list(overrides))
    evaluation = evaluate_stage(run_dir, cfg, shared, final["beta"])
    summary = {
        "algo": cfg.algo,
        "feedback": cfg.feedback,
        "instruments": {**final.get("instruments", {}), **evaluation["instruments"]},
        "rewards": evaluation["rewards"],
        "beta": final["beta"],
        "wall_seconds": time.perf_counter() - start,
        "stage_seconds": {cfg.algo: final["wall_seconds"], "eval": evaluation["wall_seconds"]},
        "lab": str(shared.lab.root),
    }
    write_outputs(run_dir, summary, cfg.algo)
    return summary


def run_sweep(
    cfg: RunConfig,
    betas: list[float],
    out: str | Path,
    *,
    reuse: str | Path | None = None,
    best_of_n: list[int] | tuple[int, ...] = DEFAULT_NS,
    best_of_n_prompts: int = 200,
    progress: bool = True,
) -> dict:
    """The sweep (also OUT/sweep.json, OUT/report.html, OUT/summary.md): {"runs": [...], "best_of_n": [...],
    "recommended_beta", ...}. `cfg` configures the shared stages and stage 3 (cfg.algo: ppo, grpo, rloo,
    dpo); `reuse`: a finished `tether run` directory whose lab, SFT model and reward model to use."""
    if cfg.algo not in BETA_KEYS:
        raise TetherError(f"algo: unknown {cfg.algo!r}; choose one of {', '.join(BETA_KEYS)}")
    if not betas or any(b <= 0 for b in betas):
        raise TetherError(f"--betas must be positive numbers, got {betas}")
    check_overrides(cfg)
    with claim_run_dir(out, "sweep"):
        return _run_sweep(cfg, betas, Path(out), reuse, best_of_n, best_of_n_prompts, progress)


def _run_sweep(cfg, betas, out: Path, reuse, best_of_n, best_of_n_prompts, progress) -> dict:
    from tether.instruments.sweep_report import write_sweep_report

    start = time.perf_counter()
    _prepare(cfg, out, resume=True)  # the same settings as when the sweep started
    dump_config(cfg, out)
    if reuse:
        shared = reuse_run(reuse)
    else:
        shared = shared_stages(cfg, out, progress, reward_model=cfg.algo != "dpo")
    runs, scale = [], None
    for beta in sorted(set(betas)):
        summary = _one_beta(cfg, shared, out, beta, progress)
        runs.append(run_record(beta, summary, beta_dir_name(beta)))
        scale = (summary["instruments"].get("rm_reward_scale") or {}).get("value", scale)
    bon = _best_of_n(cfg, shared, out, list(best_of_n), best_of_n_prompts)
    recommended, metric = recommend_beta(runs)
    sweep = {
        "algo": cfg.algo,
        "beta_key": f"{cfg.algo}.{BETA_KEYS[cfg.algo]}",
        "runs": runs,
        "best_of_n": bon,
        "recommended_beta": recommended,
        "recommendation_metric": metric,
        # std of RM scores on SFT samples: β is in reward units per nat, so β/scale is comparable across RMs
        "rm_reward_scale": scale,
        "rm": str(shared.rm_dir) if shared.rm_dir else None,
        "sft": str(shared.sft_model),
        "lab": str(shared.lab.root),
        "wall_seconds": time.perf_counter() - start,
    }
    write_json(out / "sweep.json", sweep)
    write_sweep_report(out, sweep)
    return sweep


def _best_of_n(cfg: RunConfig, shared: Shared, out: Path, ns: list[int], prompts: int) -> list[dict]:
    """The best-of-n curve against the shared reward model, cached in OUT/best_of_n.json ([] without one)."""
    path = out / "best_of_n.json"
    if shared.rm_dir is None or not ns or prompts <= 0:
        return []
    if path.is_file():
        cached = json.loads(path.read_text())
        if [b["n"] for b in cached] == sorted(ns) and cached[0]["prompts"] <= prompts:
            return cached
    print(f"tether sweep: best-of-n (n up to {max(ns)}) from SFT against the reward model", flush=True)
    curve = best_of_n_from_dirs(shared, sorted(ns), prompts, cfg.seed)
    write_json(path, curve)
    return curve


def best_of_n_from_dirs(shared: Shared, ns: list[int], prompts: int, seed: int) -> list[dict]:
    """`best_of_n_curve` of the SFT model against the reward model on the lab's held-out prompts."""
    from tether.instruments.best_of_n import best_of_n_dirs
    from tether.instruments.evaluate import EVAL_SEED_OFFSET
    from tether.lab.config import LabConfig

    return best_of_n_dirs(
        shared.sft_model,
        shared.rm_dir,
        shared.lab.data("prompts", "test"),
        gold="gold",
        ns=ns,
        max_prompts=prompts,
        max_new_tokens=LabConfig.from_yaml(shared.lab.config).max_response_words,
        seed=seed + EVAL_SEED_OFFSET + 2,
    )
