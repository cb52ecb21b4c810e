"""Three-way verdicts from a 95% interval and the no-change value: better / no measurable difference / worse.

The intervals are Wilson's (tether.instruments.wilson_interval), derived by hand below with z = 1.959964,
z² = 3.841459."""

import pytest

from tether.instruments import ScoreJudge, win_rate
from tether.instruments.report import instrument_rows
from tether.instruments.stats import interval_verdict


def test_verdict_is_better_worse_or_no_difference():
    """Direction and ends: an interval touching the no-change value contains it."""
    assert interval_verdict([0.55, 0.70], 0.5) == "better"
    assert interval_verdict([0.30, 0.45], 0.5) == "worse"
    assert interval_verdict([0.30, 0.60], 0.5) == "no measurable difference"
    assert interval_verdict([0.50, 0.60], 0.5) == "no measurable difference"
    assert interval_verdict([0.40, 0.50], 0.5) == "no measurable difference"
    # for a rate where lower is better (e.g. refusal of benign prompts), the sides swap
    assert interval_verdict([0.55, 0.70], 0.5, higher_is_better=False) == "worse"
    assert interval_verdict([0.30, 0.45], 0.5, higher_is_better=False) == "better"


def _judge():
    return ScoreJudge(lambda prompts, responses: [float(r) for r in responses], name="fixed")


def _win_rate(wins: int, ties: int, losses: int) -> dict:
    pol = ["1"] * wins + ["1"] * ties + ["0"] * losses
    base = ["0"] * wins + ["1"] * ties + ["1"] * losses
    return win_rate(_judge(), ["p"] * len(pol), pol, base)


def test_a_tie_is_no_measurable_difference_and_passes():
    """25 wins, 0 ties, 25 losses of 50: p̂ = 0.5, Wilson centre 0.5, half = 1.959964·sqrt(0.25/50 +
    3.841459/10000)/(1 + 3.841459/50) = 1.959964·0.073376/1.076829 = 0.133552 → [0.366448, 0.633552], which
    contains 0.5. The old rule (value > 0.5) called this FAIL."""
    res = _win_rate(25, 0, 25)
    lo, hi = res["ci95"]
    assert lo == pytest.approx(0.366448, abs=1e-5) and hi == pytest.approx(0.633552, abs=1e-5)
    assert res["verdict"] == "no measurable difference" and res["pass"] is True
    assert res["no_change"] == 0.5


def test_a_clear_win_is_better_and_a_clear_loss_worse():
    """18 of 20 wins: p̂ = 0.9, z²/n = 0.192073, denom 1.192073, centre (0.9 + 0.096036)/1.192073 = 0.835551,
    half = 1.959964·sqrt(0.0045 + 0.002401)/1.192073 = 1.959964·0.083072/1.192073 = 0.136583 → lower end
    0.698968 > 0.5: better. 2 of 20 is the mirror image, [0.027, 0.301] < 0.5: worse (pass false)."""
    better, worse = _win_rate(18, 0, 2), _win_rate(2, 0, 18)
    assert better["ci95"][0] == pytest.approx(0.698968, abs=1e-5)
    assert better["verdict"] == "better" and better["pass"] is True
    assert worse["ci95"][1] == pytest.approx(1 - 0.698968, abs=1e-5)
    assert worse["verdict"] == "worse" and worse["pass"] is False


def test_report_shows_the_verdict_and_old_summaries_still_read():
    """A summary with a verdict shows it in the verdict column; one written before verdicts existed (pass
    only) still shows PASS / FAIL."""
    new = {"instruments": {"win_rate_vs_base": {"value": 0.498, "ci95": [0.327, 0.669], "n": 30,
                                                "judge": "llm", "threshold": 0.5, "no_change": 0.5,
                                                "verdict": "no measurable difference", "pass": True}}}
    old = {"instruments": {"win_rate_vs_base": {"value": 0.498, "ci95": [0.327, 0.669], "n": 30,
                                                "judge": "llm", "threshold": 0.5, "pass": False}}}
    (row_new,), (row_old,) = instrument_rows(new), instrument_rows(old)
    assert row_new[3] == "no measurable difference" and "no change 0.50" in row_new[2]
    assert row_old[3] == "FAIL" and "threshold 0.50" in row_old[2]
    assert row_new[1] == row_old[1] == "0.498"


def test_report_colours_better_green_and_schema_knows_the_verdict():
    """report.html gives "better" the pass colour; summary.json's schema accepts the three verdicts and
    refuses any other word."""
    import json
    from pathlib import Path

    import jsonschema

    import tether
    from tether.instruments.report import report_body

    schema = json.loads((Path(tether.__file__).parent / "summary.schema.json").read_text())
    res = _win_rate(18, 0, 2)
    summary = {"instruments": {"kl_from_base": {"value": 1.0, "stderr": 0.1, "n": 20, "unit": "nats"},
                               "win_rate_vs_base": res},
               "rewards": {"policy": {"proxy": None, "gold": None}, "base": {"proxy": None, "gold": None}},
               "beta": 0.1, "wall_seconds": 1.0}
    assert "<td class='pass'>better</td>" in report_body(summary, None, None, "iteration")
    jsonschema.validate(summary, schema)
    summary["instruments"]["win_rate_vs_base"]["verdict"] = "tie"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(summary, schema)
