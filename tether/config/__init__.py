"""Stage configs: one dataclass per stage, loaded from YAML, overridden by `key=value`, dumped resolved.

A config is a tree of dataclasses (a field whose type is a dataclass is a nested section; override its
fields with dotted keys, `train.lr=1e-4`). Every field carries a one-line docstring saying why it exists.

    cfg = load_config(SFTConfig, "configs/sft.yaml", ["train.lr=3e-4", "data.max_length=128"])
    dump_config(cfg, run_dir, data_files=[cfg.data.train])   # writes RUN/config.yaml

Values are checked against the field types (int, float, bool, str, Literal[...], X | None, list[X], nested
dataclasses): an unknown key or a wrongly typed value raises `TetherError` naming the key. In YAML, a float
written without a dot (`1e-4`, which YAML reads as a string) is accepted for a float field; NaN and ±inf are
not. Then each value is checked against its field's rule (declared with the field: `ranged(8, ">= 1")`) and
each config's `problems()` (rules between fields), so that a bad value fails at load with one line naming
the key, not later in training. A key written twice in a YAML file is an error naming the file and line.

By what they configure: `loader` (rules, loading, overrides, validation), `dump` (RUN/config.yaml with its
provenance), `train` (the training loop and LoRA), `supervised` (SFT, reward model, DPO), `rl` (PPO, GRPO,
RLOO).
"""

from tether.config.dump import dump_config, git_commit, provenance, sha256_file
from tether.config.loader import (
    PROVENANCE_KEY,
    SEED,
    Rule,
    UniqueKeyLoader,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    ranged,
    read_yaml,
    to_dict,
    validate,
)
from tether.config.rl import (
    GroupRewardConfig,
    GroupRolloutConfig,
    GroupStageConfig,
    GRPOAlgoConfig,
    GRPOConfig,
    PPOAlgoConfig,
    PPOConfig,
    PPODataConfig,
    PPOEvalConfig,
    PPOKLConfig,
    PPORewardConfig,
    PPORolloutConfig,
    RewardTerm,
    RLOOAlgoConfig,
    RLOOConfig,
    RLStageConfig,
)
from tether.config.supervised import (
    DPOConfig,
    DPODataConfig,
    DPOEvalConfig,
    RMConfig,
    RMDataConfig,
    SFTConfig,
    SFTDataConfig,
    TemplateConfig,
)
from tether.config.train import EpochLoopConfig, LoopConfig, LoRAConfig

__all__ = [
    "PROVENANCE_KEY", "SEED", "Rule", "UniqueKeyLoader", "dump_config", "from_dict", "git_commit",
    "load_config", "load_yaml", "parse_override", "provenance", "ranged", "read_yaml", "sha256_file",
    "to_dict", "validate", "EpochLoopConfig", "LoopConfig", "LoRAConfig", "DPOConfig", "DPODataConfig",
    "DPOEvalConfig", "RMConfig", "RMDataConfig", "SFTConfig", "SFTDataConfig", "GroupRewardConfig",
    "GroupRolloutConfig", "GroupStageConfig", "GRPOAlgoConfig", "GRPOConfig", "PPOAlgoConfig",
    "PPOConfig", "PPODataConfig", "PPOEvalConfig", "PPOKLConfig", "PPORewardConfig", "PPORolloutConfig",
    "RewardTerm", "RLOOAlgoConfig", "RLOOConfig", "RLStageConfig", "TemplateConfig",
]
