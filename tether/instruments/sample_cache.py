"""The base model's held-out samples, kept between evaluations.

Evaluating a sweep (several policies against one base on one prompt file) samples the same base responses
every time: the evaluation seeds them, so they are identical. The evaluation keeps their tokens in
$TETHER_CACHE/eval-samples/KEY.pt (TETHER_CACHE unset: ~/.cache/tether) and reads them back when every
input of the sampling is the same again (`samples_key`): the base model (its files' SHA-256, how it was
made of them, the dtype and device it runs in), each prompt's token ids, the seed, batch size, temperature
and response length, and the torch version, thread count and CPU instruction set (floating-point sums, and
so samples, can differ between them). A file that does not load or was written for another key is sampled
again and replaced; nothing else in the folder is touched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from tether.data import PromptTokens
from tether.errors import TetherError
from tether.files import save_atomic
from tether.model_files import cache_root
from tether.rollout import Rollout

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored fields change: older files then no longer match any key
FIELDS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "ended")


def samples_key(model_key: str, items: Sequence[PromptTokens], options: dict) -> str:
    """sha256 of the model's key, the prompts' token ids, the sampling options and this machine's numerics."""
    h = hashlib.sha256(f"{FORMAT}|{model_key}|{sorted(options.items())}".encode())
    h.update(f"|{torch.__version__}|{torch.get_num_threads()}|{torch.backends.cpu.get_cpu_capability()}"
             .encode())
    for x in items:
        h.update(repr(x.prompt_ids).encode())
    return h.hexdigest()


def _path(key: str) -> Path:
    return cache_root() / "eval-samples" / f"{key}.pt"


def load_rollouts(key: str) -> list[Rollout] | None:
    """The rollouts stored under `key`, or None when there are none (or the file is damaged or another's)."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == key:
            log.info("base samples: reused %s", path)
            return [Rollout(**{f: r[f] for f in FIELDS}, temperature=r["temperature"])
                    for r in stored["rollouts"]]
    except Exception as e:  # a truncated or foreign file fails anywhere in torch's reader
        log.warning("%s does not load (%s); sampling the base again", path, str(e).splitlines()[0][:120])
    return None


def store_rollouts(key: str, rollouts: Sequence[Rollout]) -> None:
    """Keep `rollouts` under `key`, atomically; a cache that cannot be written is only a warning (the
    evaluation stands without it)."""
    path = _path(key)
    stored = [{**{f: getattr(r, f) for f in FIELDS}, "temperature": r.temperature} for r in rollouts]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({"key": key, "rollouts": stored}, path)
    except (OSError, TetherError) as e:
        log.warning("base samples not cached: %s", e)
