"""tether.theory: the closed-form optimum π* ∝ p·exp(r/β), checked against hand derivations and limits."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.theory import dpo_implicit_reward, optimal_policy


def test_worked_example():
    """The lesson's example: p = (0.6, 0.4), r = (1, 0), β = 0.5.

    Weights p·exp(r/β) = (0.6·e², 0.4) = (4.4334337, 0.4); Z = 4.8334337.
    π* = (4.4334337/4.8334337, 0.4/4.8334337) = (0.917243, 0.082757).
    log Z = ln 4.8334337 = 1.575557; β·log Z = 0.787779.
    KL = 0.917243·ln(0.917243/0.6) + 0.082757·ln(0.082757/0.4)
       = 0.917243·0.424447 + 0.082757·(−1.575557) = 0.389321 − 0.130390 = 0.258929 (4 decimals: 0.2589).
    """
    e2 = math.exp(2.0)
    z = 0.6 * e2 + 0.4
    res = optimal_policy([0.6, 0.4], [1.0, 0.0], 0.5)
    assert res.policy.dtype == torch.float64
    assert res.policy.tolist() == pytest.approx([0.6 * e2 / z, 0.4 / z], abs=1e-12)
    assert [round(x, 4) for x in res.policy.tolist()] == [0.9172, 0.0828]
    assert res.log_partition == pytest.approx(math.log(z), abs=1e-12)
    assert round(z, 4) == 4.8334 and round(res.soft_value, 4) == 0.7878
    assert res.kl_to_prior == pytest.approx(0.258929, abs=1e-6)
    assert round(res.kl_to_prior, 4) == 0.2589
    assert res.objective == pytest.approx(res.soft_value, abs=1e-12)


def test_lesson_rounding_explains_its_0_9173():
    """The lesson prints 0.9173 / 0.0827; the exact values are 0.9172 / 0.0828.

    Its figures follow from rounding e² to 7.39 before dividing: weights 0.6·7.39 = 4.434 and 0.4,
    Z = 4.834, 4.434/4.834 = 0.917253 → 0.9173 and 0.4/4.834 = 0.082747 → 0.0827. (Rounding e² to 7.389
    instead gives 4.433/4.833 = 0.917236 → 0.9172, so the lesson's 0.9173 needs the coarser 7.39.)
    """
    lesson = [round(w / 4.834, 4) for w in (round(0.6 * 7.39, 3), 0.4)]
    assert lesson == [0.9173, 0.0827]
    exact = [round(x, 4) for x in optimal_policy([0.6, 0.4], [1.0, 0.0], 0.5).policy.tolist()]
    assert exact == [0.9172, 0.0828]


def test_beta_zero_limit_and_ties():
    """β = 0: all mass on argmax r over the prior's support, ties split ∝ prior.

    p = (0.5, 0.3, 0.2), r = (1, 1, 0): best set {y1, y2} with prior mass 0.8 → π* = (0.625, 0.375, 0).
    β·log Z → max r = 1; KL = Σ π log(π/p) = log(1/0.8) = 0.223144; objective = E[r] = 1.
    """
    res = optimal_policy([0.5, 0.3, 0.2], [1.0, 1.0, 0.0], 0.0)
    assert res.policy.tolist() == pytest.approx([0.625, 0.375, 0.0])
    assert res.soft_value == 1.0 and res.expected_reward == 1.0 and res.objective == 1.0
    assert res.kl_to_prior == pytest.approx(-math.log(0.8))
    assert res.log_partition == math.inf


def test_beta_zero_ignores_zero_prior_response():
    """A response with prior 0 never gets mass, even with the top reward: p = (0, 1), r = (5, 0) → (0, 1)."""
    res = optimal_policy([0.0, 1.0], [5.0, 0.0], 0.0)
    assert res.policy.tolist() == [0.0, 1.0]
    assert res.soft_value == 0.0 and res.kl_to_prior == 0.0
    res = optimal_policy([0.0, 1.0], [5.0, 0.0], 0.3)
    assert res.policy.tolist() == [0.0, 1.0]


def test_beta_inf_is_prior():
    """β = ∞: π* = p, log Z = 0, β·log Z → E_p[r] = 0.6·1 + 0.4·0 = 0.6, KL = 0."""
    res = optimal_policy([0.6, 0.4], [1.0, 0.0], math.inf)
    assert res.policy.tolist() == [0.6, 0.4]
    assert res.soft_value == pytest.approx(0.6) and res.objective == pytest.approx(0.6)
    assert res.kl_to_prior == 0.0 and res.log_partition == 0.0


def test_tiny_beta_matches_beta_zero_limit():
    """β = 1e-6 with p = (0.6, 0.4), r = (1, 0): π*(y2)/π*(y1) = (0.4/0.6)·e^(−10⁶) = 0 in float64.

    β·log Z = 1 + β·log(0.6 + 0.4·e^(−10⁶)) = 1 + 1e-6·ln 0.6 = 0.99999948917; KL → −ln 0.6 = 0.5108256.
    """
    res = optimal_policy([0.6, 0.4], [1.0, 0.0], 1e-6)
    assert res.policy.tolist() == [1.0, 0.0]
    assert res.soft_value == pytest.approx(1.0 + 1e-6 * math.log(0.6), abs=1e-15)
    assert res.kl_to_prior == pytest.approx(-math.log(0.6), abs=1e-12)
    assert math.isfinite(res.log_partition) and res.log_partition == pytest.approx(1e6 + math.log(0.6))


def test_huge_beta_matches_beta_inf_limit():
    """β = 1e9: expand to first order in 1/β.

    π*(y) ≈ p(y)·(1 + (r(y) − E_p r)/β): π*(y1) = 0.6·(1 + 0.4e-9) = 0.6 + 2.4e-10.
    β·log Z ≈ E_p[r] + Var_p(r)/(2β) = 0.6 + 0.24/2e9 = 0.6 + 1.2e-10.
    KL ≈ Var_p(r)/(2β²) = 0.24/(2e18) = 1.2e-19 (a relative check; a plain logsumexp would give 0 or garbage).
    """
    res = optimal_policy([0.6, 0.4], [1.0, 0.0], 1e9)
    assert res.policy[0].item() == pytest.approx(0.6 + 2.4e-10, abs=1e-15)
    assert res.soft_value == pytest.approx(0.6 + 1.2e-10, abs=1e-15)
    assert res.kl_to_prior == pytest.approx(1.2e-19, rel=1e-5)
    assert res.objective == pytest.approx(res.soft_value, abs=1e-15)


def test_accepts_lists_numpy_and_tensors():
    a = optimal_policy([0.6, 0.4], [1, 0], 0.5).policy
    b = optimal_policy(np.array([0.6, 0.4]), np.array([1, 0]), 0.5).policy
    c = optimal_policy(torch.tensor([0.6, 0.4], dtype=torch.float32), torch.tensor([1.0, 0.0]), 0.5).policy
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-7)


@pytest.mark.parametrize(
    "prior, reward, beta, needle",
    [
        ([0.6, 0.5], [1, 0], 1, "sums to 1.1"),
        ([1.2, -0.2], [1, 0], 1, "non-negative"),
        ([0.6, 0.4], [1], 1, "2 entries but reward has 1"),
        ([0.6, 0.4], [1, 0], -0.1, "beta must be >= 0"),
        ([0.6, 0.4], [1, 0], float("nan"), "beta must be >= 0"),
        ([0.6, float("nan")], [1, 0], 1, "prior contains NaN"),
        ([0.6, 0.4], [1, float("nan")], 1, "reward contains NaN"),
        ([0.6, 0.4], [1, float("inf")], 1, "reward must be finite"),
        ([], [], 1, "non-empty"),
    ],
)
def test_bad_input_is_a_clear_error(prior, reward, beta, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        optimal_policy(prior, reward, beta)


def test_normalize_rescales_prior():
    """p = (3, 1) normalised is (0.75, 0.25); at β = ∞ that is π*."""
    res = optimal_policy([3.0, 1.0], [1.0, 0.0], math.inf, normalize=True)
    assert res.policy.tolist() == [0.75, 0.25]


def test_dpo_implicit_reward_at_optimum():
    """At π = π*, β·log(π*/p) = β·(r/β − log Z) = r − β·log Z: the reward up to one constant per prompt."""
    prior, reward, beta = [0.5, 0.3, 0.2], [2.0, -1.0, 0.5], 0.7
    res = optimal_policy(prior, reward, beta)
    implicit = dpo_implicit_reward(res.policy, prior, beta)
    expected = torch.tensor(reward, dtype=torch.float64) - res.soft_value
    assert torch.allclose(implicit, expected, atol=1e-12)


# ---- properties -------------------------------------------------------------------------------------


@st.composite
def problems(draw):
    n = draw(st.integers(2, 6))
    weights = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    rewards = draw(st.lists(st.floats(-5.0, 5.0), min_size=n, max_size=n))
    total = sum(weights)
    return [w / total for w in weights], rewards


betas = st.floats(1e-3, 1e3)


@settings(max_examples=200, deadline=None)
@given(problems(), betas)
def test_policy_is_normalised_and_objective_equals_soft_value(problem, beta):
    prior, reward = problem
    res = optimal_policy(prior, reward, beta)
    assert float(res.policy.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((res.policy >= 0).all())
    assert res.objective == pytest.approx(res.soft_value, rel=1e-9, abs=1e-9)
    assert res.kl_to_prior >= 0


@settings(max_examples=200, deadline=None)
@given(problems(), betas, betas)
def test_more_beta_never_increases_best_mass_reward_or_kl(problem, b1, b2):
    """For β1 < β2: π*(best), E_π*[r] and KL(π*‖p) at β2 are ≤ their values at β1.

    π*(best)/π*(y) = (p_best/p_y)·e^((r_best − r_y)/β) falls as β grows; dE/d(1/β) = Var_π*(r) ≥ 0.
    """
    prior, reward = problem
    lo, hi = sorted((b1, b2))
    a, b = optimal_policy(prior, reward, lo), optimal_policy(prior, reward, hi)
    best = int(np.argmax(reward))
    tol = 1e-12
    assert b.policy[best].item() <= a.policy[best].item() + tol
    assert b.expected_reward <= a.expected_reward + tol
    assert b.kl_to_prior <= a.kl_to_prior + tol
