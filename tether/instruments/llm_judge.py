"""A pairwise LLM judge: any local Hugging Face causal LM asked which of two responses is better.

The judge reads a prompt built from `template` (the user's prompt and the two responses as A and B) and
the probability of its next token being the answer token of A rather than B: P(A) = softmax over the two
answer tokens' logits. LLM judges favour a position (Zheng et al. 2023, "Judging LLM-as-a-judge", sec. 3.3);
asking in both orders and averaging cancels it:

    P(first preferred) = ½·[P(A | first as A, second as B) + P(B | second as A, first as B)]

so swapping the two responses gives exactly 1 − P, and a judge that only ever says "A" gives ½.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tether.data import pad, pad_id, position_ids, render_plain
from tether.instruments.judges import Judge

TEMPLATE = (
    "Which response answers the request better?\n\n"
    "Request: {prompt}\n\n"
    "Response A: {first}\n\n"
    "Response B: {second}\n\n"
    "Answer with A or B. The better response is"
)


def question_text(template: str, prompt, first: str, second: str) -> str:
    """The judge's question: `template` with the request (chat messages rendered as plain text) and the two
    responses as A and B."""
    text_prompt = render_plain(prompt) if isinstance(prompt, list) else prompt
    return template.format(prompt=text_prompt, first=first, second=second)


def both_orders(prob_a, prompts, first, second) -> list[float]:
    """P(first preferred) = ½·[P(A | first as A) + 1 − P(A | second as A)] for each triple (the module
    docstring), with prob_a([(prompt, a, b), ...]) → P(answer A) of each question with a as A, b as B."""
    if not len(prompts) == len(first) == len(second):
        raise ValueError("prompts, first and second must have the same length")
    forward = list(zip(prompts, first, second, strict=True))
    swapped = [(p, b, a) for p, a, b in forward]
    pa = prob_a(forward + swapped)
    n = len(forward)
    return [0.5 * (pa[i] + (1.0 - pa[n + i])) for i in range(n)]


class PairwiseLLMJudge(Judge):
    """P(first preferred) from a causal LM's next-token probabilities of the answer tokens, both orders."""

    def __init__(
        self,
        model,
        tokenizer,
        template: str = TEMPLATE,
        answers: tuple[str, str] = (" A", " B"),
        chat_template: bool | None = None,
        batch_size: int = 8,
        name: str = "llm",
    ):
        """answers: the texts whose first token stands for A and for B (" A" / " B" with a leading space,
        as BPE tokenizers spell a word after a space; for a word-level tokenizer "A" / "B"). chat_template:
        wrap the question as a user turn with the tokenizer's chat template (None: when it has one)."""
        self.model, self.tokenizer, self.template = model.eval(), tokenizer, template
        self.batch_size, self.name = batch_size, name
        ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        if not all(ids) or ids[0][0] == ids[1][0]:
            raise ValueError(f"answers {answers!r} must start with two different tokens")
        self.answer_ids = (ids[0][0], ids[1][0])
        if chat_template is None:
            chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.chat_template = chat_template

    def question_ids(self, prompt, first: str, second: str, text: str | None = None) -> list[int]:
        """The ids of the judge's question; `text`: the question already written out (else the template's)."""
        if text is None:
            text = question_text(self.template, prompt, first, second)
        if self.chat_template:
            messages = [{"role": "user", "content": text}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    @torch.no_grad()
    def prob_a(self, questions: Sequence[list[int]]) -> list[float]:
        """P(answer A) against answer B after each question (left-padded batches)."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(questions), self.batch_size):
            ids, attn = pad(questions[start : start + self.batch_size], pad_id(self.tokenizer), side="left")
            ids, attn = ids.to(device), attn.to(device)  # (B, T)
            logits = self.model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits
            last = logits[:, -1, list(self.answer_ids)].double()  # (B, 2): logits of A and B
            out += torch.softmax(last, dim=-1)[:, 0].tolist()
        return out

    def prefer(self, prompts, first, second) -> list[float]:
        return both_orders(lambda questions: self.prob_a([self.question_ids(*q) for q in questions]),
                           prompts, first, second)


def load_llm_judge(model_dir: str, device=None, **kwargs) -> PairwiseLLMJudge:
    """A `PairwiseLLMJudge` on the causal LM and tokenizer in `model_dir`."""
    from tether.model_files import load_causal_lm, load_tokenizer

    model = load_causal_lm(model_dir)
    tokenizer = load_tokenizer(model_dir)
    if device is not None:
        model.to(device)
    return PairwiseLLMJudge(model, tokenizer, name=f"llm:{model_dir}", **kwargs)
