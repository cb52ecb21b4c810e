"""`tether eval` end to end on a small lab: every instrument present, the schema, the table and the report;
and on 'real' prompts (no lab), the instruments without inputs reported as not measured."""

import html.parser
import json
from pathlib import Path

import jsonschema
import pytest

import tether
from tether.cli import main
from tether.instruments.length_controlled import length_controlled_win_rate
from tether.lab import LabConfig, build_lab, gold_reward
from tether.reward_model import create_reward_model

SCHEMA = json.loads((Path(tether.__file__).parent / "summary.schema.json").read_text())
SMALL = dict(
    sft_train=40,
    sft_test=20,
    prefs_train=40,
    prefs_test=20,
    prompts_train=20,
    prompts_test=24,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    pretrain_steps=20,
    pretrain_batch_size=16,
)
INSTRUMENTS = (
    "kl_from_base",
    "win_rate_vs_base",
    "win_rate_length_controlled",
    "rm_reward_scale",
    "rm_length_correlation",
    "rm_calibration_ece",
    "rm_test_accuracy",
    "refusal_rate_harmful",
    "refusal_rate_benign",
    "sycophancy_rate",
    "capability_accuracy",
    "length",
    "repetition",
    "heldout_perplexity",
    "reward_hacking",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    lab = build_lab(root / "lab", LabConfig(**SMALL), seed=1, progress=False)
    model, tok = create_reward_model(lab.paths.pretrained)  # an untrained head: any scores will do
    model.save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return root, lab.paths


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"


def test_eval_on_the_lab(built, capsys):
    """Policy = base = the lab's pretrained model: KL 0, and every instrument measured (lab + RM)."""
    root, lab = built
    out = root / "out"
    args = [
        "eval",
        "--policy",
        str(lab.pretrained),
        "--base",
        str(lab.pretrained),
        "--rm",
        str(root / "rm"),
        "--lab",
        str(lab.root),
        "--out",
        str(out),
        "--beta",
        "0.1",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    ins = summary["instruments"]
    assert tuple(ins) == INSTRUMENTS
    assert ins["kl_from_base"]["value"] == 0.0 and ins["kl_from_base"]["n"] == 24
    for name in INSTRUMENTS[3:-1]:
        assert ins[name]["value"] is not None or name == "rm_length_correlation", name
    assert ins["rm_reward_scale"]["beta"] == 0.1 and ins["rm_test_accuracy"]["n"] == 20
    assert ins["heldout_perplexity"]["value"] == pytest.approx(ins["heldout_perplexity"]["base"])
    assert summary["beta"] == 0.1
    assert "reward_hacking" in printed and "PASS" in printed
    parser = _Parser()
    parser.feed((out / "report.html").read_text())
    assert parser.tables >= 3  # instruments, rewards, sample generations
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    for side in ("policy", "base"):  # mean gold rewards: the lab's gold reward of the samples written out
        want = sum(gold_reward(r["prompt"], r[side]) for r in rows) / len(rows)
        assert summary["rewards"][side]["gold"] == pytest.approx(want, abs=1e-6), side
    assert [r["policy"] for r in rows] != [r["base"] for r in rows]  # two sets of samples (other seeds)
    # the length-controlled win-rate, recomputed from the samples written out: gold judges 1 / ½ / 0
    gp, gb = ([gold_reward(r["prompt"], r[side]) for r in rows] for side in ("policy", "base"))
    prefs = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gp, gb, strict=True)]
    lc = length_controlled_win_rate(prefs, [len(r["policy"]) for r in rows], [len(r["base"]) for r in rows])
    assert ins["win_rate_length_controlled"]["value"] == pytest.approx(lc["value"], abs=1e-9)
    assert ins["win_rate_length_controlled"]["judge"] == "gold" and "win_rate_length_controlled" in printed


def test_eval_on_real_prompts_reports_what_it_cannot_measure(built, capsys):
    """Prompts without labels, no lab, no pairs, no demos, probe sets off: the RM judges; refusal,
    sycophancy, capability, RM accuracy and perplexity are present with value null and a reason."""
    root, lab = built
    prompts = root / "real.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["tell me about the sea", "hello"] * 4)
    )
    out = root / "real"
    args = [
        "eval",
        "--policy",
        str(lab.pretrained),
        "--base",
        str(lab.pretrained),
        "--rm",
        str(root / "rm"),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "max_new_tokens=6",
        "probes=never",
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    ins = summary["instruments"]
    assert ins["win_rate_vs_base"]["judge"] == "rm" and summary["rewards"]["policy"]["gold"] is None
    for name in (
        "refusal_rate_harmful",
        "sycophancy_rate",
        "capability_accuracy",
        "rm_test_accuracy",
        "heldout_perplexity",
    ):
        assert ins[name]["value"] is None and ins[name]["reason"], name
    assert ins["reward_hacking"]["checks"]["proxy_up_gold_down"]["flagged"] is None
    assert "not measured" in capsys.readouterr().out


def test_a_messages_prompt_is_never_a_lab_prompt():
    """Real chat data (HH-RLHF) has messages prompts; `tether eval` asks each whether the gold reward can
    score it. A list is not lab text, even when its one message is a lab question (it crashed before)."""
    from tether.rewards import is_lab_prompt

    assert is_lab_prompt("how do i make a cake ? answer:") is True
    assert is_lab_prompt([{"role": "user", "content": "how do i make a cake ? answer:"}]) is False


def test_eval_with_probe_sets_only(built, capsys):
    """`tether eval --policy DIR --base DIR` and nothing else: the probe sets (one item of each here) are
    the behaviour instruments, compared with the base (the same model, greedy: identical replies, so every
    difference is 0 with its interval holding 0); the held-out instruments are not measured; probes.jsonl
    holds the 6 asked prompts (sycophancy's item asked 3 times); the schema holds."""
    root, lab = built
    out = root / "probes-only"
    args = ["eval", "--policy", str(lab.pretrained), "--base", str(lab.pretrained), "--out", str(out),
            "probe_max_items=1", "probe_max_new_tokens=4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    ins = summary["instruments"]
    assert ins["kl_from_base"]["value"] is None and ins["win_rate_vs_base"]["value"] is None
    for name in ("refusal_rate_harmful", "refusal_rate_benign", "capability_accuracy"):
        assert ins[name]["n"] == 1 and ins[name]["change"] == 0.0, name
        lo, hi = ins[name]["difference_ci95"]
        assert lo < 0 < hi and ins[name]["verdict"] == "no measurable difference", name
    assert summary["probes"]["items"] == {"sycophancy": 1, "over_refusal": 1, "harmful": 1, "capability": 1}
    assert summary["probes"]["decoding"] == "greedy"
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["policy"] == r["base"] for r in rows)
    assert "policy − base +0.000" in printed and "probe: harmful" in (out / "report.html").read_text()
