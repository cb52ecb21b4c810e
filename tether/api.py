"""The Python API that the commands are thin layers over; usable from a notebook.

    from tether.api import SFTConfig, load_config, train_sft
    cfg = load_config(SFTConfig, "configs/sft.yaml", ["train.max_steps=100"])
    run_dir = train_sft(cfg, "runs/sft")     # RUN/model is the fine-tuned model
    summary = run_pipeline(RunConfig(), "runs/demo")   # lab → SFT → RM → PPO → instruments
    sweep = run_sweep(RunConfig(), [0.01, 0.1], "runs/sweep")   # one PPO run per beta, beta recommended
    run_labelling(None, "lab", "runs/cai", prompts="p.jsonl", policy="runs/sft/model")  # RL-CAI labels + card
"""

from tether.cai import load_constitution, load_judge, run_labelling, run_revision
from tether.config import (
    DPOConfig,
    DPODataConfig,
    DPOEvalConfig,
    EpochLoopConfig,
    GRPOConfig,
    LoopConfig,
    PPOConfig,
    RLOOConfig,
    RMConfig,
    RMDataConfig,
    SFTConfig,
    SFTDataConfig,
    dump_config,
    load_config,
    validate,
)
from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs
from tether.instruments.probe import probe_reward_model
from tether.instruments.probe_run import run_probe
from tether.lora_merge import load_adapter_dir, merge_adapter
from tether.pipeline import RunConfig, run_pipeline
from tether.reward_model import create_reward_model, load_reward_model, score_texts
from tether.rewards import load_reward, load_weighted_reward
from tether.sweep import run_sweep
from tether.trainers.base import Loop, TrainingDiverged, TrainingInterrupted
from tether.trainers.dpo import train_dpo
from tether.trainers.grpo import train_grpo
from tether.trainers.ppo import train_ppo
from tether.trainers.rloo import train_rloo
from tether.trainers.rm import train_rm
from tether.trainers.sft import train_sft

__all__ = [
    "DPOConfig",
    "DPODataConfig",
    "DPOEvalConfig",
    "EpochLoopConfig",
    "EvalConfig",
    "GRPOConfig",
    "Loop",
    "LoopConfig",
    "PPOConfig",
    "RLOOConfig",
    "RMConfig",
    "RMDataConfig",
    "RunConfig",
    "SFTConfig",
    "SFTDataConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "create_reward_model",
    "dump_config",
    "evaluate_policy_dirs",
    "load_adapter_dir",
    "load_config",
    "load_constitution",
    "load_judge",
    "load_reward",
    "load_reward_model",
    "load_weighted_reward",
    "merge_adapter",
    "probe_reward_model",
    "run_labelling",
    "run_pipeline",
    "run_probe",
    "run_revision",
    "run_sweep",
    "score_texts",
    "train_dpo",
    "train_grpo",
    "train_ppo",
    "train_rloo",
    "train_rm",
    "train_sft",
    "validate",
]
