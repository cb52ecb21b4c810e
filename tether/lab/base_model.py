"""Stage 0: the lab's tiny base model, pretrained on a synthetic corpus that mixes good and bad behaviour.

A document is `prompt + " " + response` followed by <eos>, with no <bos>: the same token sequence the
trainers build from a `{"prompt", "completion"}` record. Pretraining is plain next-token prediction over whole
documents (prompt tokens included), one pass over freshly generated documents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from tether.data import pad
from tether.lab.behaviours import PRETRAIN_FLAWS, sample_response
from tether.lab.config import LabConfig
from tether.lab.world import PromptInfo, sample_prompt, vocabulary
from tether.models import build_tiny_llama, build_word_tokenizer
from tether.quiet import quiet_transformers
from tether.rollout import decode_responses, sample


def lab_tokenizer():
    """The world's word-level tokenizer: <pad> <unk> <bos> <eos>, then `vocabulary()`."""
    return build_word_tokenizer(vocabulary())


def draw_prompts(rng: random.Random, config: LabConfig, n: int) -> list[PromptInfo]:
    """`n` prompts drawn with the config's family mix."""
    names = list(config.families)
    weights = [config.families[f] for f in names]
    return [
        sample_prompt(rng, rng.choices(names, weights)[0], config.belief_correct_share, config.harmful_share)
        for _ in range(n)
    ]


def pretraining_corpus(rng: random.Random, config: LabConfig, n: int) -> list[str]:
    """`n` documents (prompt and response), a `pretrain_good_share` of them well-behaved."""
    docs = []
    for info in draw_prompts(rng, config, n):
        response = sample_response(
            rng, info, config.pretrain_good_share, config.max_response_words, allowed=PRETRAIN_FLAWS
        )
        docs.append(f"{info.text} {response}")
    return docs


def length_bucketed(rng: random.Random, docs: list[str], size: int, group: int = 16) -> list[list[str]]:
    """Batches of `size` documents of similar length (less padding, about half the compute): sort each run of
    `group` batches by length, cut it into batches, then shuffle the batch order."""
    batches = []
    for start in range(0, len(docs), size * group):
        chunk = sorted(docs[start : start + size * group], key=lambda d: len(d.split()))
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


def _batch(tokenizer, docs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), right-padded; labels are -100 on padding."""
    ids = [tokenizer(d)["input_ids"] + [tokenizer.eos_token_id] for d in docs]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return input_ids, mask, labels


def pretrain(config: LabConfig, seed: int, progress: bool = True):
    """(model, tokenizer, losses): a freshly initialised model trained on `pretrain_steps` batches of new
    documents. Deterministic given `seed` (CPU, fixed data order, no dropout)."""
    tokenizer = lab_tokenizer()
    model = build_tiny_llama(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=128,
        seed=seed,
    )
    rng = random.Random(f"{seed}-pretrain")
    steps, size = config.pretrain_steps, config.pretrain_batch_size
    batches = length_bucketed(rng, pretraining_corpus(rng, config, steps * size), size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr, weight_decay=0.01)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="pretraining", disable=not progress, leave=False)
    for step in bar:
        input_ids, mask, labels = _batch(tokenizer, batches[step])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, tokenizer, losses


@torch.no_grad()
def sample_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
) -> list[str]:
    """One sampled response per prompt, by `tether.rollout.sample` (ancestral sampling at `temperature`, no
    top-p) in batches of `batch_size` that draw from one generator seeded with `seed`: deterministic given
    `seed`. A response ends at <eos>; <pad>, <bos> and <unk>, which no lab document contains, are banned.
    Prompts are tokenised as the documents were (no <bos>); responses are decoded without special tokens."""
    generator = torch.Generator().manual_seed(seed)
    specials = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id)
    banned = [t for t in specials if t is not None]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
        input_ids, mask = pad(ids, tokenizer.pad_token_id, side="left")  # (B, P)
        rollout = sample(
            model,
            input_ids.to(device),
            mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=temperature,
            generator=generator,
            banned_token_ids=banned,
        )
        out += decode_responses(tokenizer, rollout)
    return out


def save_model(model, tokenizer, out_dir) -> None:
    """Save so that AutoModelForCausalLM / AutoTokenizer .from_pretrained(out_dir) load both."""
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    with quiet_transformers():
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
