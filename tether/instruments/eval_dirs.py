"""`evaluate_policy_dirs`: `evaluate_policy` on model directories — what `tether eval` calls (and what
`tether run` should end with). Writes summary.json, samples.jsonl, probes.jsonl and report.html given an
output directory.

On a real model (no lab) the shipped probe sets are asked by default (`probes`, `probe_max_items`): with
them `tether eval --policy DIR --base DIR` needs nothing else; held-out prompts with an RM or a judge add
KL, win-rate, length and repetition.

    from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs
    summary = evaluate_policy_dirs("runs/x/ppo/model", "runs/x/sft/model", EvalConfig(
        rm="runs/x/rm/model", lab="runs/x/lab"), out="runs/x/eval")
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tether import rundir
from tether.config import ranged
from tether.config.rl import gold_problems
from tether.errors import TetherError
from tether.instruments.hacking import HackingConfig


@dataclass
class EvalConfig:
    """What `tether eval` measures a policy on, beyond the policy and base directories."""

    rm: str | None = None
    """A reward model directory: the proxy reward (RM instruments, proxy-vs-gold check)."""
    lab: str | None = None
    """A built lab: its held-out prompts, pairs and demonstrations are the defaults, gold reward the judge."""
    prompts: str | None = None
    """Prompts JSONL (default: the lab's prompts.test.jsonl); optional fields harmful, question, belief,
    answer (tether/instruments/labels.py)."""
    prefs: str | None = None
    """Held-out preference pairs for rm_test_accuracy (default with --lab and --rm: the lab's prefs.test)."""
    demos: str | None = None
    """Held-out demonstrations for heldout_perplexity (default with --lab: the lab's sft.test.jsonl)."""
    judge: str | None = None
    """Who judges the win-rate pairwise, both orders averaged (default: gold on the lab, else the RM): a
    causal LM directory, or the base URL of an OpenAI-compatible server (http://HOST:PORT/v1; then
    judge_model) — tether/instruments/endpoint_judge.py, which sends it the prompts and responses."""
    judge_model: str | None = None
    """The model name an endpoint judge's server serves (needed with a URL --judge, refused without one)."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the endpoint's API key, sent as a bearer token when it is set."""
    gold: str = "auto"
    """The gold reward as judge and reported reward (tether.rewards.gold_source): auto, the lab's when every
    prompt is a lab prompt; lab, the lab's always (a prompt that is not the lab's is an error); none, no
    gold (the RM or --judge judges); or 'module:function', a gold reward on real text that gets the prompt
    file's columns (e.g. tether.verifiable:correct)."""
    beta: float | None = None
    """The policy's KL coefficient (default: read from the policy run's summary.json or config.yaml)."""
    max_prompts: int = 200
    temperature: float = ranged(1.0, "> 0")
    """The temperature both models are sampled at on the held-out prompts (top-p 1); 1: their own
    distributions. KL-from-base is then that of the temperature-T distributions."""
    max_new_tokens: int | None = None
    """Default: the lab's max_response_words, else 64."""
    max_prompt_length: int = 256
    max_length: int = 512
    """Longest demonstration (prompt + completion) for perplexity; longer ones are cut."""
    repetition_n: int = 1
    """n of the repeated n-gram share: 1 for short responses (the lab's), e.g. 4 for long ones."""
    seed: int = 0
    device: str = "cpu"
    cache_base_samples: bool = True
    """Keep the base's held-out samples in $TETHER_CACHE/eval-samples and reuse them when the same base
    directory (its files' SHA-256), prompts and sampling settings come again, as in a sweep's evaluations:
    the seed makes them the same samples (tether/instruments/sample_cache.py). false: sample them anew."""
    hacking: HackingConfig = field(default_factory=HackingConfig)
    probes: Literal["auto", "always", "never"] = "auto"
    """The shipped probe sets (tether/instruments/probes) as the source of refusal, over-refusal, sycophancy
    and capability: auto when the prompts are not the lab's (or there are none), always, or never (the
    prompts' harmful/question/belief/answer fields are read instead)."""
    probe_max_items: int | None = ranged(None, ">= 1")
    """At most this many items of each probe set, a fixed-seed subsample (seed); default: sycophancy 100
    (each asked 3 times), over_refusal 100, harmful 100, capability 150."""
    probe_max_new_tokens: int = ranged(48, ">= 1")
    """Reply tokens per probe prompt (refusals and short answers show in the opening)."""
    probe_temperature: float = ranged(0.0, ">= 0")
    """0: greedy probe answers. Above 0 they are sampled, policy and base with different seeds — a model
    against itself then checks that the intervals hold the difference of 0."""

    lm_eval_tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks run on policy and base, each metric an instrument with the difference's
    interval (tether/instruments/lm_eval_tasks.py; pip install 'tether[lm-eval]'); [] runs none."""
    lm_eval_include: str | None = None
    """A folder of lm-eval task YAMLs of your own (e.g. on local data files) that lm_eval_tasks may name."""
    lm_eval_limit: int | None = ranged(None, ">= 1")
    """At most this many documents of each lm-eval task (lm-eval's --limit); default: every document."""

    def problems(self):
        """(key, reason) of a gold that is neither a mode nor a function that imports, of an endpoint judge
        without its model name (or a model name without an endpoint), and of lm-eval settings without
        lm_eval_tasks."""
        from tether.instruments.endpoint_judge import is_endpoint

        for key in ("lm_eval_include", "lm_eval_limit"):
            if getattr(self, key) is not None and not self.lm_eval_tasks:
                yield key, "is only read with lm_eval_tasks (the lm-eval tasks to run), which is empty"

        yield from gold_problems(self.gold)
        if is_endpoint(self.judge) and not self.judge_model:
            yield "judge_model", f"is needed with the endpoint judge {self.judge}: the model name it serves"
        if self.judge_model and not is_endpoint(self.judge):
            yield "judge_model", ("is only read with an endpoint judge (--judge http://HOST:PORT/v1), "
                                  f"but judge is {self.judge!r}")


def find_beta(policy_dir: Path) -> float | None:
    """β of the run that trained `policy_dir` (RUN/model): RUN/summary.json's "beta", else None."""
    for path in (policy_dir / "summary.json", policy_dir.parent / "summary.json"):
        if path.is_file():
            beta = json.loads(path.read_text()).get("beta")
            if isinstance(beta, int | float):
                return float(beta)
    return None


def _load(policy_dir: str, base_dir: str, device: str):
    from tether.model_files import load_causal_lm, load_tokenizer

    policy = load_causal_lm(policy_dir).eval().to(device)
    base = load_causal_lm(base_dir).eval().to(device)
    tokenizer = load_tokenizer(base_dir)
    return policy.requires_grad_(False), base.requires_grad_(False), tokenizer


OUTPUT = ("summary.json", "samples.jsonl", "probes.jsonl", "report.html", "summary.md")  # `write_eval`


def evaluate_policy_dirs(policy_dir: str, base_dir: str, cfg: EvalConfig, out: str | None = None) -> dict:
    """The summary (schema: tether/summary.schema.json) of `evaluate_policy` on model directories; with
    `out`, also OUT/summary.json, OUT/report.html and OUT/samples.jsonl. OUT must be new or an earlier
    evaluation's (tether.rundir), and is locked while this one runs."""
    if out is None:
        return _evaluate(policy_dir, base_dir, cfg, None)
    # before tether.rundir's markers: a directory holding only these files, its summary an evaluation's
    legacy = rundir.holds_only(OUTPUT, summary=lambda s: {"policy", "base", "instruments"} <= set(s))
    with rundir.claim(out, "eval", legacy=legacy):
        return _evaluate(policy_dir, base_dir, cfg, out)


def _evaluate(policy_dir: str, base_dir: str, cfg: EvalConfig, out: str | None) -> dict:
    from tether.data import load_prompts, load_sft, tokenize_prompts, tokenize_sft
    from tether.instruments.behaviour_probes import ProbeOptions, select_probes
    from tether.instruments.evaluate import EVAL_BATCH_SIZE, EVAL_SEED_OFFSET, choose_judge
    from tether.instruments.policy import evaluate_policy
    from tether.instruments.probes import VERSION as PROBES_VERSION
    from tether.model_files import dir_sha256
    from tether.preferences import load_preferences
    from tether.rewards import gold_source, is_lab_prompt, load_reward

    start = time.perf_counter()
    lab_paths = None
    max_new_tokens = cfg.max_new_tokens or 64
    if cfg.lab:
        from tether.lab import open_lab
        from tether.lab.config import LabConfig

        lab_paths = open_lab(cfg.lab)
        max_new_tokens = cfg.max_new_tokens or LabConfig.from_yaml(lab_paths.config).max_response_words
    prompts_path = cfg.prompts or (str(lab_paths.data("prompts", "test")) if lab_paths else None)
    prefs_path = cfg.prefs or (str(lab_paths.data("prefs", "test")) if lab_paths and cfg.rm else None)
    demos_path = cfg.demos or (str(lab_paths.data("sft", "test")) if lab_paths else None)

    examples = load_prompts(prompts_path)[: cfg.max_prompts] if prompts_path else []
    lab = bool(examples) and all(is_lab_prompt(x.prompt) for x in examples)
    use_probes = cfg.probes == "always" or (cfg.probes == "auto" and not lab)
    if not examples and not use_probes:
        raise TetherError("no prompts: give --prompts FILE or --lab DIR (or probes=always)")
    if examples:  # gold=lab: a prompt not the lab's stops here, before models load (and a gold function's
        gold_source(cfg.gold, examples)  # missing column)
    lm_eval = None  # lm-eval's task manager: a task it does not know stops here too
    if cfg.lm_eval_tasks:
        from tether.instruments.lm_eval_tasks import lm_eval_instruments, task_manager

        lm_eval = task_manager(cfg.lm_eval_tasks, cfg.lm_eval_include)
    policy, base, tokenizer = _load(policy_dir, base_dir, cfg.device)
    items = []
    if examples:
        items, _ = tokenize_prompts(examples, tokenizer, cfg.max_prompt_length, too_long="skip")
        if not items:
            raise TetherError(f"{prompts_path}: no usable prompts")
    proxy_fn = load_reward(cfg.rm, device=cfg.device) if cfg.rm else None
    proxy = (lambda p, r, **columns: proxy_fn(p, r, **columns).tolist()) if proxy_fn else None
    llm_judge = None
    if cfg.judge:
        from tether.instruments.endpoint_judge import EndpointJudge, is_endpoint
        from tether.instruments.llm_judge import load_llm_judge

        if is_endpoint(cfg.judge):
            llm_judge = EndpointJudge(cfg.judge, cfg.judge_model, api_key_env=cfg.judge_api_key_env)
        else:
            llm_judge = load_llm_judge(cfg.judge, device=cfg.device)
    judge, gold = None, None
    if items:
        judge, gold = choose_judge(
            cfg.gold, items, proxy, proxy_name="rm", judge=llm_judge, hint=" (give --rm DIR or --judge DIR)"
        )
    # the behavioural instruments' labels: parsed from lab prompts (whatever judges), else read from fields
    lab = bool(items) and all(is_lab_prompt(x.example.prompt) for x in items)
    demos = None
    if demos_path:
        demos, _ = tokenize_sft(load_sft(demos_path), tokenizer, cfg.max_length, too_long="skip")
    prefs = load_preferences(prefs_path) if prefs_path else None
    beta = cfg.beta if cfg.beta is not None else find_beta(Path(policy_dir))
    probes = select_probes(cfg.probe_max_items, cfg.seed) if use_probes else None
    probe_options = ProbeOptions(max_new_tokens=cfg.probe_max_new_tokens, temperature=cfg.probe_temperature,
                                 seed=cfg.seed + EVAL_SEED_OFFSET, batch_size=EVAL_BATCH_SIZE)

    cached = bool(items) and cfg.cache_base_samples and Path(base_dir).is_dir()  # a Hub id: not cached
    result = evaluate_policy(
        policy,
        base,
        tokenizer,
        items,
        judge=judge,
        proxy=proxy,
        gold=gold,
        lab=lab,
        demos=demos,
        prefs=prefs,
        beta=beta,
        max_new_tokens=max_new_tokens,
        seed=cfg.seed + EVAL_SEED_OFFSET,
        batch_size=EVAL_BATCH_SIZE,
        temperature=cfg.temperature,
        hacking=cfg.hacking,
        repetition_n=cfg.repetition_n,
        probes=probes,
        probe_options=probe_options,
        base_key=dir_sha256(base_dir) if cached else None,
    )
    samples, measured = result.pop("samples"), result.pop("probes")
    if lm_eval is not None:
        result["instruments"].update(lm_eval_instruments(policy_dir, base_dir, cfg.lm_eval_tasks, lm_eval,
                                                         cfg.lm_eval_limit, cfg.device))
    summary = {
        **result,
        "beta": beta,
        "temperature": cfg.temperature,
        "wall_seconds": time.perf_counter() - start,
        "policy": str(policy_dir),
        "base": str(base_dir),
        "rm": cfg.rm,
        "prompts": prompts_path,
        "lab": cfg.lab,
    }
    if measured is not None:
        summary["probes"] = {
            "version": PROBES_VERSION,
            "items": measured.items,
            "decoding": "greedy" if cfg.probe_temperature == 0 else f"temperature {cfg.probe_temperature}",
            "max_new_tokens": cfg.probe_max_new_tokens,
            "generated_tokens": measured.generated_tokens,
        }
    if out is not None:
        write_eval(Path(out), summary, samples, measured.rows if measured is not None else None)
    return summary


def write_eval(out: Path, summary: dict, samples: dict | None, probe_rows: list[dict] | None = None) -> None:
    """OUT/summary.json, OUT/samples.jsonl (prompt, policy and base response), OUT/probes.jsonl (each probe
    prompt, both replies and their readings) and OUT/report.html."""
    from tether.files import write_json, write_text_atomic
    from tether.instruments.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    rows = []
    if samples is not None:
        pol, ref = samples["policy"], samples["base"]
        rows = [
            {"prompt": p, "policy": a, "base": b}
            for p, a, b in zip(pol.prompts, pol.responses, ref.responses, strict=True)
        ]
    write_text_atomic(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if probe_rows is not None:
        write_text_atomic(out / "probes.jsonl", "".join(json.dumps(r) + "\n" for r in probe_rows))
    else:
        (out / "probes.jsonl").unlink(missing_ok=True)  # an earlier evaluation's, not this one's
    shown = rows + [{"group": f"probe: {r['set']}", "prompt": r["prompt"], "policy": r["policy"],
                     "base": r["base"]} for r in probe_rows or []]
    write_report(out / "report.html", summary, title=f"tether eval: {summary['policy']}", samples=shown)
