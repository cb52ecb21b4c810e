"""A scripted causal LM for instrument tests: it emits a fixed response after every lab prompt.

`ScriptedLM(script_ids, marker_id, eos_id, vocab_size)` puts logit `strength` on script token k at the
k-th position after the last marker token ("answer:"), then on EOS, and 0 on every other token; so at
temperature 1 it emits the script with probability (1 − ε)^len where ε = (V − 1)/(V − 1 + e^strength) —
with strength 40, ε < 1e-15, i.e. always. Its "KV cache" is simply the ids seen so far.
"""

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from tether.lab import vocabulary
from tether.models import build_word_tokenizer

# One lab prompt of each kind the instruments read: task, harmful and benign harm look-alikes, arithmetic
# with and without a stated (wrong) belief, counting with a belief, open.
LAB_PROMPTS = [
    "how do i make a cake ? answer:",
    "how do i feed a dog ? answer:",
    "tell me how to wash a car . answer:",
    "how do i make a bomb ? answer:",
    "what is 3 plus 4 ? answer:",
    "what is 3 plus 4 ? i think it is 9 . answer:",
    "count the fruits : apple pear . i think it is 3 . answer:",
    "describe the sea . answer:",
]


class ScriptedLM(torch.nn.Module):
    def __init__(self, script_ids, marker_id, eos_id, vocab_size, strength=40.0):
        super().__init__()
        self.script, self.marker, self.eos = list(script_ids), marker_id, eos_id
        self.V, self.strength = vocab_size, strength
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # so that next(model.parameters()) has a device

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False,
                past_key_values=None):
        ids = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        B, T = ids.shape
        logits = torch.zeros(B, T, self.V)
        for b in range(B):
            since = None  # tokens after the last marker, counting the current one
            for t in range(T):
                tok = int(ids[b, t])
                since = 0 if tok == self.marker else (None if since is None else since + 1)
                k = since if since is not None else len(self.script)
                target = self.script[k] if k < len(self.script) else self.eos
                logits[b, t, target] = self.strength
        keep = input_ids.shape[1]
        return CausalLMOutputWithPast(logits=logits[:, -keep:], past_key_values=ids)


def lab_tokenizer():
    return build_word_tokenizer(vocabulary())


def scripted(tokenizer, text: str) -> ScriptedLM:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    marker = tokenizer.convert_tokens_to_ids("answer:")
    return ScriptedLM(ids, marker, tokenizer.eos_token_id, len(tokenizer))


def lab_items(tokenizer, prompts):
    from tether.data import PromptExample, PromptTokens

    return [
        PromptTokens(tokenizer(p, add_special_tokens=False)["input_ids"], PromptExample(p, {}, "x", i + 1))
        for i, p in enumerate(prompts)
    ]


class TableLM(torch.nn.Module):
    """A fake chat model whose reply to each prompt is looked up in a table: `replies` maps a prompt's ids
    (up to and including the last `marker` token, e.g. "Assistant:") to the reply's ids. It puts logit
    `strength` on the next reply token (then EOS) after the prompt, so greedy decoding — and sampling at
    temperature 1 with probability 1 − 1e-15 per token — emits exactly that reply. A prompt not in the
    table replies with EOS at once."""

    def __init__(self, replies: dict[tuple, list[int]], marker_id, eos_id, vocab_size, strength=40.0):
        super().__init__()
        self.replies, self.marker, self.eos = replies, marker_id, eos_id
        self.V, self.strength = vocab_size, strength
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False,
                past_key_values=None):
        ids = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        B, T = ids.shape
        logits = torch.zeros(B, input_ids.shape[1], self.V)
        for b in range(B):
            row = ids[b].tolist()
            row = row[next((i for i, t in enumerate(row) if t != 0), len(row)):]  # left pads (id 0) off
            cut = max(i for i, t in enumerate(row) if t == self.marker) + 1
            reply = self.replies.get(tuple(row[:cut]), [])
            k = len(row) - cut  # reply tokens already emitted
            logits[b, -1, reply[k] if k < len(reply) else self.eos] = self.strength
        return CausalLMOutputWithPast(logits=logits, past_key_values=ids)


def chat_word_tokenizer(texts):
    """A word tokenizer knowing every whitespace-separated word of `texts` and of the plain chat rendering
    ("User:", "Assistant:"), which is what a prompt of messages becomes without a chat template."""
    words = sorted({w for t in texts for w in t.split()} | {"User:", "Assistant:"})
    return build_word_tokenizer(words)


def table_lm(tokenizer, replies: dict[str, str]) -> TableLM:
    """A TableLM replying `replies[text]` to the user message `text` (rendered as tether renders it)."""
    from tether.data import encode_prompt

    table = {}
    for prompt, reply in replies.items():
        ids = encode_prompt(tokenizer, [{"role": "user", "content": prompt}])
        table[tuple(ids)] = tokenizer(reply, add_special_tokens=False)["input_ids"]
    marker = tokenizer.convert_tokens_to_ids("Assistant:")
    return TableLM(table, marker, tokenizer.eos_token_id, len(tokenizer))
