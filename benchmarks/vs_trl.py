"""TRL's trainers and tether's side by side on the same HH-RLHF pairs: seconds per step and peak RSS.

    PYTHONPATH=. .venv/bin/python benchmarks/vs_trl.py [--stages sft,rm,dpo,dpo-cached,grpo] [--steps 2,6]

TRL runs in its own virtual environment (never imported by tether or its tests), made once with

    python3 -m venv benchmarks/.venv-trl
    benchmarks/.venv-trl/bin/pip install torch==2.13.0 trl==1.16.0 psutil

(torch pinned: the CPU wheel; trl 1.16.0 brings transformers, accelerate and datasets). `--trl-python`
points at its interpreter (default: benchmarks/.venv-trl/bin/python).

Every measured run is a whole process: `tether STAGE --config FILE.yaml` (the CLI, configs written to a
temporary directory) or this file under the TRL interpreter (`--trl-child`, which builds TRL's trainer and
calls `train()`). Each configuration runs twice, with N1 and N2 optimizer steps, and s/step =
(t2 − t1) / (N2 − N1) from the wall times of the two processes, so that start-up (imports, model loading,
tokenisation, saving) cancels. Peak RSS is the child's own ru_maxrss from os.wait4 (its waited-for
descendants included), the larger of its two runs. Before anything is measured, one throwaway run of each
tool (the first stage, N1 steps) pays the one-time costs of a first process (disk cache, byte-code).

The pairs: the first --pairs records of the raw HH-RLHF file whose chosen and rejected transcripts share the
prompt (everything up to and including the last "\\n\\nAssistant:"), with two non-empty responses that
differ (tether leaves tied pairs out, so a tie would give the tools different data) and a prompt under
--max-prompt-chars characters; raw transcript text, no chat template, on both sides.

What a step is, the same on both sides (fp32, no gradient checkpointing but where said, max length 256
tokens, constant learning rate 1e-6, no warm-up, no evaluation, no checkpoints, torch threads --threads):
- sft: 8 rows (prompt + chosen or prompt + rejected; 2 × --pairs rows), loss on the completion only;
- rm: 4 pairs (scalar head, Bradley-Terry);
- dpo: 4 pairs, sigmoid loss, β 0.1, the reference's log-probs computed in the step (tether
  precompute_reference=false, TRL precompute_ref_log_probs=False); here, and only here, tether recomputes
  its first DPO_CHECKPOINT_LAYERS decoder layers in the backward pass (train.gradient_checkpointing with
  train.checkpoint_layers) — the one tether configuration measured against the issue's "≥ 3× TRL's speed
  at ≤ ½ its peak RSS"; TRL runs without checkpointing, as everywhere;
- dpo-cached: the same with the reference's log-probs computed once for all pairs before the first step
  (tether precompute_reference=true, its default; TRL precompute_ref_log_probs=True), so that pass is
  start-up and cancels from s/step on both sides;
- grpo: 2 prompts × G 4 samples at temperature 1 (top-p 1, no top-k) of at most 64 new tokens, from the
  last 300 characters of the pairs' prompts; reward `length_reward` below (this function, on both sides),
  β 0.04, per-group reward scaling, per-sequence mean loss (TRL loss_type="grpo"), one optimizer step per
  iteration (TRL: steps_per_generation 1, num_iterations 1; tether: grpo.epochs 1, one minibatch).
  Sampling is part of the step. The mean completion length of each tool is printed, as it sets the cost.

For SFT, RM and both DPO stages the table also gives tether's FLOP rate on real tokens as a fraction of the
fp32 matmul peak (`steps.matmul_peak`, read at the start and at the end of the invocation; the higher
counts): the real tokens are those of the steps between the two runs' ends, in tether's own data order
(its loaders and `batch_indices` on the run's config), each row counted whole (`item_tokens`), at 6N FLOPs a
token of a trained pass and 2N of DPO's reference pass (`FLOPS_PER_TOKEN`). GRPO has none: its step is
mostly sampling.

`--write README.md` puts the table, stamped with machine, commit, date and load average, between the file's
`<!-- figures:vs-trl -->` markers; `--from-json F --write README.md` does so from an earlier run's --json
record without measuring again.

`--make-tiny DIR` writes a randomly initialised 2-layer Llama with --model's tokenizer to DIR, to check the
script end to end in seconds (`--model DIR --steps 1,2`); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # figure_blocks (imported where used: it needs tether)
STAGES = ("sft", "rm", "dpo", "dpo-cached", "grpo")
DEFAULT_MODEL = "~/.cache/tether/models/smollm2-135m-instruct"
DEFAULT_DATA = "/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
DEFAULT_TRL_PYTHON = ROOT / "benchmarks" / ".venv-trl" / "bin" / "python"
MARKER = "\n\nAssistant:"

# the shared settings
MAX_LENGTH = 256
LR = 1e-6
DPO_BETA = 0.1
GRPO_G, GRPO_PROMPTS, GRPO_NEW_TOKENS, GRPO_BETA, GRPO_PROMPT_CHARS = 4, 2, 64, 0.04, 300
DPO_CHECKPOINT_LAYERS = 15  # of SmolLM2-135M's 30 (10 read 0.503 of TRL's peak in one invocation: README)


# ------------------------------------------------------------------------------------------------ pure parts


STAGE_NAMES = {
    "sft": "SFT (8 rows)",
    "rm": "reward model (4 pairs)",
    "dpo": "DPO (4 pairs, reference in the step)",
    "dpo-cached": "DPO (4 pairs, cached reference)",
    "grpo": "GRPO (2 prompts × G 4, sampling included)",
}


def lead_and_memory(trl: dict, tether: dict) -> tuple[float, float]:
    """(lead, memory) of one stage's two results: lead = TRL s/step ÷ tether s/step, memory = tether peak
    RSS ÷ TRL peak RSS."""
    return trl["s_per_step"] / tether["s_per_step"], tether["peak_rss_gb"] / trl["peak_rss_gb"]


def of_peak(tether: dict, peaks: list[float]) -> float | None:
    """tether's FLOP rate on real tokens as a fraction of the higher matmul-peak reading of the invocation
    (None for a stage without one, or a record from before they were taken)."""
    if "real_gflop_per_s" not in tether or not peaks:
        return None
    return tether["real_gflop_per_s"] / max(peaks)


def block(record: dict) -> str:
    """The README's `vs-trl` block from a --json record: one row per stage (seconds per step and peak RSS of
    both tools, `lead_and_memory`), then its provenance."""
    from figure_blocks import md_row, md_rule, wrap  # not at the top: the TRL child has no tether

    by = {(r["tool"], r["stage"]): r for r in record["results"]}
    header = ["stage", "TRL s/step", "TRL peak RSS", "tether s/step", "tether peak RSS", "tether's lead",
              "memory", "tether ÷ peak"]
    peaks = record.get("matmul_peak_gflops")
    lines = [md_row(header), md_rule(len(header))]
    stages = [s for s in STAGES if ("tether", s) in by and ("trl", s) in by]
    for s in stages:
        trl, tether = by["trl", s], by["tether", s]
        lead, memory = lead_and_memory(trl, tether)
        fraction = of_peak(tether, peaks)
        name = STAGE_NAMES[s]
        if s == "dpo" and record.get("dpo_checkpoint_layers"):  # what the run used, not today's constant
            name = f"{name[:-1]}; tether checkpoints {record['dpo_checkpoint_layers']} layers)"
        lines.append(md_row([name, f"{trl['s_per_step']:.2f}", f"{trl['peak_rss_gb']:.2f} GB",
                             f"{tether['s_per_step']:.2f}", f"{tether['peak_rss_gb']:.2f} GB", f"{lead:.2f}×",
                             f"{memory:.3f}",  # three places: the target is ≤ 0.50
                             "—" if fraction is None else f"{fraction:.0%}"]))
    n1, n2 = record["steps"]
    grpo = ""
    if "grpo" in stages:
        trl, tether = by["trl", "grpo"]["completion_tokens"], by["tether", "grpo"]["completion_tokens"]
        grpo = f" Mean GRPO completion length ({n2}-step runs): TRL {trl:.1f} tokens, tether {tether:.1f}."
    rate = ""
    if peaks:
        rate = (f" tether ÷ peak: its FLOP rate on real tokens (6N a token of a trained pass, 2N of DPO's "
                f"reference, N = {record['non_embedding_params'] / 1e6:.1f} M non-embedding parameters) over "
                f"the fp32 matmul peak, {max(peaks):.1f} GFLOP/s (the higher of readings at the start and "
                f"the end); above 100 % where computing a shared prompt once saves more than the step spends "
                f"on anything else.")
    stamp = (f"_Generated by `benchmarks/vs_trl.py --stages {','.join(stages)} --steps {n1},{n2}` at "
             f"commit {record['commit']} on {record['date']}: {record['cpus']} cores ({record['cpu']}), "
             f"torch threads {record['threads']}, {record['pairs']} HH-RLHF pairs, s/step = "
             f"(t{n2} − t{n1}) / {n2 - n1} from whole processes, load average "
             f"{record['load_start'][0]:.2f} at the start and {record['load_end'][0]:.2f} at the end.{grpo}"
             f"{rate}_")
    return "\n".join(lines) + "\n\n" + wrap(stamp)


def split_pair(record: dict) -> dict | None:
    """{"prompt", "chosen", "rejected"} from a raw HH-RLHF record, or None when its chosen and rejected
    transcripts do not share the prompt (everything up to and including the last "\\n\\nAssistant:")."""
    chosen, rejected = record["chosen"], record["rejected"]
    k, j = chosen.rfind(MARKER), rejected.rfind(MARKER)
    if k < 0 or j < 0 or chosen[: k + len(MARKER)] != rejected[: j + len(MARKER)]:
        return None
    cut = k + len(MARKER)
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def select_pairs(path: str | Path, n: int, max_prompt_chars: int = 600) -> list[dict]:
    """The first `n` records of a raw HH-RLHF .jsonl[.gz] that `split_pair` splits, whose two responses are
    non-empty and differ, and whose prompt is under `max_prompt_chars` characters."""
    opener = gzip.open if str(path).endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            pair = split_pair(json.loads(line))
            if pair is None or not pair["chosen"].strip() or not pair["rejected"].strip():
                continue
            if pair["chosen"].strip() == pair["rejected"].strip() or len(pair["prompt"]) >= max_prompt_chars:
                continue
            out.append(pair)
            if len(out) == n:
                return out
    raise SystemExit(f"{path}: only {len(out)} pairs pass the selection rule; --pairs asks for {n}")


def per_step(n1: int, t1: float, n2: int, t2: float) -> float:
    """Seconds per step from two whole runs of n1 < n2 steps taking t1 and t2 seconds: (t2 − t1)/(n2 − n1).
    Whatever both runs pay once (start-up, loading, saving) cancels."""
    if n2 <= n1:
        raise ValueError(f"need N1 < N2, got {n1}, {n2}")
    return (t2 - t1) / (n2 - n1)


def length_reward(prompts, completions, **_) -> list[float]:
    """The GRPO reward of both tools: a completion's length in characters, capped at 200, divided by 200.
    tether calls it as `module:function` with (prompts, responses); TRL as a reward function with keywords."""
    return [min(len(c), 200) / 200 for c in completions]


def write_data(pairs: list[dict], out: Path) -> None:
    """The files both tools read: pairs.jsonl (prompt, chosen, rejected), sft.jsonl (prompt, completion:
    each pair's prompt with its chosen, then with its rejected answer) and prompts.jsonl (the prompts' last
    GRPO_PROMPT_CHARS characters)."""
    out.mkdir(parents=True, exist_ok=True)

    def dump(name, rows):
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    dump("pairs.jsonl", pairs)
    dump("sft.jsonl", [{"prompt": p["prompt"], "completion": p[side]} for side in ("chosen", "rejected")
                       for p in pairs])
    dump("prompts.jsonl", [{"prompt": p["prompt"][-GRPO_PROMPT_CHARS:]} for p in pairs])


# FLOPs per real token ÷ N, the non-embedding parameters (Kaplan et al. 2020, "Scaling Laws for Neural
# Language Models", sec. 2.1: a forward pass ≈ 2N per token, forward + backward ≈ 6N): one trained pass, and
# for DPO with the reference in the step the reference's forward pass too. Recomputed (checkpointed) layers,
# the LM head and attention's context term are not counted: the least work a padding-free implementation does.
FLOPS_PER_TOKEN = {"sft": 6, "rm": 6, "dpo": 6 + 2, "dpo-cached": 6}


def item_tokens(item) -> int:
    """Real tokens of one of tether's tokenised training items: an SFT row's prompt + completion; a pair's two
    rows, prompt + chosen and prompt + rejected, each counted whole (as if each row were computed alone)."""
    if hasattr(item, "completion_ids"):
        return len(item.prompt_ids) + len(item.completion_ids)
    pair = getattr(item, "tokens", item)  # a DPOPair holds its PairTokens
    return 2 * len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def step_tokens(items: list, batch_size: int, seed: int, n1: int, n2: int) -> int:
    """Real tokens of the steps that a run of n2 steps takes after its first n1 (those that s/step times), in
    tether's own data order (tether.trainers.supervised.batch_indices)."""
    from tether.trainers.supervised import batch_indices

    return sum(item_tokens(items[i]) for step in range(n1, n2)
               for i in batch_indices(len(items), batch_size, seed, step))


