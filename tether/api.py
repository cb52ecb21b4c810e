"""The Python API that the commands are thin layers over; usable from a notebook.

    from tether.api import SFTConfig, load_config, train_sft
    cfg = load_config(SFTConfig, "configs/sft.yaml", ["train.max_steps=100"])
    run_dir = train_sft(cfg, "runs/sft")     # RUN/model is the fine-tuned model
"""

from tether.config import (
    LoopConfig,
    RMConfig,
    RMDataConfig,
    SFTConfig,
    SFTDataConfig,
    dump_config,
    load_config,
)
from tether.reward_model import create_reward_model, load_reward_model, score_texts
from tether.trainers.base import Loop, TrainingDiverged, TrainingInterrupted
from tether.trainers.rm import train_rm
from tether.trainers.sft import train_sft

__all__ = [
    "Loop",
    "LoopConfig",
    "RMConfig",
    "RMDataConfig",
    "SFTConfig",
    "SFTDataConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "create_reward_model",
    "dump_config",
    "load_config",
    "load_reward_model",
    "score_texts",
    "train_rm",
    "train_sft",
]
