"""benchmarks/vs_trl.py's pure parts: the pair-selection rule, seconds per step from two runs, the shared
reward, the files both tools read and tether's configs. Nothing is trained and TRL is not imported (the
module imports it only inside the child that runs under TRL's own interpreter)."""

import argparse
import gzip
import json
from pathlib import Path

import pytest
from plumbing_helpers import load_script

from tether.config import DPOConfig, GRPOConfig, RMConfig, SFTConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
vs = load_script(ROOT / "benchmarks" / "vs_trl.py", "vs_trl")

H, A = "\n\nHuman:", "\n\nAssistant:"


def record(prompt_turns: str, chosen: str, rejected: str, rejected_turns: str | None = None) -> dict:
    return {"chosen": prompt_turns + A + chosen, "rejected": (rejected_turns or prompt_turns) + A + rejected}


def write_gz(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def test_pairs_are_the_first_that_share_the_prompt_with_two_different_answers_and_a_short_prompt(tmp_path):
    """Records 0-7, by hand:
    0 kept: two turns; the prompt is everything up to and including the last "\\n\\nAssistant:", so it keeps
      the first assistant turn, and the responses keep their leading space;
    1 dropped: the rejected transcript's first human turn differs (no shared prompt);
    2 dropped: the rejected answer is blank;
    3 dropped: chosen and rejected answers are the same text (a tie, which tether leaves out);
    4 dropped: prompt of exactly 600 characters (the rule is "under 600");
    5 kept: prompt of 599 characters;
    6 kept; 7 would be kept but n = 3 stops before it."""
    two_turns = H + " hi" + A + " hello" + H + " how are you?"
    pad4 = H + " " + "x" * (600 - len(H) - 1 - len(A))  # + A: 600 characters
    pad5 = H + " " + "x" * (599 - len(H) - 1 - len(A))
    records = [
        record(two_turns, " fine", " bad"),
        record(H + " one", " a", " b", rejected_turns=H + " two"),
        record(H + " q", " a", "  "),
        record(H + " q", " same", " same"),
        record(pad4, " a", " b"),
        record(pad5, " a", " b"),
        record(H + " last", " yes", " no"),
        record(H + " never read", " yes", " no"),
    ]
    path = write_gz(tmp_path / "hh.jsonl.gz", records)
    got = vs.select_pairs(path, 3)
    assert got[0] == {"prompt": two_turns + A, "chosen": " fine", "rejected": " bad"}
    assert [len(p["prompt"]) for p in got[1:]] == [599, len(H + " last" + A)]
    assert got[2] == {"prompt": H + " last" + A, "chosen": " yes", "rejected": " no"}
    with pytest.raises(SystemExit, match="only 4 pairs"):
        vs.select_pairs(path, 5)


def test_seconds_per_step_cancel_what_both_runs_pay_once():
    """A process that pays 10 s of start-up and 4 s a step: 2 steps take 18 s, 6 steps 34 s, so
    (34 − 18) / (6 − 2) = 4 s/step, the 10 s gone."""
    assert vs.per_step(2, 18.0, 6, 34.0) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        vs.per_step(3, 18.0, 3, 34.0)


def test_length_reward_is_characters_capped_at_200_over_200():
    """50 characters → 50/200 = 0.25; 200 → 1; 250 → capped, 1; empty → 0."""
    assert vs.length_reward(["p"] * 4, ["a" * 50, "a" * 200, "a" * 250, ""]) == [0.25, 1.0, 1.0, 0.0]


def test_data_files_hold_the_same_pairs_for_every_stage(tmp_path):
    """Two pairs: sft.jsonl has 4 rows (both prompts with their chosen, then with their rejected answer);
    prompts.jsonl keeps each prompt's last 300 characters (a 350-character prompt loses its first 50)."""
    long_prompt = "y" * 50 + "z" * 300
    pairs = [{"prompt": "p1", "chosen": " c1", "rejected": " r1"},
             {"prompt": long_prompt, "chosen": " c2", "rejected": " r2"}]
    vs.write_data(pairs, tmp_path)

    def rows(name):
        return [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]

    assert rows("pairs.jsonl") == pairs
    sft = [(r["prompt"], r["completion"]) for r in rows("sft.jsonl")]
    assert sft == [("p1", " c1"), (long_prompt, " c2"), ("p1", " r1"), (long_prompt, " r2")]
    assert rows("prompts.jsonl") == [{"prompt": "p1"}, {"prompt": "z" * 300}]


STAGE_CLASSES = [("sft", SFTConfig, 8), ("rm", RMConfig, 4), ("dpo", DPOConfig, 4),
                 ("dpo-cached", DPOConfig, 4), ("grpo", GRPOConfig, 8)]


@pytest.mark.parametrize("stage, cls, rows", STAGE_CLASSES)
def test_tether_configs_load_and_make_one_step_of_the_benchmark_batch(tmp_path, stage, cls, rows):
    """Each config the script writes is accepted by tether's loader (an unknown key or a refused value would
    end the run), at fp32, without checkpointing but for DPO with the reference in the step (its first 15
    layers), and a step is one optimizer step over the benchmark's batch:
    8 SFT rows, 4 pairs, or 2 prompts × G 4 = 8 GRPO samples in one minibatch, one epoch."""
    path = tmp_path / f"{stage}.yaml"
    path.write_text(json.dumps(vs.tether_config(stage, "some/model", tmp_path, 5, 2)))
    cfg = load_config(cls, path)
    assert cfg.dtype == "float32" and cfg.train.mixed_precision == "no"
    assert cfg.train.gradient_checkpointing is (stage == "dpo")  # the lean configuration, there only
    assert cfg.train.checkpoint_layers == (15 if stage == "dpo" else 0)
    assert (cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.threads) == (rows, rows, 2)
    assert cfg.data.chat_template == "never"
    if stage == "grpo":
        assert (cfg.iterations, cfg.rollout.batch_size * cfg.grpo.group_size, cfg.grpo.epochs) == (5, 8, 1)
        assert (cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.grpo.beta) == (64, 1.0, 0.04)
        assert cfg.reward.source == "vs_trl:length_reward" and cfg.reward.no_eos == "keep"
    else:
        assert (cfg.train.max_steps, cfg.data.max_length) == (5, 256)
    if stage.startswith("dpo"):  # the reference in the step, or cached before the first
        assert cfg.precompute_reference is (stage == "dpo-cached")


def test_readme_block_by_hand():
    """A record of two stages: SFT TRL 20 s/step at 8 GB, tether 5 s at 2 GB → lead 20/5 = 4.00×, memory
    2/8 = 0.25; GRPO TRL 9 s at 6 GB, tether 6 s at 3 GB → 1.50×, 0.50, completion lengths printed with one
    decimal. Steps 2,6 → "(t6 − t2) / 4"; RM and DPO absent → no rows; the stages in STAGES order."""
    def r(tool, stage, s, gb, **kw):
        return {"tool": tool, "stage": stage, "s_per_step": s, "peak_rss_gb": gb, **kw}

    record = {"commit": "abc1234", "date": "2026-12-02 13:30 UTC", "cpus": 2, "cpu": "AMD EPYC", "threads": 2,
              "pairs": 64, "steps": [2, 6], "load_start": [0.96, 0.8, 0.8], "load_end": [1.94, 1.9, 1.6],
              "results": [r("trl", "grpo", 9.0, 6.0, completion_tokens=61.3),
                          r("tether", "grpo", 6.0, 3.0, completion_tokens=63.0),
                          r("trl", "sft", 20.0, 8.0), r("tether", "sft", 5.0, 2.0)]}
    text = vs.block(record)
    rows = text.splitlines()
    assert rows[2] == "| SFT (8 rows) | 20.00 | 8.00 GB | 5.00 | 2.00 GB | 4.00× | 0.250 | — |"
    grpo = ("| GRPO (2 prompts × G 4, sampling included) | 9.00 | 6.00 GB | 6.00 | 3.00 GB | 1.50× | 0.500 "
            "| — |")
    assert rows[3] == grpo
    assert rows[4] == ""
    stamp = " ".join(rows[5:])
    assert "--stages sft,grpo --steps 2,6` at commit abc1234 on 2026-12-02 13:30 UTC" in stamp
    assert "(t6 − t2) / 4" in stamp and "load average 0.96 at the start and 1.94 at the end" in stamp
    assert "TRL 61.3 tokens, tether 63.0" in stamp
    dpo = {**record, "dpo_checkpoint_layers": 12,
           "results": [r("trl", "dpo", 9.0, 8.0), r("tether", "dpo", 3.0, 4.0)]}
    assert vs.block(dpo).splitlines()[2] == (  # the record's own setting, not the script's constant
        "| DPO (4 pairs, reference in the step; tether checkpoints 12 layers) | 9.00 | 8.00 GB | 3.00 "
        "| 4.00 GB | 3.00× | 0.500 | — |")
    # with the peak read twice (120 and 150 GFLOP/s): tether's 90 GFLOP/s on real tokens is 90/150 = 60 %
    # of the higher; the stamp names it and N (106,200,000 → 106.2 M)
    rated = {**record, "matmul_peak_gflops": [120.0, 150.0], "non_embedding_params": 106_200_000,
             "results": [r("trl", "sft", 20.0, 8.0), r("tether", "sft", 5.0, 2.0, real_gflop_per_s=90.0)]}
    text = vs.block(rated)
    assert text.splitlines()[2] == "| SFT (8 rows) | 20.00 | 8.00 GB | 5.00 | 2.00 GB | 4.00× | 0.250 | 60% |"
    assert "N = 106.2 M non-embedding" in " ".join(text.splitlines()) and "150.0 GFLOP/s" in text


def test_real_tokens_count_every_row_whole_over_the_timed_steps():
    """item_tokens: an SFT row 3 prompt + 2 completion tokens = 5; a pair with a 3-token prompt and answers of
    2 and 4 tokens = (3 + 2) + (3 + 4) = 12, as PairTokens and inside a DPOPair. step_tokens with the batch
    the whole data (3 items: one step an epoch, every step all items, whatever the permutation): steps 2..5
    of a 6-step run are 4 steps × (5 + 12 + 12) = 116 tokens; with batch 1 the steps of an epoch, one
    item each, visit every item once: 3 steps of one epoch = 29."""
    from tether.data import SFTTokens
    from tether.preferences import PairTokens
    from tether.trainers.dpo import DPOPair

    sft = SFTTokens([1, 2, 3], [4, 5])
    pair = PairTokens([1, 2, 3], [4, 5], [6, 7, 8, 9])
    assert (vs.item_tokens(sft), vs.item_tokens(pair), vs.item_tokens(DPOPair(pair))) == (5, 12, 12)
    items = [sft, pair, DPOPair(pair)]
    assert vs.step_tokens(items, batch_size=3, seed=0, n1=2, n2=6) == 116
    assert vs.step_tokens(items, batch_size=1, seed=7, n1=3, n2=6) == 29  # steps 3, 4, 5: epoch 1, whole


def test_write_errors_are_one_line(tmp_path, capsys):
    """A README without the vs-trl markers, and a --from-json file that is not there: exit 2 with a one-line
    message naming the problem, nothing written."""
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit) as e:
        vs.main(["--from-json", str(tmp_path / "r.json"), "--write", str(readme)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--write: " in err and "no block <!-- figures:vs-trl -->" in err
    assert readme.read_text() == "# no markers\n"
    readme.write_text("<!-- figures:vs-trl -->\n<!-- /figures:vs-trl -->\n")
    with pytest.raises(SystemExit) as e:
        vs.main(["--from-json", str(tmp_path / "missing.json"), "--write", str(readme)])
    assert e.value.code == 2
    assert "--from-json " in capsys.readouterr().err
    assert readme.read_text() == "<!-- figures:vs-trl -->\n<!-- /figures:vs-trl -->\n"


def test_the_cached_reference_stage_runs_tether_dpo(tmp_path):
    """dpo-cached is no tether command of its own: it runs `tether dpo` with its config."""
    args = argparse.Namespace(model="some/model", threads=2, tether_python="python")
    cmd, _ = vs.tether_command("dpo-cached", args, tmp_path, 3, tmp_path)
    assert cmd[:4] == ["python", "-m", "tether.cli", "dpo"]
    assert json.loads(Path(cmd[5]).read_text())["precompute_reference"] is True
