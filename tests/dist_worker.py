"""`tether <command> ...` in one process of a multi-process launch, instrumented for test_distributed.py.

    torchrun --nproc_per_node 2 tests/dist_worker.py DUMP_DIR sft --out RUN ... [+ ppo --out RUN2 ...]

Commands separated by "+" run one after the other in the same processes (one launch, as `tether run` chains
stages), the i-th writing into DUMP_DIR/i/, per process (rank r): pid-r (written at start, so a test can
signal one process), metrics-r.json (the RL trainers' per-iteration metrics of this process alone, before
they are averaged) and weights-r.pt (every trained model's final weights as this process holds them).
TETHER_TEST_STEP_DELAY (seconds) sleeps after each optimizer step, so a test can signal a run mid-way.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the toy rewards (ppo_helpers:count_a)

from tether import cli  # noqa: E402
from tether.trainers import base, rl, supervised  # noqa: E402

DUMP = [Path(sys.argv[1])]  # the current command's dump directory
RANK = int(os.environ.get("RANK", "0"))
DELAY = float(os.environ.get("TETHER_TEST_STEP_DELAY", "0"))


def dump_json(name: str, obj) -> None:
    (DUMP[0] / name).write_text(json.dumps(obj))


def wrap_step(real):
    records: dict[Path, list] = {}  # per command

    def step(self):
        record = real(self)
        mine = records.setdefault(DUMP[0], [])
        mine.append({k: float(v) if isinstance(v, int | float) else v for k, v in record.items()})
        dump_json(f"metrics-{RANK}.json", mine)
        return record

    return step


def wrap_save_final(real):
    def save_final(loop, run_dir):
        out = real(loop, run_dir)
        weights = {f"{name}.{k}": v.detach().cpu().clone()
                   for name, m in loop.models.items()
                   for k, v in loop.accelerator.unwrap_model(m).state_dict().items()}
        torch.save(weights, DUMP[0] / f"weights-{RANK}.pt")
        return out

    return save_final


def wrap_optimizer_step(real):
    def optimizer_step(self):
        info = real(self)
        time.sleep(DELAY)
        return info

    return optimizer_step


def commands(argv: list[str]) -> list[list[str]]:
    out = [[]]
    for a in argv:
        if a == "+":
            out.append([])
        else:
            out[-1].append(a)
    return out


if __name__ == "__main__":
    root = DUMP[0]
    supervised.save_final = wrap_save_final(supervised.save_final)
    rl.save_final = wrap_save_final(rl.save_final)
    if DELAY:
        base.Loop.optimizer_step = wrap_optimizer_step(base.Loop.optimizer_step)
    rl.RLRun.step = wrap_step(rl.RLRun.step)
    for i, argv in enumerate(commands(sys.argv[2:])):
        DUMP[0] = root / str(i)
        DUMP[0].mkdir(parents=True, exist_ok=True)
        (DUMP[0] / f"pid-{RANK}").write_text(str(os.getpid()))
        code = cli.main(argv)
        if code:
            sys.exit(code)