def tether_items(stage: str, config: Path) -> tuple[list, object]:
    """(the training items tether's trainer of `stage` builds from the run's config file — its loaders, its
    tokenizer — and the loaded config)."""
    from tether.config import DPOConfig, RMConfig, SFTConfig, load_config
    from tether.data import set_template
    from tether.model_files import load_tokenizer
    from tether.trainers.dpo import load_dpo_pairs
    from tether.trainers.rm import load_rm_pairs
    from tether.trainers.sft import load_sft_items

    cls = {"sft": SFTConfig, "rm": RMConfig}.get(stage, DPOConfig)
    cfg = load_config(cls, config)
    d = cfg.data
    model = cfg.policy if cls is DPOConfig else cfg.model
    tokenizer = load_tokenizer(cfg.tokenizer or model, cfg.trust_remote_code)
    set_template(tokenizer, d.template)
    if stage == "sft":
        items = load_sft_items(d.train, tokenizer, d)
    elif stage == "rm":
        items = load_rm_pairs(d.train, tokenizer, d)
    else:
        items = load_dpo_pairs(d.train, tokenizer, d)
    return items, cfg


# ------------------------------------------------------------------------------------------------ tether


def tether_config(stage: str, model: str, data: Path, steps: int, threads: int) -> dict:
    """The tether config of one run (every key a field of the stage's config class)."""
    train = {"lr": LR, "warmup_steps": 0, "schedule": "constant", "eval_every": 0, "save_every": 0,
             "mixed_precision": "no", "device": "cpu", "threads": threads, "progress": False,
             "gradient_checkpointing": False}
    if stage == "grpo":
        rows = GRPO_PROMPTS * GRPO_G
        return {"policy": model, "iterations": steps, "dtype": "float32", "seed": 0,
                "data": {"train": str(data / "prompts.jsonl"), "test": None, "max_prompt_length": MAX_LENGTH,
                         "chat_template": "never"},
                "reward": {"source": "vs_trl:length_reward", "no_eos": "keep"},
                "rollout": {"batch_size": GRPO_PROMPTS, "max_new_tokens": GRPO_NEW_TOKENS, "temperature": 1.0,
                            "top_p": 1.0},
                "grpo": {"group_size": GRPO_G, "epochs": 1, "beta": GRPO_BETA, "scale": "group",
                         "aggregation": "sequence_mean"},
                "train": {**train, "batch_size": rows, "micro_batch_size": rows}}
    train = {**train, "max_steps": steps}
    file = "sft.jsonl" if stage == "sft" else "pairs.jsonl"
    d = {"train": str(data / file), "test": None, "max_length": MAX_LENGTH, "chat_template": "never"}
    if stage == "sft":
        return {"model": model, "dtype": "float32", "seed": 0, "data": d,
                "train": {**train, "batch_size": 8, "micro_batch_size": 8}}
    if stage == "rm":
        return {"model": model, "dtype": "float32", "seed": 0, "data": d,
                "train": {**train, "batch_size": 4, "micro_batch_size": 4}}
    if stage == "dpo":
        train = {**train, "gradient_checkpointing": True, "checkpoint_layers": DPO_CHECKPOINT_LAYERS}
    return {"policy": model, "dtype": "float32", "seed": 0, "beta": DPO_BETA, "loss_type": "sigmoid",
            "precompute_reference": stage == "dpo-cached", "data": d, "eval": {"kl_prompts": 0},
            "train": {**train, "batch_size": 4, "micro_batch_size": 4}}


