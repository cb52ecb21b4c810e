"""Constitutional AI / RLAIF (Bai et al. 2022, arXiv:2212.08073): preferences and revisions from an AI critic
that follows a written constitution, and a card that says how far its labels can be trusted.

    from tether.cai import load_constitution, load_judge, run_labelling, run_revision
    con = load_constitution()                       # tether/configs/constitution.yaml
    judge = load_judge("lab", con)                  # or "llm:MODEL_DIR"
    judge.prefer(prompts, first, second)            # P(first preferred), symmetric under swapping
"""

from tether.cai.constitution import Constitution, Principle, RaterSettings, load_constitution
from tether.cai.judges import ConstitutionJudge, ConstitutionLLMJudge, LabRater, load_judge
from tether.cai.label import Pair, label_and_write, label_pairs, pairs_from_file, sample_pairs
from tether.cai.stages import ai_feedback_stage, load_policy, run_labelling, run_revision

__all__ = [
    "Constitution",
    "ConstitutionJudge",
    "ConstitutionLLMJudge",
    "LabRater",
    "Pair",
    "Principle",
    "RaterSettings",
    "ai_feedback_stage",
    "label_and_write",
    "label_pairs",
    "load_constitution",
    "load_judge",
    "load_policy",
    "pairs_from_file",
    "run_labelling",
    "run_revision",
    "sample_pairs",
]
