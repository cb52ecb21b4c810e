"""`tether run`: the InstructGPT pipeline in one run directory — lab → SFT → comparisons → reward model → PPO
→ evaluation.

    from tether.pipeline import RunConfig, run_pipeline
    summary = run_pipeline(RunConfig(), "runs/demo")  # RUN/{lab,sft,compare,rm,ppo}, summary.json, ...

Each stage is a run directory of its own, made by the same function its command calls (`train_sft`,
`compare_samples`, `train_rm`, `train_ppo`). The comparison stage is InstructGPT's: the lab's labelers
compare pairs of the SFT model's own samples, and the reward model trains on those with the lab's pairs.
A stage whose `summary.json` exists is not run again, so `--resume` continues
an interrupted pipeline at the stage it was in (and that stage from its last checkpoint).
The pieces (`shared_stages`, `policy_stage`, `evaluate_stage`, `write_outputs`) are also what
`tether sweep` (tether/sweep.py) runs: the shared stages once, stage 3 and its evaluation once per β.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from pathlib import Path

from tether import rundir
from tether.config import SEED, SFTConfig, dump_config, load_config, ranged, to_dict, validate
from tether.errors import TetherError
from tether.files import write_json
from tether.trainers.checkpoint import find_latest

STAGES = ("sft", "rm", "ppo", "grpo", "rloo", "dpo")
FEEDBACK = ("human", "ai")  # who labels the preference pairs: the lab's simulated labelers, or an AI judge
ALGOS = ("ppo", "grpo", "rloo", "dpo")  # the stage-3 choices of `tether run --algo`


@dataclasses.dataclass
class RunConfig:
    """`tether run`: lab build (unless a lab is given) → SFT → RM → PPO → evaluation against SFT."""

    lab_dir: str | None = None
    """A built lab directory to use; none: build one into RUN/lab (configured by `lab`)."""
    comparisons: int = ranged(3000, ">= 0")
    """Prompts whose SFT samples the lab's labelers compare (InstructGPT's comparison data, written to
    RUN/compare); the reward model trains on the lab's pairs plus these. 0: the lab's pairs only."""
    comparison_samples: int = ranged(4, ">= 2")
    """Samples per comparison prompt; the first two that differ in gold reward form the pair."""
    lab: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the lab's config (tether.lab.LabConfig) when building it."""
    seed: int = ranged(0, SEED)
    """Seeds the lab build, every stage and the evaluation samples."""
    sft: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the SFT stage (SFTConfig, defaults in tether/configs/sft.yaml)."""
    rm: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the reward-model stage (RMConfig, defaults in tether/configs/rm.yaml)."""
    ppo: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the PPO stage (PPOConfig, defaults in tether/configs/ppo.yaml)."""
    algo: str = "ppo"
    """Stage 3: ppo, grpo or rloo against the reward model, or dpo on the preference pairs directly (the
    lab's pairs plus the comparisons; no reward model is trained)."""
    grpo: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the GRPO stage (GRPOConfig, defaults in tether/configs/grpo.yaml)."""
    rloo: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the RLOO stage (RLOOConfig, defaults in tether/configs/rloo.yaml)."""
    dpo: list[str] = dataclasses.field(default_factory=list)
    """`key=value` overrides of the DPO stage (DPOConfig, defaults in tether/configs/dpo.yaml)."""
    feedback: str = "human"
    """Who labels the preference pairs: `human` (the lab's simulated labelers, RUN/compare) or `ai` (RL-CAI:
    the lab's principle-following rater under `constitution` re-labels the lab's pairs and labels pairs of
    SFT samples, RUN/cai; the reward model / DPO then fit its soft labels)."""
    constitution: str | None = None
    """The constitution file for feedback=ai; none: tether/configs/constitution.yaml."""


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Command-line overrides → RunConfig overrides: `sft.train.lr=1e-3` is appended to the `sft` list (and
    likewise for every stage and lab); anything else (`seed=1`, `algo=dpo`) is a RunConfig key."""
    plain, staged = [], {s: [] for s in (*STAGES, "lab")}
    for item in overrides:
        key, _, value = item.partition("=")
        head, dot, rest = key.partition(".")
        if head in staged and dot:
            staged[head].append(f"{rest}={value}")
        else:
            plain.append(item)
    return plain, staged


def default_config(stage: str) -> Path:
    """The packaged defaults of a stage, tuned for the lab (copy and edit them for real models)."""
    return Path(__file__).parent / "configs" / f"{stage}.yaml"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


RUN_PARTS = ("lab", "compare", "cai", "eval", "summary.json", *STAGES)  # what a started run has written


def claim_run_dir(out: str | Path, kind: str = "run"):
    """`tether run`'s (or `tether sweep`'s) lock and ownership check of its directory (tether.rundir); a
    directory from before markers is recognised by its config.yaml (a RunConfig with provenance)."""
    return rundir.claim(out, kind, legacy=rundir.made_by_config(RunConfig))


def _prepare(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """A new run needs a directory where no stage has started (config.yaml alone is a start that failed
    before its first stage: it is started again); a resumed one the same RunConfig it started with (a
    finished stage is not run again, so changed settings would silently apply to the later stages only)."""
    if not resume and any((run_dir / name).exists() for name in RUN_PARTS):
        raise TetherError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    stored = run_dir / "config.yaml"
    if resume and stored.is_file() and to_dict(load_config(RunConfig, stored)) != to_dict(cfg):
        raise TetherError(f"--resume with settings that differ from {stored}; resume with the same ones")
    run_dir.mkdir(parents=True, exist_ok=True)


def _lab(cfg: RunConfig, run_dir: Path, progress: bool):
    from tether.lab import LabConfig, apply_overrides, build_lab, open_lab

    if cfg.lab_dir:
        return open_lab(cfg.lab_dir)
    lab_dir = run_dir / "lab"
    if (lab_dir / "card.json").is_file():
        return open_lab(lab_dir)
    print("tether run: building the lab", flush=True)
    return build_lab(lab_dir, apply_overrides(LabConfig(), cfg.lab), seed=cfg.seed, progress=progress).paths


def _stage(name: str, train_fn, cfg, run_dir: Path) -> dict:
    """Run one stage (config `cfg`) into RUN/name unless it already finished; resume it if it started."""
    out = run_dir / name
    if (out / "summary.json").is_file():
        print(f"tether run: {name} already done, skipping", flush=True)
        return _read(out / "summary.json")
    resuming = find_latest(out / "checkpoints") is not None
    print(f"tether run: {name}" + (" (resuming)" if resuming else ""), flush=True)
    # a stage that started continues: from its last checkpoint, or (the trainer decides) again from step 0
    # in place when it stopped before its first one; the trainer refuses a folder that is not its own
    train_fn(cfg, out, resume=out.is_dir())
    return _read(out / "summary.json")


def _compare(cfg: RunConfig, lab, policy: Path, out: Path) -> dict:
    """The comparison stage into RUN/compare unless it already finished (it is quick: no checkpoints)."""
    from tether.lab.compare import compare_samples

    if (out / "summary.json").is_file():
        print("tether run: compare already done, skipping", flush=True)
        return _read(out / "summary.json")
    print("tether run: compare (the lab's labelers rank pairs of SFT samples)", flush=True)
    return compare_samples(lab.root, policy, out, cfg.comparisons, cfg.comparison_samples, seed=cfg.seed)


def _ai_feedback(cfg: RunConfig, lab, policy: Path, out: Path) -> dict:
    """RL-CAI's labelling into RUN/cai unless it already finished (tether/cai/stages.py)."""
    from tether.cai import ai_feedback_stage

    if (out / "summary.json").is_file():
        print("tether run: cai already done, skipping", flush=True)
        return _read(out / "summary.json")
    print("tether run: cai (an AI rater labels the lab's pairs and pairs of SFT samples)", flush=True)
    return ai_feedback_stage(lab.root, policy, out, cfg.constitution, cfg.comparisons,
                             cfg.comparison_samples, seed=cfg.seed)


