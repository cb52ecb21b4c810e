"""`tether optimal-policy`: the table, the JSON, and one-line errors with exit code 2."""

import json
import math
import subprocess
import sys

import pytest

from tether.cli import main


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_shows_worked_example(capsys):
    """p = (0.6, 0.4), r = (1, 0), β = 0.5: π* = 0.9172/0.0828, Z = 4.8334, β·log Z = 0.7878, KL = 0.2589
    (derived in tests/test_theory.py::test_worked_example)."""
    code, out, err = run_cli(
        capsys, "optimal-policy", "--prior", "0.6", "0.4", "--reward", "1", "0", "--beta", "0.5"
    )
    assert code == 0 and err == ""
    assert "0.9172" in out and "0.0828" in out
    for text in ("Z = 4.8334", "beta*log Z = 0.7878", "KL = 0.2589", "objective = 0.7878"):
        assert text in out


def test_json_with_limits(capsys):
    """β = 0 → (1, 0) with log Z = +inf written as "inf"; β = inf → the prior, written as beta "inf"."""
    code, out, _ = run_cli(
        capsys,
        "optimal-policy",
        "--prior",
        "0.6",
        "0.4",
        "--reward",
        "1",
        "0",
        "--beta",
        "0.5",
        "0",
        "inf",
        "--json",
    )
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["beta"] for r in results] == [0.5, 0.0, "inf"]
    assert results[0]["policy"] == pytest.approx([0.9172430971, 0.0827569029])
    assert results[0]["log_partition"] == pytest.approx(math.log(0.6 * math.exp(2) + 0.4))
    assert results[1]["policy"] == [1.0, 0.0] and results[1]["log_partition"] == "inf"
    assert results[2]["policy"] == [0.6, 0.4] and results[2]["soft_value"] == pytest.approx(0.6)
    assert set(results[0]) == {
        "beta",
        "policy",
        "log_partition",
        "soft_value",
        "expected_reward",
        "kl_to_prior",
        "objective",
    }


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--prior", "0.6", "0.5", "--reward", "1", "0", "--beta", "1"], "--normalize"),
        (["--prior", "-0.6", "1.6", "--reward", "1", "0", "--beta", "1"], "non-negative"),
        (["--prior", "0.6", "0.4", "--reward", "1", "--beta", "1"], "2 entries but reward has 1"),
        (["--prior", "0.6", "0.4", "--reward", "1", "0", "--beta", "-1"], "beta must be >= 0"),
        (["--prior", "0.6", "0.4", "--reward", "1", "nan", "--beta", "1"], "NaN"),
        (["--prior", "0.6", "0.4", "--reward", "1", "x", "--beta", "1"], "not a number"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args, needle):
    code, out, err = run_cli(capsys, "optimal-policy", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_normalize_flag(capsys):
    code, out, _ = run_cli(
        capsys,
        "optimal-policy",
        "--prior",
        "3",
        "1",
        "--reward",
        "1",
        "0",
        "--beta",
        "inf",
        "--normalize",
        "--json",
    )
    assert code == 0 and json.loads(out)["results"][0]["policy"] == [0.75, 0.25]


def test_console_script_exit_code():
    """The installed entry point returns the exit code to the shell."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether.cli",
            "optimal-policy",
            "--prior",
            "1",
            "--reward",
            "0",
            "--beta",
            "-2",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "beta must be >= 0" in proc.stderr
