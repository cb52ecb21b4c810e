"""The reward model: an SFT trunk with a scalar head, stored as a Hugging Face sequence-classification model.

    model, tokenizer = create_reward_model("runs/sft/model")        # trunk from SFT, head new
    scores = sequence_scores(model, input_ids, attention_mask)      # (B,) reward of each row
    model, tokenizer = load_reward_model("runs/rm/model")           # a trained one
    chat_template, max_length = training_settings("runs/rm/model")  # how its training rows were built
    rewards = score_texts(model, tokenizer, prompts, completions, chat_template=chat_template,
                          max_length=max_length)                   # list[float], tokenised like its training

On disk it is `AutoModelForSequenceClassification` with `num_labels=1` (e.g. `LlamaForSequenceClassification`:
the causal LM's body plus a bias-free linear `score` head, hidden size → 1), written with `save_pretrained`
together with the tokenizer, so `from_pretrained` reloads it anywhere.

Creating it from the SFT directory keeps every trunk weight, drops the LM head and initialises the score head
afresh with the architecture's own initialiser (for Llama, normal with std `initializer_range`, 0.02), drawn
from torch's global RNG: seed it first for a reproducible head. Initial rewards are therefore small and
random; the Bradley-Terry loss only sees their differences.

Pooling is done here, not by Hugging Face: its forward takes the last token that is not the pad id, which
is wrong when pad == EOS (every response ends in EOS). `token_scores` applies the head at every position
(the trunk run with position ids counted over real tokens, so left padding changes nothing);
`sequence_scores` takes the score at the last position whose attention mask is 1, under left or right
padding. A PPO critic initialised from the reward model uses `token_scores` as its per-token values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from tether.data import Prompt, encode_completion, encode_nonempty_prompt, pad, pad_id
from tether.errors import TetherError
from tether.files import write_json
from tether.model_files import DTYPES as _DTYPES
from tether.model_files import load_tokenizer, resolve_model, weights_dir
from tether.packing import run_packed
from tether.quiet import quiet_transformers

log = logging.getLogger(__name__)


def create_reward_model(
    sft_dir: str | Path,
    tokenizer: str | Path | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
):
    """(model, tokenizer): the causal LM in `sft_dir` as a one-output sequence classifier with a new head.

    sft_dir: a model directory or a .gguf file (tether.model_files.resolve_model; safetensors weights only);
    tokenizer: a directory or .gguf when it differs from `sft_dir`; dtype: "float32", "bfloat16" or "auto".
    `config.pad_token_id` is set from the tokenizer (falling back to EOS), as Hugging Face needs one.
    """
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(tokenizer or sft_dir, trust_remote_code)
    trunk_dir = weights_dir(sft_dir)
    try:
        with quiet_transformers(errors_only=True):
            model, info = AutoModelForSequenceClassification.from_pretrained(
                trunk_dir, num_labels=1, dtype=_DTYPES[dtype], output_loading_info=True,
                use_safetensors=True, trust_remote_code=trust_remote_code,
            )
    except (OSError, ValueError) as e:
        raise TetherError(f"cannot load {str(sft_dir)!r} as a reward-model trunk: {e}") from None
    score_head(model)  # fail early on an architecture without a `score` head
    trunk_missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("score."))
    if trunk_missing:  # the head is expected to be new; a new trunk weight means a mismatched checkpoint
        raise TetherError(f"{sft_dir}: the trunk lacks {len(trunk_missing)} weights, e.g. {trunk_missing[0]}")
    model.config.pad_token_id = pad_id(tok)
    log.info("reward model from %s: trunk loaded, score head freshly initialised", sft_dir)
    return model, tok


def load_reward_model(
    model_dir: str | Path, dtype: str = "float32", device: str | torch.device | None = None
):
    """(model, tokenizer) of a saved reward model (RUN/model of `tether rm`, or a Hub id: resolve_model), in
    eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = resolve_model(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, dtype=_DTYPES[dtype], use_safetensors=True
            )
    except (OSError, ValueError) as e:
        raise TetherError(f"cannot load the reward model {str(model_dir)!r}: {e}") from None
    if model.config.num_labels != 1:
        raise TetherError(
            f"{model_dir}: a reward model has one output, this one has {model.config.num_labels}"
        )
    score_head(model)
    if device is not None:
        model.to(device)
    return model.eval(), tok


def score_head(model) -> torch.nn.Linear:
    """The linear head hidden → 1 (`model.score`, the name Hugging Face's causal-LM classifiers use)."""
    head = getattr(model, "score", None)
    plain = getattr(head, "original_module", head)  # a LoRA reward model trains a copy of the head (peft)
    if not isinstance(plain, torch.nn.Linear) or plain.out_features != 1:
        raise TetherError(
            f"{type(model).__name__} has no one-output linear `score` head; tether's reward "
            "model needs a decoder-only architecture with AutoModelForSequenceClassification"
        )
    return head


