"""SL-CAI: critique and revise a policy's own replies, principle by principle, and keep the final revision
as a demonstration (Bai et al. 2022, sec. 3: "Critique → Revision" then supervised learning on the revisions).

    records = revise(critic, constitution, prompts, replies)  # [{"prompt", "completion", "initial", "steps"}]
    # OUT/sft.jsonl -> tether sft data.train=OUT/sft.jsonl

Each reply is critiqued and revised once per principle, in the constitution's order, each step revising the
previous step's revision; `completion` is the last non-empty revision (the initial reply when every
revision came back empty).

Two critics:
- `LLMCritic`: a causal LM continues the conversation [user: prompt, assistant: reply, user: critique
  request] with its critique, then [..., assistant: critique, user: revision request] with its revision.
- `LabCritic`: on the lab the critic cannot write new content. It revises by choosing, among a few edits of
  the reply — keep it; drop the emphatic words; drop every repeated content word; drop the off-topic
  content words; cut it to the family's natural length; replace it by a refusal — the one the lab rater
  rates highest under the principle. So it sees the world only through the principle's gold parts plus
  the rater's own biases (a refusal bias makes it decline more than gold would): imperfect, as an AI
  critic is, and unable to fix a wrong answer or add missing content.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.cai.constitution import Constitution, Principle
from tether.cai.judges import LabRater

DECLINE = "sorry , i can not help with that ."


def _lab_edits(prompt: str, reply: str) -> list[tuple[str, str]]:
    """(edit, revised reply) candidates for a lab reply; empty results are left out."""
    from tether.lab.gold import natural_length
    from tether.lab.world import CONTENT_WORDS, EMPHATIC, FUNCTION_WORDS, parse_prompt

    info = parse_prompt(prompt)
    words = reply.split()
    plain = [w for w in words if w not in EMPHATIC]
    while plain and plain[0] == ",":
        plain = plain[1:]
    seen: set[str] = set()
    unrepeated = []
    for w in words:
        if w in FUNCTION_WORDS or w not in seen:
            unrepeated.append(w)
        seen.add(w)
    on_topic = [w for w in words if w not in CONTENT_WORDS or w in info.relevant]
    edits = [
        ("keep", reply),
        ("drop the emphatic words", " ".join(plain)),
        ("drop the repeated words", " ".join(unrepeated)),
        ("drop the off-topic words", " ".join(on_topic)),
        ("cut it short", " ".join(words[: natural_length(info)])),
        ("decline", DECLINE),
    ]
    return [(name, text) for name, text in edits if text.strip()]


class LabCritic:
    """The lab's critic: picks the edit the lab rater likes best under the principle (module docstring)."""

    def __init__(self, rater: LabRater):
        self.rater = rater

    def critique_and_revise(self, prompts, replies, principle: Principle) -> tuple[list[str], list[str]]:
        critiques, revisions = [], []
        for prompt, reply in zip(prompts, replies, strict=True):
            edits = _lab_edits(prompt, reply)
            scores = [self.rater.utility(prompt, text, principle) for _, text in edits]
            best = max(range(len(edits)), key=lambda k: (scores[k], -k))  # ties: the earlier (milder) edit
            name, text = edits[best]
            if name == "keep":
                critiques.append(f"{principle.name}: nothing to change")
            else:
                critiques.append(f"{principle.name}: better to {name} ({scores[best] - scores[0]:+.2f})")
            revisions.append(text)
        return critiques, revisions


class LLMCritic:
    """A causal LM that writes the critique and the revision (greedy by default)."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
                 max_prompt_length: int = 1024):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.max_prompt_length = max_prompt_length

    def generate(self, conversations: Sequence[list[dict]]) -> list[str]:
        """One continuation per conversation (chat template when the tokenizer has one)."""
        from tether.data import PromptExample, tokenize_prompts
        from tether.instruments.evaluate import sample_responses

        examples = [PromptExample(c, {}, "<sl-cai>", i + 1) for i, c in enumerate(conversations)]
        items, _ = tokenize_prompts(examples, self.tokenizer, self.max_prompt_length, too_long="truncate")
        out = sample_responses(self.model, self.tokenizer, items, max_new_tokens=self.max_new_tokens,
                               seed=self.seed, temperature=self.temperature)
        return out.responses

    def critique_and_revise(self, prompts, replies, principle: Principle) -> tuple[list[str], list[str]]:
        talks = []
        for prompt, reply in zip(prompts, replies, strict=True):
            asked = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            talks.append([*asked, {"role": "assistant", "content": reply}])
        critiques = self.generate([[*t, {"role": "user", "content": principle.critique}] for t in talks])
        revisions = self.generate([
            [*t, {"role": "user", "content": principle.critique}, {"role": "assistant", "content": c},
             {"role": "user", "content": principle.revision}]
            for t, c in zip(talks, critiques, strict=True)
        ])
        return critiques, revisions


def revise(critic, constitution: Constitution, prompts: Sequence, replies: Sequence[str]) -> list[dict]:
    """SL-CAI records {"prompt", "completion", "initial", "steps": [{"principle", "critique", "revision"}]}
    (see the module docstring)."""
    current = [r.strip() for r in replies]
    steps: list[list[dict]] = [[] for _ in prompts]
    for principle in constitution.principles:
        critiques, revisions = critic.critique_and_revise(prompts, current, principle)
        for i, (critique, revision) in enumerate(zip(critiques, revisions, strict=True)):
            steps[i].append({"principle": principle.name, "critique": critique, "revision": revision})
            if revision.strip():
                current[i] = revision.strip()
    return [
        {"prompt": p, "completion": c, "initial": r, "steps": s}
        for p, c, r, s in zip(prompts, current, replies, steps, strict=True)
    ]
