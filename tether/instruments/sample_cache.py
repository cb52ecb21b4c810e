"""The base model's held-out samples, kept between evaluations.

Evaluating a sweep (several policies against one base on one prompt file) samples the same base responses
every time: the evaluation seeds them, so they are identical. `cached_samples` keeps them in
$TETHER_CACHE/eval-samples/KEY.pt (TETHER_CACHE unset: ~/.cache/tether) and reads them back when every
input of the sampling is the same again: the base model's files (their SHA-256), the dtype and device it
was loaded to, each prompt's token ids, the seed, batch size, temperature and response length, and
the torch version, thread count and CPU instruction set (floating-point sums, and so samples, can differ
between them). A file that does not load or was written for another key is sampled again and replaced;
nothing else in the folder is touched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tether.data import PromptTokens
from tether.errors import TetherError
from tether.files import save_atomic
from tether.model_files import cache_root, file_sha256
from tether.rewards import columns_of
from tether.rollout import Rollout

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored fields change: older files then no longer match any key
FIELDS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "ended")


def model_dir_key(directory: str | Path, model) -> str:
    """sha256 of every file in a model directory (relative names and contents) and the dtype and device
    `model` was loaded to: what identifies the base model in a cache key."""
    root = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()}={file_sha256(path)};".encode())
    param = next(model.parameters())
    h.update(f"{param.dtype}|{param.device}".encode())
    return h.hexdigest()


def samples_key(model_key: str, items: Sequence[PromptTokens], options: dict) -> str:
    """sha256 of the model's key, the prompts' token ids, the sampling options and this machine's numerics."""
    h = hashlib.sha256(f"{FORMAT}|{model_key}|{sorted(options.items())}".encode())
    h.update(f"|{torch.__version__}|{torch.get_num_threads()}|{torch.backends.cpu.get_cpu_capability()}"
             .encode())
    for x in items:
        h.update(repr(x.prompt_ids).encode())
    return h.hexdigest()


def cached_samples(model_key: str, items: Sequence[PromptTokens], options: dict, draw: Callable[[], object],
                   tokenizer):
    """The Samples that `draw()` returns for `items` sampled with `options`, read from the cache when it
    holds them for `model_key` and written there when not. Responses are decoded again from the stored
    tokens, so the cache holds token ids only."""
    from tether.instruments.evaluate import Samples
    from tether.rollout import decode_responses

    key = samples_key(model_key, items, options)
    path = cache_root() / "eval-samples" / f"{key}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            if stored.get("key") == key:
                rollouts = [Rollout(**{f: r[f] for f in FIELDS}, temperature=r["temperature"])
                            for r in stored["rollouts"]]
                responses = [text for r in rollouts for text in decode_responses(tokenizer, r)]
                examples = [x.example for x in items]
                log.info("base samples: reused %s", path)
                return Samples([ex.prompt for ex in examples], rollouts, responses, columns_of(examples))
        except Exception as e:  # a truncated or foreign file fails anywhere in torch's reader
            log.warning("%s does not load (%s); sampling the base again", path, str(e).splitlines()[0][:120])
    samples = draw()
    rollouts = [{**{f: getattr(r, f) for f in FIELDS}, "temperature": r.temperature}
                for r in samples.rollouts]
    try:  # the evaluation stands without the cache: a cache that cannot be written is only a warning
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({"key": key, "rollouts": rollouts}, path)
    except (OSError, TetherError) as e:
        log.warning("base samples not cached: %s", e)
    return samples