def token_scores(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The head applied at every position: (B, T) ids and mask → (B, T) float32 scores.

    Position t's score depends on tokens ≤ t only (causal trunk); scores at padding positions are junk (0
    when the batch runs packed, tether.packing).
    """
    from tether.lora import unwrap

    wrapper = getattr(model, "module", None)  # the model inside a DDP (or other single-module) wrapper
    inner = unwrap(wrapper if wrapper is not None else model)  # a LoRA model's adapted one

    def forward(ids, mask, positions, keep):
        if wrapper is None:
            trunk = inner.base_model  # e.g. LlamaModel: the body without any head
            hidden = trunk(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        else:  # only the wrapper's own forward lets DDP synchronise the gradients: the whole model through it
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
            hidden = out.hidden_states[-1]  # (b, t, H), the trunk's last (normalised) hidden state
        return score_head(inner)(hidden).squeeze(-1).float()  # (b, t)

    return run_packed(model, input_ids, attention_mask, forward)  # (B, T)


def last_positions(attention_mask: Tensor) -> Tensor:
    """Index of the last position with mask 1 in each row, (B, T) → (B,) long (0 for an empty row)."""
    T = attention_mask.shape[-1]
    steps = torch.arange(T, device=attention_mask.device)  # (T,)
    return (steps * (attention_mask != 0)).amax(-1)


def sequence_scores(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The reward of each row: the score at its last real token (EOS for a complete response), (B,)."""
    scores = token_scores(model, input_ids, attention_mask)  # (B, T)
    last = last_positions(attention_mask)  # (B,)
    return scores.gather(1, last[:, None]).squeeze(1)  # (B,)


@torch.no_grad()
def score_sequences(
    model, sequences: Sequence[Sequence[int]], pad_value: int, batch_size: int = 32
) -> list[float]:
    """Rewards of token-id sequences (prompt + response + EOS), scored `batch_size` at a time."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(sequences), batch_size):
        ids, mask = pad(sequences[i : i + batch_size], pad_value, side="right")  # (b, T) each
        out += sequence_scores(model, ids.to(device), mask.to(device)).tolist()
    model.train(was_training)
    return out


SETTINGS = "tether_rm.json"  # in a reward model's directory: how its training rows were built


def write_training_settings(model_dir: Path, chat_template: str, max_length: int | None) -> None:
    """MODEL/tether_rm.json: the data.chat_template and data.max_length the reward model was trained with,
    kept inside its directory so they travel with it (copied, or pushed to the Hub)."""
    write_json(Path(model_dir) / SETTINGS, {"chat_template": chat_template, "max_length": max_length})


def training_settings(model_dir: str | Path) -> tuple[str, int | None]:
    """(chat_template, max_length) the reward model in `model_dir` was trained with: its tether_rm.json, or,
    for one written before that file, data.chat_template and data.max_length of the `tether rm` run's
    RUN/config.yaml beside RUN/model. A directory with neither (a reward model saved by other means) gets
    tether's default formatting and no cut: ("auto", None)."""
    from tether.config import read_yaml

    own = Path(model_dir) / SETTINGS
    path = Path(model_dir).parent / "config.yaml"
    if own.is_file():
        path, data = own, json.loads(own.read_text())
    elif path.is_file():
        raw = read_yaml(path)
        if "center_coef" not in raw or not isinstance(raw.get("data"), dict):  # not a tether rm run's
            return "auto", None
        data = raw["data"]
    else:
        return "auto", None
    chat_template, max_length = data.get("chat_template", "auto"), data.get("max_length")
    length_ok = max_length is None or (type(max_length) is int and max_length > 0)  # bool is not a length
    if chat_template not in ("auto", "always", "never") or not length_ok:
        raise TetherError(f"{path}: data.chat_template {chat_template!r} or data.max_length {max_length!r} "
                          "is not a reward model's training setting")
    return chat_template, max_length


def encode_pair_text(
    tokenizer, prompt: Prompt, completion: str, chat_template: str = "auto", max_length: int | None = None
) -> list[int]:
    """Prompt ids + completion ids + EOS, exactly as `tether.preferences.tokenize_preferences` builds a
    response row (an empty prompt becomes BOS): with max_length the completion is cut to fit, as in training,
    and a prompt that leaves no room for it is a TetherError (training refused or skipped such rows); None
    cuts nothing."""
    ex = SimpleNamespace(prompt=prompt, path="<prompt>", line=None)
    p, c = encode_nonempty_prompt(tokenizer, ex, chat_template), encode_completion(tokenizer, completion)
    if max_length is None:
        return [*p, *c]
    if len(p) >= max_length:
        raise TetherError(f"a prompt of {len(p)} tokens leaves no room for a response within the reward "
                          f"model's max_length {max_length}")
    return [*p, *c[: max_length - len(p)]]


def score_texts(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    batch_size: int = 32,
    chat_template: str = "auto",
    max_length: int | None = None,
) -> list[float]:
    """The reward of each (prompt, completion): tokenised as the trainers do (`encode_pair_text` with
    chat_template and max_length, which should be the reward model's own: `training_settings`), EOS
    appended, then scored.

    Every completion gets an EOS, as every training response had one; a response cut at a length limit is
    therefore scored as if it had ended (penalise unfinished responses separately).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    seqs = [
        encode_pair_text(tokenizer, p, c, chat_template, max_length)
        for p, c in zip(prompts, completions, strict=True)
    ]
    return score_sequences(model, seqs, pad_id(tokenizer), batch_size)
