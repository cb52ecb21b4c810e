"""Building, loading and saving Hugging Face causal LMs.

The lab and the tests use the two builders here: a word-level tokenizer over a fixed vocabulary and a small
Llama-style model made from a config (no downloads). Both save to a directory that
`AutoTokenizer.from_pretrained` / `AutoModelForCausalLM.from_pretrained` load, exactly like a real model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


def build_word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: ids 0-3 are <pad> <unk> <bos> <eos>, then `words` in order.

    Splitting on whitespace means tokenize(a + " " + b) == tokenize(a) + tokenize(b), so prompt and
    completion boundaries are exact. Decoding joins words with single spaces.
    """
    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, *words):
        if w.split() != [w]:
            raise ValueError(f"vocabulary entry {w!r} is not a single whitespace-free word")
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )


def build_tiny_llama(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    seed: int = 0,
    pad_token_id: int = 0,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-style causal LM (float32), deterministic given `seed`."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model
