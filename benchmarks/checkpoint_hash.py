"""What the checkpoint manifest costs: SHA-256 of a checkpoint at save
(tether.trainers.checkpoint.manifest_of) and again at resume (verify).

    PYTHONPATH=. .venv/bin/python benchmarks/checkpoint_hash.py [--mb 540] [--repeat 3]

1. The lab model: a Loop over the lab's architecture (LabConfig defaults, random weights) takes one AdamW step
   (so the optimizer state has its two moments) and saves a checkpoint; the save, the manifest and a
   verification are timed.
2. A 135 M-parameter model, estimated from a synthetic file of --mb megabytes of random bytes (540 MB: 135 M
   float32 weights), written to a temporary directory and hashed from the page cache; a full checkpoint of
   such a model is about three times that (weights, then AdamW's two moments in trainer_state.pt).

Prints the best of --repeat times for each, and MB/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from tether.config import LoopConfig
from tether.files import sha256_file
from tether.lab.base_model import lab_tokenizer
from tether.lab.config import LabConfig
from tether.models import build_tiny_llama
from tether.trainers import checkpoint as ckpt
from tether.trainers.base import Loop


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def lab_checkpoint(root: Path, repeat: int) -> None:
    lab, tokenizer = LabConfig(), lab_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=lab.hidden_size, num_layers=lab.num_layers,
                             num_heads=lab.num_heads, intermediate_size=lab.intermediate_size,
                             max_position_embeddings=128)
    cfg = LoopConfig(lr=1e-3, batch_size=1, micro_batch_size=1, keep_last=0, progress=False, device="cpu")
    loop = Loop(cfg, root, model, tokenizer, total_steps=1)
    ids = torch.randint(4, len(tokenizer), (1, 16))
    loop.backward(loop.model(input_ids=ids, labels=ids).loss)
    loop.optimizer_step()
    save = best(lambda: loop.save(), repeat)
    path = ckpt.step_dir(loop.checkpoints, 1)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    manifest = best(lambda: ckpt.manifest_of(path), repeat)
    verify = best(lambda: ckpt.verify(path), repeat)
    params = sum(p.numel() for p in model.parameters())
    print(f"lab model ({params / 1e6:.2f} M parameters), checkpoint {size / 1e6:.1f} MB: save {save:.3f} s, "
          f"manifest {manifest:.4f} s, verify {verify:.4f} s")


def synthetic(root: Path, mb: int, repeat: int) -> None:
    path = root / "weights.bin"
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1_000_000))
    t = best(lambda: sha256_file(path), repeat)
    print(f"synthetic {mb} MB file: SHA-256 {t:.2f} s ({mb / t:.0f} MB/s); a full checkpoint (x3) about "
          f"{3 * t:.1f} s at save and again at resume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=540)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        lab_checkpoint(Path(d) / "lab", args.repeat)
        synthetic(Path(d), args.mb, args.repeat)


if __name__ == "__main__":
    main()