def tether_command(stage: str, args, data: Path, steps: int, work: Path) -> tuple[list[str], dict]:
    cfg = tether_config(stage, args.model, data, steps, args.threads)
    path = work / f"tether-{stage}-{steps}.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    out = work / f"tether-{stage}-{steps}"
    if out.exists():  # a run of an earlier invocation in the same --keep directory
        shutil.rmtree(out)
    paths = [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = stage.split("-")[0]  # dpo-cached: `tether dpo`
    return [args.tether_python, "-m", "tether.cli", command, "--config", str(path), "--out", str(out)], env


def tether_completion_tokens(out: Path) -> float | None:
    """Mean response length in tokens over a tether GRPO run's iterations (metrics.jsonl), if logged."""
    values = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "train" and "response_length" in r:
            values.append(r["response_length"])
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------ TRL


def trl_command(stage: str, args, data: Path, steps: int, work: Path) -> tuple[list[str], dict]:
    out = work / f"trl-{stage}-{steps}"
    cmd = [args.trl_python, __file__, "--trl-child", stage, "--model", args.model, "--data-dir", str(data),
           "--n", str(steps), "--threads", str(args.threads), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    return cmd, env


def trl_child(stage: str, model: str, data: Path, steps: int, threads: int, out: Path) -> None:
    """Build TRL's trainer for `stage` on the files in `data` and train `steps` optimizer steps.
    Runs under the TRL interpreter only."""
    import torch
    import trl
    from datasets import Dataset

    torch.set_num_threads(threads)
    rows = [json.loads(x) for x in open(data / ("sft.jsonl" if stage == "sft" else "pairs.jsonl"))]
    common = {"output_dir": str(out), "max_steps": steps, "learning_rate": LR,
              "lr_scheduler_type": "constant", "warmup_steps": 0, "bf16": False, "fp16": False,
              "activation_checkpointing": False, "gradient_checkpointing": False,
              "use_cpu": True, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
              "logging_steps": 1, "seed": 0, "dataloader_num_workers": 0, "gradient_accumulation_steps": 1,
              "model_init_kwargs": {"dtype": "float32"}, "disable_tqdm": True}
    if stage == "sft":
        cfg = trl.SFTConfig(**common, per_device_train_batch_size=8, max_length=MAX_LENGTH,
                            completion_only_loss=True, packing=False)
        trainer = trl.SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows))
    elif stage == "rm":
        cfg = trl.RewardConfig(**common, per_device_train_batch_size=4, max_length=MAX_LENGTH)
        trainer = trl.RewardTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows))
    elif stage in ("dpo", "dpo-cached"):
        cfg = trl.DPOConfig(**common, per_device_train_batch_size=4, max_length=MAX_LENGTH, beta=DPO_BETA,
                            loss_type=["sigmoid"], precompute_ref_log_probs=stage == "dpo-cached")
        trainer = trl.DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows))
    else:
        prompts = [json.loads(x) for x in open(data / "prompts.jsonl")]
        cfg = trl.GRPOConfig(**common, per_device_train_batch_size=GRPO_PROMPTS * GRPO_G,
                             num_generations=GRPO_G, max_completion_length=GRPO_NEW_TOKENS, temperature=1.0,
                             top_p=1.0, top_k=0, beta=GRPO_BETA, num_iterations=1, steps_per_generation=1,
                             scale_rewards="group", loss_type="grpo", mask_truncated_completions=False)
        trainer = trl.GRPOTrainer(model=model, reward_funcs=[length_reward], args=cfg,
                                  train_dataset=Dataset.from_list(prompts))
    weights = {p.dtype for p in trainer.model.parameters()}
    if weights != {torch.float32} or trainer.args.activation_checkpointing or trainer.args.bf16:
        raise SystemExit(f"TRL's {stage} trainer is not at fp32 without checkpointing: weights {weights}, "
                         f"checkpointing {trainer.args.activation_checkpointing}, bf16 {trainer.args.bf16}")
    trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))


