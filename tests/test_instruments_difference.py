"""The interval on a difference of two proportions (Newcombe 1998, method 10) and the verdicts of the
behaviour rates built on it. Wilson intervals below use z = 1.959964, z² = 3.841459."""

import pytest

from tether.instruments.stats import compare_rates, difference_interval


def test_difference_interval_by_hand():
    """8/20 − 4/20. Wilson 8/20: p 0.4, z²/n 0.192073, denom 1.192073, centre (0.4 + 0.096036)/1.192073 =
    0.416111, half 1.959964·sqrt(0.012 + 0.002401)/1.192073 = 0.197305 → [0.218806, 0.613416]. Wilson 4/20:
    centre (0.2 + 0.096036)/1.192073 = 0.248337, half 1.959964·sqrt(0.008 + 0.002401)/1.192073 = 0.167679 →
    [0.080658, 0.416017]. d = 0.2; lower 0.2 − sqrt(0.181194² + 0.216017²) = 0.2 − 0.281947 = −0.081947;
    upper 0.2 + sqrt(0.213416² + 0.119342²) = 0.2 + 0.244520 = 0.444520."""
    lo, hi = difference_interval(8, 20, 4, 20)
    assert lo == pytest.approx(-0.081947, abs=1e-5) and hi == pytest.approx(0.444520, abs=1e-5)


@pytest.mark.parametrize("counts,want", [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
])
def test_difference_interval_matches_newcombes_table(counts, want):
    """Newcombe 1998, Table II, method 10, examples (a)-(d) as printed there (4 decimals)."""
    lo, hi = difference_interval(*counts)
    assert (round(lo, 4), round(hi, 4)) == want


def test_difference_interval_at_the_edges():
    """0/10 − 0/20: d 0, lower −(u2 − 0) = −0.161125 (Wilson 0/20's upper end z²/n/(1 + z²/n) =
    0.192073/1.192073), upper u1 = 0.384146/1.384146 = 0.277533. Swapping the samples mirrors it."""
    lo, hi = difference_interval(0, 10, 0, 20)
    assert lo == pytest.approx(-0.161125, abs=1e-5) and hi == pytest.approx(0.277533, abs=1e-5)
    lo2, hi2 = difference_interval(0, 20, 0, 10)
    assert (lo2, hi2) == pytest.approx((-hi, -lo))


def _rate(k, n):
    return {"value": k / n, "n": n}


def test_compare_rates_verdict_follows_the_direction():
    """9/10 vs 3/10: the difference's interval [0.1705, 0.8090] lies above 0 — better where higher is better
    (capability), worse where lower is better (sycophancy); 8/20 vs 4/20 ([−0.082, 0.445]) holds 0."""
    cap = compare_rates(_rate(9, 10), _rate(3, 10), higher_is_better=True)
    syc = compare_rates(_rate(9, 10), _rate(3, 10), higher_is_better=False)
    assert cap["verdict"] == "better" and cap["pass"] is True
    assert syc["verdict"] == "worse" and syc["pass"] is False
    assert cap["change"] == pytest.approx(0.6) and cap["base"] == 0.3 and cap["base_n"] == 10
    assert cap["difference_ci95"] == pytest.approx([0.170523, 0.809018], abs=1e-5)
    tie = compare_rates(_rate(8, 20), _rate(4, 20), higher_is_better=False)
    assert tie["verdict"] == "no measurable difference" and tie["pass"] is True
    info = compare_rates(_rate(9, 10), _rate(3, 10), higher_is_better=None)
    assert "verdict" not in info and "pass" not in info and info["difference_ci95"][0] > 0


def test_compare_rates_with_an_unmeasured_side_compares_nothing():
    out = compare_rates(_rate(1, 2), {"value": None, "n": 0, "reason": "none"}, higher_is_better=True)
    assert out["base"] is None and "verdict" not in out and "difference_ci95" not in out
