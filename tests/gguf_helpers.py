"""A tiny Llama GGUF file written by the tests themselves (no download), and the model it holds.

The file follows the layout llama.cpp gives a Llama checkpoint (the GGUF spec, github.com/ggml-org/ggml
docs/gguf.md): `llama.*` hyper-parameters, a byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`:
token list, merges, token types, special ids), a chat template, and float32 tensors named token_embd,
blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm.

One convention matters for the check: llama.cpp stores the q and k projections with the rows of each head
reordered from Hugging Face's rotate-half layout (first half of a head's dimensions, then second half) to
the interleaved pairs of the original Llama code (dim 0 of each pair from the first half, dim 1 from the
second). `interleave_rope_rows` does that reordering from its definition, independently of transformers'
reader, so a converted model equals the source only if the reader undoes it correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tether.models import build_tiny_llama

BYTE_TOKENS = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ"]  # printable ASCII, Ġ = byte-level space
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_vocab() -> list[str]:
    """Specials (ids 0-2), the byte tokens, then one token per merge result."""
    merged = [m.replace(" ", "") for m in MERGES]
    return [*SPECIALS, *BYTE_TOKENS, *merged]


def tiny_source_model(seed: int = 0):
    """The float32 Llama the tiny GGUF holds (untied output head, so both embeddings are tested)."""
    model = build_tiny_llama(len(tiny_vocab()), hidden_size=32, num_layers=2, num_heads=4, seed=seed,
                             pad_token_id=0, bos_token_id=0, eos_token_id=2)
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        head = torch.randn(model.lm_head.weight.shape, generator=g) * 0.05
        model.lm_head.weight = torch.nn.Parameter(head)
        for name, param in model.named_parameters():
            if "norm" in name:  # not all ones, so a norm the reader dropped would show
                param.add_(torch.rand(param.shape, generator=g) - 0.5)
    return model


def interleave_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Each head's rows from [x_0..x_{d/2-1}, y_0..y_{d/2-1}] to [x_0, y_0, x_1, y_1, ...] (llama.cpp's)."""
    rows, cols = w.shape
    d = rows // n_heads
    halves = w.reshape(n_heads, 2, d // 2, cols)  # head, half, pair index, column
    return halves.transpose(0, 2, 1, 3).reshape(rows, cols)  # head, pair index, half


def write_tiny_gguf(path: Path, model) -> Path:
    import gguf

    c = model.config
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tiny_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    w.add_token_merges(MERGES)
    w.add_token_types([3 if t in SPECIALS else 1 for t in vocab])  # 3 control, 1 normal
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHAT_TEMPLATE)

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        q = interleave_rope_rows(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads)
        k = interleave_rope_rows(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads)
        for name, t in [("attn_norm", sd[p + "input_layernorm.weight"]), ("attn_q", q), ("attn_k", k),
                        ("attn_v", sd[p + "self_attn.v_proj.weight"]),
                        ("attn_output", sd[p + "self_attn.o_proj.weight"]),
                        ("ffn_norm", sd[p + "post_attention_layernorm.weight"]),
                        ("ffn_gate", sd[p + "mlp.gate_proj.weight"]),
                        ("ffn_up", sd[p + "mlp.up_proj.weight"]),
                        ("ffn_down", sd[p + "mlp.down_proj.weight"])]:
            w.add_tensor(f"blk.{i}.{name}.weight", t)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