def _stage_classes() -> dict[str, tuple[type, object]]:
    """Stage name → (config class, train function)."""
    from tether.config import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig, RMConfig
    from tether.trainers.dpo import train_dpo
    from tether.trainers.grpo import train_grpo
    from tether.trainers.ppo import train_ppo
    from tether.trainers.rloo import train_rloo
    from tether.trainers.rm import train_rm
    from tether.trainers.sft import train_sft

    return {
        "sft": (SFTConfig, train_sft),
        "rm": (RMConfig, train_rm),
        "ppo": (PPOConfig, train_ppo),
        "grpo": (GRPOConfig, train_grpo),
        "rloo": (RLOOConfig, train_rloo),
        "dpo": (DPOConfig, train_dpo),
    }


@dataclasses.dataclass
class Shared:
    """What stage 3 builds on, made once per run (or per sweep): the lab, the SFT model, the preference
    pairs (the lab's plus the comparisons) and the reward model (None for DPO)."""

    lab: object  # tether.lab.LabPaths
    sft_model: Path
    pairs: Path
    rm_dir: Path | None
    stage_seconds: dict[str, float]


def stages_of(cfg: RunConfig) -> tuple[str, ...]:
    """The training stages a run of `cfg` goes through, in order (DPO needs no reward model)."""
    return ("sft", "dpo") if cfg.algo == "dpo" else ("sft", "rm", cfg.algo)


