"""The base samples' cache (tether/instruments/sample_cache.py): `tether eval` with it reports exactly what
it reports without it, samples the base once per key, and samples again when the key changes or the stored
file is damaged."""

from __future__ import annotations

import json

import pytest
from fault_helpers import run_tether
from plumbing_helpers import write_jsonl, write_model_dir

import tether.instruments.evaluate
from tether.model_files import dir_sha256

SAYS = "reward_helpers:says_answer"  # 1.0 when the response's first word is the record's `answer`


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Two tiny random models, eight prompts with an answer column, a cache folder of the test's own, and a
    count of the models each evaluation samples (the policy first, then the base unless it was cached)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TETHER_CACHE", str(cache))
    texts = "a b|c|d e|f|a|b c|g|h".split("|")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p, "answer": a} for p, a in zip(texts, "abcdefgh",
                                                                                               strict=True)])
    policy, base = write_model_dir(tmp_path / "policy", seed=0), write_model_dir(tmp_path / "base", seed=1)
    sampled = []
    real = tether.instruments.evaluate.sample_responses

    def counting(model, *args, **kwargs):
        sampled.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(tether.instruments.evaluate, "sample_responses", counting)
    return {"cache": cache, "prompts": prompts, "policy": policy, "base": base, "sampled": sampled,
            "tmp": tmp_path}


def _eval(s, capsys, name, *overrides):
    """(summary without its wall time, samples.jsonl rows, models sampled) of one `tether eval`."""
    del s["sampled"][:]
    out = s["tmp"] / name
    argv = ["eval", "--policy", str(s["policy"]), "--base", str(s["base"]), "--prompts", str(s["prompts"]),
            "--gold", SAYS, "--out", str(out), "max_new_tokens=5", "probes=never", *overrides]
    code, _, err = run_tether(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_seconds")
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return summary, rows, len(s["sampled"])


def test_cached_base_samples_give_the_uncached_evaluation_exactly(setup, capsys):
    """Uncached, then cached twice: the three summaries and sample files are identical (every instrument,
    the base's responses and its gold mean included); the first cached run samples both models and writes
    one file, the second samples the policy only."""
    plain, plain_rows, n_plain = _eval(setup, capsys, "plain", "cache_base_samples=false")
    assert n_plain == 2 and not setup["cache"].exists()
    first, first_rows, n_first = _eval(setup, capsys, "first")
    files = list((setup["cache"] / "eval-samples").iterdir())
    assert n_first == 2 and len(files) == 1
    again, again_rows, n_again = _eval(setup, capsys, "again")
    assert n_again == 1
    assert plain_rows == first_rows == again_rows
    assert len({r["base"] for r in again_rows}) > 1  # real samples, not one repeated string
    assert plain["instruments"] == first["instruments"] == again["instruments"]
    assert plain["rewards"] == again["rewards"]


def test_another_setting_or_a_damaged_file_samples_the_base_again(setup, capsys):
    """Another response length is another key (a second file); a truncated file is sampled again and
    replaced, with the same responses as before it was damaged."""
    _, rows, _ = _eval(setup, capsys, "first")
    _, _, n = _eval(setup, capsys, "longer", "max_new_tokens=6")
    folder = setup["cache"] / "eval-samples"
    assert n == 2 and len(list(folder.iterdir())) == 2
    for path in folder.iterdir():
        path.write_bytes(path.read_bytes()[:100])
    _, again, n = _eval(setup, capsys, "again")
    assert n == 2 and again == rows
    _, _, n = _eval(setup, capsys, "third")
    assert n == 1  # the file written in place of the damaged one is read


def test_the_directory_hash_changes_with_any_file_of_the_directory(setup):
    """dir_sha256 hashes every file's name and contents: a file added, or its contents changed, is a new
    value; the same directory gives the same value."""
    base = setup["base"]
    key = dir_sha256(base)
    assert dir_sha256(base) == key
    (base / "notes.txt").write_text("x")
    added = dir_sha256(base)
    (base / "notes.txt").write_text("yz")  # another size too: file_sha256 re-reads on size or mtime
    assert len({key, added, dir_sha256(base)}) == 3


def test_an_rl_run_samples_its_base_once_and_a_run_from_the_same_start_not_at_all(setup, capsys):
    """PPO with an evaluation after each of 2 iterations: the base is sampled at the first only, and both
    evaluations report the same base rewards; a second run from the same policy samples no base, and reports
    the base rewards that a run with the cache off reports."""
    from instrument_helpers import LAB_PROMPTS
    from ppo_helpers import TOY_REWARD

    prompts = write_jsonl(setup["tmp"] / "lab.jsonl", [{"prompt": p} for p in LAB_PROMPTS])
    sampled, base_dir = setup["sampled"], setup["policy"]

    def run(name, *extra):
        del sampled[:]
        out = setup["tmp"] / name
        argv = ["ppo", f"policy={base_dir}", f"data.train={prompts}", f"data.test={prompts}",
                f"reward.source={TOY_REWARD}", "iterations=2", "rollout.batch_size=8",
                "rollout.max_new_tokens=3", "ppo.epochs=1", "train.batch_size=8", "train.micro_batch_size=8",
                "eval.max_prompts=8", "train.eval_every=1", "train.progress=false", *extra, "--out", str(out)]
        code, _, err = run_tether(argv, capsys)
        assert code == 0, err
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        evals = [m for m in metrics if m["kind"] == "eval"]
        return json.loads((out / "summary.json").read_text())["rewards"]["base"], len(sampled), evals

    first, n_first, evals = run("first")
    assert len(evals) == 2, evals
    assert n_first == 3  # policy, base, policy
    second, n_second, _ = run("second")
    assert n_second == 2  # the policy at each evaluation
    plain, n_plain, _ = run("plain", "eval.cache_base_samples=false")
    assert n_plain == 4
    assert first == second == plain
