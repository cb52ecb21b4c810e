"""lm-evaluation-harness tasks as capability instruments of `tether eval` (the optional `lm-eval` hook).

    tether eval --policy runs/dpo/model --base SFT lm_eval_tasks=[arc_easy] lm_eval_limit=200
    tether eval ... lm_eval_tasks=[my_task] lm_eval_include=my_tasks/     # task YAMLs of your own

Each task runs on the policy and on the base through lm-eval's own `simple_evaluate` (its "hf" model on the
directory, float32, lm-eval's fixed seeds), so the figures are lm-eval's; lm-eval reads each task's data
itself (a Hub dataset it fetches, or the local files a task YAML names). Every metric lm-eval reports with
a standard error becomes one instrument, `lm_eval/TASK/METRIC`: the policy's value, the base's, their
difference with a 95 % interval from the two standard errors (normal approximation, the two runs taken as
independent samples, which is conservative for the same documents) and the verdict the interval gives,
"better" or "worse" by the metric's direction, or "no measurable difference".
"""

from __future__ import annotations

import math
from pathlib import Path

from tether.errors import TetherError
from tether.instruments.stats import Z95, interval_verdict


def lm_eval_instruments(policy_dir: str | Path, base_dir: str | Path, tasks: list[str], manager,
                        limit: int | None = None, device: str = "cpu") -> dict:
    """{"lm_eval/TASK/METRIC": {"value", "base", "stderr", "base_stderr", "change", "difference_ci95",
    "n", "verdict", "higher_is_better", "source"}} for every metric with a standard error of every task;
    `manager` is `task_manager(tasks, include)`, made before any long work so a bad task name stops early."""
    policy = run_tasks(policy_dir, tasks, manager, limit, device)
    base = run_tasks(base_dir, tasks, manager, limit, device)
    out = {}
    for task in tasks:
        mine, theirs = policy["results"].get(task, {}), base["results"].get(task, {})
        higher = policy.get("higher_is_better", {}).get(task, {})
        n = policy.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in mine.items():
            metric, _, filt = key.partition(",")
            stderr_key = f"{metric}_stderr,{filt}"
            if metric.endswith("_stderr") or stderr_key not in mine or not _number(value):
                continue
            b, se, base_se = theirs.get(key), mine[stderr_key], theirs.get(stderr_key)
            if not (_number(b) and _number(se) and _number(base_se)):
                continue
            change = value - b
            half = Z95 * math.sqrt(se**2 + base_se**2)
            up = higher.get(metric, True)
            ci = [change - half, change + half]
            name = metric if filt in ("", "none") else f"{metric}[{filt}]"
            source = f"lm-eval {_version()}: {task}" + (f", limit {limit}" if limit else "")
            out[f"lm_eval/{task}/{name}"] = {
                "value": value, "base": b, "stderr": se, "base_stderr": base_se, "change": change,
                "difference_ci95": ci, "n": n, "verdict": interval_verdict(ci, 0.0, up),
                "higher_is_better": up, "source": source,
            }
    return out


def task_manager(tasks: list[str], include: str | None):
    """lm-eval's TaskManager (its own tasks, and those in `include`), checked to know every one of `tasks`."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise TetherError("lm_eval_tasks needs lm-evaluation-harness: pip install 'tether[lm-eval]'") \
            from None
    manager = TaskManager(include_path=str(include)) if include else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (or in {include})" if include else " (lm_eval_include=DIR adds task YAMLs of your own)"
        raise TetherError(f"lm_eval_tasks: lm-eval knows no task {unknown[0]!r}{where}")
    return manager


def run_tasks(model_dir: str | Path, tasks: list[str], manager, limit: int | None, device: str) -> dict:
    """lm-eval's `simple_evaluate` of the model directory on `tasks` (its result dictionary)."""
    from lm_eval import simple_evaluate

    try:
        return simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks,
                               task_manager=manager, limit=limit, device=device, batch_size=8,
                               log_samples=False)
    except Exception as e:  # its data missing or unreachable, a task that cannot run on this model, ...
        raise TetherError(f"lm-eval on {model_dir}: {' '.join(str(e).split())[:300]}") from None


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