def check_overrides(cfg: RunConfig) -> None:
    """Every stage's config, built as its stage will build it (packaged defaults, the run's settings, the
    user's overrides), is checked now: a bad value in a late stage fails before the first stage runs, not
    after. Overrides of a stage or lab that this run does not use are refused, not dropped."""
    validate(cfg)  # a RunConfig built in Python; load_config checked one read from the command line
    if cfg.algo not in ALGOS:
        raise TetherError(f"algo: unknown {cfg.algo!r}; choose one of {', '.join(ALGOS)}")
    if cfg.feedback not in FEEDBACK:
        raise TetherError(f"feedback: unknown {cfg.feedback!r}; choose one of {', '.join(FEEDBACK)}")
    if cfg.feedback == "ai":
        from tether.cai import load_constitution

        load_constitution(cfg.constitution)
    used = stages_of(cfg)
    for name in STAGES:
        items = getattr(cfg, name)
        if items and name not in used:
            raise TetherError(f"{name}.* overrides ({' '.join(items)}) would not apply: with algo={cfg.algo} "
                              f"the run trains {', '.join(used)}")
    if cfg.lab:
        if cfg.lab_dir:
            raise TetherError(f"lab.* overrides ({' '.join(cfg.lab)}) would not apply: the lab {cfg.lab_dir} "
                              "is built already")
        from tether.lab import LabConfig, apply_overrides

        try:
            apply_overrides(LabConfig(), cfg.lab)
        except TetherError as e:
            raise TetherError(f"lab: {e}") from None
    for name in used:
        cls = _stage_classes()[name][0]
        placeholders = [f"{key}=<{key}, set by tether run>" for key in _required_keys(cls)]
        stage_cfg = stage_config(cfg, name, placeholders, progress=True)
        if hasattr(stage_cfg, "rollout"):  # an RL stage: can its sampler run on this machine?
            from tether.rollout_vllm import check_engine

            try:
                check_engine(stage_cfg.rollout.engine)
            except TetherError as e:
                raise TetherError(f"{name}: {e}") from None


def _required_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of the fields of `cls` without a default: the paths `tether run` gives each stage."""
    keys = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = typing.get_type_hints(cls)[f.name]
            nested = dataclasses.is_dataclass(hint)
            keys += _required_keys(hint, f"{prefix}{f.name}.") if nested else [prefix + f.name]
    return keys


def stage_config(cfg: RunConfig, name: str, settings: list[str], progress: bool, extra: list | None = None):
    """Stage `name`'s config: its packaged defaults, then `settings` (paths of the earlier stages' outputs),
    AI feedback's soft labels (rm, dpo), the run's seed, the user's overrides of the stage, then `extra`."""
    soft = ["data.use_soft_labels=true"] if cfg.feedback == "ai" and name in ("rm", "dpo") else []
    common = [f"seed={cfg.seed}", *([] if progress else ["train.progress=false"])]
    overrides = [*settings, *soft, *common, *getattr(cfg, name), *(extra or [])]
    try:
        return load_config(_stage_classes()[name][0], default_config(name), overrides)
    except TetherError as e:
        raise TetherError(f"{name}: {e}") from None


def run_stage(
    cfg: RunConfig, name: str, settings: list[str], run_dir: Path, progress: bool, extra: list | None = None
) -> dict:
    """Stage `name` into RUN/name, configured by `stage_config`."""
    stage_cfg = stage_config(cfg, name, settings, progress, extra)
    return _stage(name, _stage_classes()[name][1], stage_cfg, run_dir)


def shared_stages(cfg: RunConfig, run_dir: Path, progress: bool, reward_model: bool) -> Shared:
    """Lab → SFT → comparisons → (reward model) into RUN, each skipped where it already finished."""
    lab = _lab(cfg, run_dir, progress)
    sft = run_stage(
        cfg,
        "sft",
        [f"model={lab.pretrained}", f"data.train={lab.data('sft', 'train')}"]
        + [f"data.test={lab.data('sft', 'test')}"],
        run_dir,
        progress,
    )
    sft_model = run_dir / "sft" / "model"
    pairs = lab.data("prefs", "train")
    seconds = {"sft": sft["wall_seconds"]}
    if cfg.feedback == "ai":
        seconds["cai"] = _ai_feedback(cfg, lab, sft_model, run_dir / "cai")["wall_seconds"]
        pairs = run_dir / "cai" / "prefs.train.jsonl"
    elif cfg.comparisons > 0:
        seconds["compare"] = _compare(cfg, lab, sft_model, run_dir / "compare")["wall_seconds"]
        pairs = run_dir / "compare" / "prefs.train.jsonl"
    rm_dir = None
    if reward_model:
        pair_data = [f"data.train={pairs}", f"data.test={lab.data('prefs', 'test')}"]
        rm = run_stage(cfg, "rm", [f"model={sft_model}", *pair_data], run_dir, progress)
        seconds["rm"] = rm["wall_seconds"]
        rm_dir = run_dir / "rm" / "model"
    return Shared(lab, sft_model, Path(pairs), rm_dir, seconds)