def trl_completion_tokens(out: Path) -> float | None:
    logs = json.loads((out / "log_history.json").read_text())
    values = [r["completions/mean_length"] for r in logs if "completions/mean_length" in r]
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------ runs


def run_process(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run `cmd` to its end: (wall seconds, peak RSS in GB of it and its waited-for descendants)."""
    with open(log, "w") as f:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd)}\nexited {proc.returncode}; the end of {log}:\n{tail}")
    return seconds, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def measure(tool: str, stage: str, args, data: Path, work: Path) -> dict:
    make = tether_command if tool == "tether" else trl_command
    runs = []
    for n in args.steps:
        cmd, env = make(stage, args, data, n, work)
        seconds, rss = run_process(cmd, env, work / f"{tool}-{stage}-{n}.log")
        runs.append({"steps": n, "seconds": seconds, "peak_rss_gb": rss})
        print(f"  {stage:<5} {tool:<7} {n:>3} steps  {seconds:8.1f} s  peak RSS {rss:5.2f} GB", flush=True)
    (n1, t1), (n2, t2) = [(r["steps"], r["seconds"]) for r in runs]
    result = {"tool": tool, "stage": stage, "runs": runs, "s_per_step": per_step(n1, t1, n2, t2),
              "peak_rss_gb": max(r["peak_rss_gb"] for r in runs)}
    if stage == "grpo":
        last = work / f"{tool}-{stage}-{n2}"
        result["completion_tokens"] = (tether_completion_tokens if tool == "tether"
                                       else trl_completion_tokens)(last)
    if tool == "tether" and stage in FLOPS_PER_TOKEN:  # its rate on real tokens (GRPO's: mostly sampling)
        items, cfg = tether_items(stage, work / f"tether-{stage}-{n2}.yaml")
        tokens = step_tokens(items, cfg.train.batch_size, cfg.seed, n1, n2)
        flops = FLOPS_PER_TOKEN[stage] * args.non_embedding_params * tokens
        result.update(real_tokens=tokens, real_gflop_per_s=flops / (t2 - t1) / 1e9)
    return result


# ------------------------------------------------------------------------------------------------ machine


def machine() -> dict:
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), platform.processor() or "unknown")
    mem = next((int(x.split()[1]) * 1024 / 1e9 for x in Path("/proc/meminfo").read_text().splitlines()
                if x.startswith("MemTotal:")), float("nan"))

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    commit = git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if dirty else "")
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gb": mem, "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def versions(python: str) -> str:
    code = ("import importlib.metadata as m\nprint(' '.join(f'{p} {m.version(p)}' for p in "
            "('torch', 'transformers', 'trl') if __import__('importlib.util').util.find_spec(p)))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def make_tiny(model: str, out: Path) -> None:
    """A 2-layer Llama (hidden 32) with `model`'s tokenizer, saved to `out`: for checking this script."""
    from transformers import AutoTokenizer

    from tether.models import build_tiny_llama

    tok = AutoTokenizer.from_pretrained(model)
    eos = tok.eos_token_id
    build_tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=1024,
                     pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
                     bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else eos,
                     eos_token_id=eos).save_pretrained(out)
    tok.save_pretrained(out)
    print(f"wrote a tiny Llama with {model}'s tokenizer to {out}")


