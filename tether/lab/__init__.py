"""The lab: an embedded RLHF world with a known gold reward, biased simulated labelers and a tiny base model.

from tether.lab import LabConfig, build_lab, gold_reward, gold_parts, Labeler
lab = build_lab("runs/lab", LabConfig(), seed=0)          # model + data + card.json
gold_reward("what is 3 plus 4 ? answer:", "7")          # 1.0
"""

from tether.lab.build import WORLD_VERSION, LabBuild, LabPaths, build_lab, open_lab
from tether.lab.config import LabConfig, LabelerConfig, apply_overrides
from tether.lab.gold import PART_NAMES, agrees, gold_parts, gold_reward, is_correct, is_refusal
from tether.lab.labelers import BIASES, Labeler, LabelerMix, agreement, bias_effects, bias_features
from tether.lab.score import score_file, score_records
from tether.lab.world import FAMILIES, PromptInfo, parse_prompt, sample_prompt, vocabulary

__all__ = [
    "BIASES",
    "FAMILIES",
    "PART_NAMES",
    "WORLD_VERSION",
    "LabBuild",
    "LabConfig",
    "LabPaths",
    "Labeler",
    "LabelerConfig",
    "LabelerMix",
    "PromptInfo",
    "agreement",
    "agrees",
    "apply_overrides",
    "bias_effects",
    "bias_features",
    "build_lab",
    "gold_parts",
    "gold_reward",
    "is_correct",
    "is_refusal",
    "open_lab",
    "parse_prompt",
    "sample_prompt",
    "score_file",
    "score_records",
    "vocabulary",
]