def policy_stage(
    cfg: RunConfig, shared: Shared, run_dir: Path, progress: bool, extra: list[str] | None = None
) -> dict:
    """Stage 3 (cfg.algo) from the SFT model into RUN/<algo>: DPO on the pairs, the others against the
    reward model on the lab's prompts. `extra` overrides come last (a sweep's β)."""
    lab = shared.lab
    if cfg.algo == "dpo":
        data = [f"data.train={shared.pairs}", f"data.test={lab.data('prefs', 'test')}"]
        settings = [f"policy={shared.sft_model}", *data]
    else:
        data = [f"data.train={lab.data('prompts', 'train')}", f"data.test={lab.data('prompts', 'test')}"]
        settings = [f"policy={shared.sft_model}", f"reward.source={shared.rm_dir}", *data]
    return run_stage(cfg, cfg.algo, settings, run_dir, progress, extra)


def run_pipeline(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Lab → SFT → comparisons → RM → PPO/GRPO/RLOO (or DPO without the RM) → summary; returns the summary
    (also in RUN/summary.json and RUN/report.html)."""
    check_overrides(cfg)
    with claim_run_dir(out):
        return _run_pipeline(cfg, Path(out), resume, progress)


def _run_pipeline(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> dict:
    start = time.perf_counter()
    _prepare(cfg, run_dir, resume)
    dump_config(cfg, run_dir)
    shared = shared_stages(cfg, run_dir, progress, reward_model=cfg.algo != "dpo")
    stage_seconds = dict(shared.stage_seconds)
    final = policy_stage(cfg, shared, run_dir, progress)
    stage_seconds[cfg.algo] = final["wall_seconds"]
    evaluation = evaluate_stage(run_dir, cfg, shared, final["beta"])
    stage_seconds["eval"] = evaluation["wall_seconds"]

    summary = {
        "algo": cfg.algo,
        "feedback": cfg.feedback,
        # the stage's own held-out figures (DPO: preference accuracy), then the full evaluation
        "instruments": {**final.get("instruments", {}), **evaluation["instruments"]},
        "rewards": evaluation["rewards"],
        "beta": final["beta"],
        "wall_seconds": time.perf_counter() - start,
        "stage_seconds": stage_seconds,
        "lab": str(shared.lab.root),
    }
    write_outputs(run_dir, summary, cfg.algo)
    return summary


def stage_gold(stage_dir: Path) -> str:
    """The stage's eval.gold as it ran (STAGE/config.yaml), so that the final evaluation is judged as the
    stage's own was; "auto" for a stage without the setting (DPO)."""
    import yaml

    stored = yaml.safe_load((stage_dir / "config.yaml").read_text()) or {}
    return (stored.get("eval") or {}).get("gold", "auto")


def evaluate_stage(run_dir: Path, cfg: RunConfig, shared: Shared, beta: float) -> dict:
    """`tether eval` of the stage-3 policy in RUN/<algo> against the SFT model into RUN/eval (every
    instrument and the reward-hacking verdict; its KL and win-rate are the trainers' own, drawn with the
    same seeds and judged by the stage's eval.gold)."""
    from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs

    print(f"tether run: evaluating the policy in {run_dir / cfg.algo} against SFT", flush=True)
    rm = str(shared.rm_dir) if shared.rm_dir else None
    gold = stage_gold(run_dir / cfg.algo)
    config = EvalConfig(rm=rm, lab=str(shared.lab.root), beta=beta, seed=cfg.seed, gold=gold)
    policy = str(run_dir / cfg.algo / "model")
    return evaluate_policy_dirs(policy, str(shared.sft_model), config, str(run_dir / "eval"))


def write_outputs(run_dir: Path, summary: dict, algo: str) -> None:
    """RUN/summary.json, RUN/report.html (curves of RUN/<algo>, samples of RUN/eval) and RUN/summary.md."""
    from tether.instruments.report import training_curves, write_report
    from tether.trainers.metrics import read_metrics

    write_json(run_dir / "summary.json", summary)
    curves, x_label = training_curves(read_metrics(run_dir / algo), algo)
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    title = f"tether run: {run_dir.name}"
    write_report(run_dir / "report.html", summary, curves, title=title, samples=samples, x_label=x_label)