# ------------------------------------------------------------------------------------------------ main


def parse_steps(text: str) -> tuple[int, int]:
    try:
        n1, n2 = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N1,N2 (two step counts), got {text!r}") from None
    if not 1 <= n1 < n2:
        raise argparse.ArgumentTypeError(f"need 1 <= N1 < N2, got {text!r}")
    return n1, n2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="HF model directory (default: %(default)s)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="raw HH-RLHF .jsonl[.gz] (default: %(default)s)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of: " + " ".join(STAGES))
    ap.add_argument("--steps", type=parse_steps, default=(2, 6), help="N1,N2: the two runs' step counts")
    ap.add_argument("--pairs", type=int, default=64, help="pairs selected (default: %(default)s)")
    ap.add_argument("--max-prompt-chars", type=int, default=600, help="prompts shorter than this")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads of both tools (default: the CPUs this process may use, %(default)s)")
    ap.add_argument("--trl-python", default=str(DEFAULT_TRL_PYTHON), help="the TRL venv's interpreter")
    ap.add_argument("--tether-python", default=sys.executable, help="the interpreter that runs tether")
    ap.add_argument("--no-warmup", action="store_true", help="skip the throwaway first run of each tool")
    ap.add_argument("--keep", help="keep the runs' configs, logs and outputs in this directory")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--write", metavar="README", help="put the table between the file's vs-trl markers")
    ap.add_argument("--from-json", metavar="F", help="with --write: the table of an earlier --json record")
    ap.add_argument("--make-tiny", metavar="DIR", help="write a tiny model with --model's tokenizer; exit")
    ap.add_argument("--trl-child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.model = str(Path(args.model).expanduser().resolve())
    if args.trl_child:
        trl_child(args.trl_child, args.model, Path(args.data_dir), args.n, args.threads, Path(args.out))
        return 0
    if args.make_tiny:
        make_tiny(args.model, Path(args.make_tiny))
        return 0
    if args.write:
        from figure_blocks import read_for_write, write_blocks  # imports tether: not in the TRL child

        from tether.errors import TetherError

        try:
            read_for_write(args.write, ["vs-trl"])  # markers checked before anything runs
        except TetherError as e:
            ap.error(f"--write: {e}")
    if args.from_json:
        if not args.write:
            ap.error("--from-json needs --write")
        try:
            record = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as e:
            ap.error(f"--from-json {args.from_json}: {e}")
        write_blocks(args.write, {"vs-trl": block(record)})
        return 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages or set(stages) - set(STAGES):
        ap.error(f"--stages: choose from {', '.join(STAGES)}")
    if not Path(args.trl_python).is_file():
        ap.error(f"--trl-python {args.trl_python} does not exist; make the venv (see this file's docstring)")
    if not Path(args.model, "config.json").is_file():
        ap.error(f"--model {args.model} is no model directory (`tether models pull smollm2-135m-instruct`)")

    import torch
    from steps import matmul_peak, parameter_counts

    torch.set_num_threads(args.threads)
    args.non_embedding_params = parameter_counts(args.model)[0]
    m = machine()
    load0 = os.getloadavg()
    peak0 = matmul_peak() / 1e9  # GFLOP/s, read again at the end
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']:.0f} GB; torch threads {args.threads}")
    print(f"commit {m['commit']}, {m['date']}; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"tether: {versions(args.tether_python)}; TRL venv: {versions(args.trl_python)}")
    print(f"model {args.model}; data {args.data}; {args.pairs} pairs; runs of {args.steps[0]} and "
          f"{args.steps[1]} steps; s/step = (t2 - t1) / ({args.steps[1]} - {args.steps[0]})", flush=True)
    pairs = select_pairs(args.data, args.pairs, args.max_prompt_chars)
    work_dir = args.keep or tempfile.mkdtemp(prefix="vs-trl-")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    write_data(pairs, data)
    started = time.perf_counter()
    if not args.no_warmup:
        for tool in ("trl", "tether"):
            make = tether_command if tool == "tether" else trl_command
            (work / "warmup").mkdir(exist_ok=True)
            cmd, env = make(stages[0], args, data, args.steps[0], work / "warmup")
            seconds, _ = run_process(cmd, env, work / "warmup" / f"{tool}.log")
            print(f"  warm-up {tool} {stages[0]} ({args.steps[0]} steps, not counted): {seconds:.1f} s",
                  flush=True)
    results = []
    for stage in stages:
        trl_r = measure("trl", stage, args, data, work)
        tether_r = measure("tether", stage, args, data, work)
        results.append((trl_r, tether_r))
    load1 = os.getloadavg()
    peaks = [peak0, matmul_peak() / 1e9]

    print(f"\n{'stage':<6}{'TRL s/step':>11}{'TRL RSS':>9}{'tether s/step':>14}{'tether RSS':>11}"
          f"{'lead':>8}{'memory':>8}")
    for trl_r, tether_r in results:
        lead, memory = lead_and_memory(trl_r, tether_r)
        print(f"{trl_r['stage']:<6}{trl_r['s_per_step']:>11.2f}{trl_r['peak_rss_gb']:>7.2f}GB"
              f"{tether_r['s_per_step']:>14.2f}{tether_r['peak_rss_gb']:>9.2f}GB{lead:>7.2f}x{memory:>8.2f}")
        if "real_gflop_per_s" in tether_r:
            print(f"        tether on real tokens: {tether_r['real_tokens']} in "
                  f"{args.steps[1] - args.steps[0]} steps, {tether_r['real_gflop_per_s']:.1f} GFLOP/s, "
                  f"{of_peak(tether_r, peaks):.1%} of the matmul peak")
        if "completion_tokens" in trl_r:
            print(f"        mean completion tokens (the {args.steps[1]}-step runs): TRL "
                  f"{trl_r['completion_tokens'] or float('nan'):.1f}, tether "
                  f"{tether_r['completion_tokens'] or float('nan'):.1f}")
    if any(r["s_per_step"] <= 0 for pair in results for r in pair):
        print("a run of N2 steps took no longer than the run of N1: start-up varied more than steps cost; "
              "these figures are noise (use quiet cores or more steps)")
    print("lead = TRL s/step / tether s/step; memory = tether peak RSS / TRL peak RSS. Load average at the "
          f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {time.perf_counter() - started:.0f} s in all; "
          f"runs in {work}")
    print(f"fp32 matmul peak {peaks[0]:.1f} GFLOP/s at the start, {peaks[1]:.1f} at the end (of peak: of the "
          f"higher); N = {args.non_embedding_params} non-embedding parameters")
    record = {**m, "load_start": load0, "load_end": load1, "threads": args.threads, "steps": args.steps,
              "matmul_peak_gflops": peaks, "non_embedding_params": args.non_embedding_params,
              "dpo_checkpoint_layers": DPO_CHECKPOINT_LAYERS, "pairs": args.pairs, "model": args.model,
              "results": [r for pair in results for r in pair]}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    if args.write:
        write_blocks(args.write, {"vs-trl": block(record)})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
