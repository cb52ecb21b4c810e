import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.losses import gae, grpo_advantages, rloo_advantages, whiten


def _gae_loop(rewards, values, mask, gamma, lam):
    """The textbook recursion, one row and one step at a time in plain Python: the steps are the masked
    positions; A_t = δ_t + γλ·A_{t+1}, δ_t = r_t + γ·V_{t+1} − V_t, with V and A = 0 after the last step."""
    adv = [[0.0] * len(row) for row in rewards]
    for b in range(len(rewards)):
        steps = [t for t in range(len(rewards[b])) if mask[b][t]]
        next_value = next_adv = 0.0
        for t in reversed(steps):
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            next_adv = delta + gamma * lam * next_adv
            next_value = values[b][t]
            adv[b][t] = next_adv
    return adv


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    """γ = λ = 1: A_t = Σ_{k≥t} r_k − V_t (the values telescope). Rewards (1, 2, 3) → reward-to-go (6, 5, 3);
    V = (0.5, 1, 1.5) → A = (5.5, 4, 1.5), returns = A + V = (6, 5, 3).
    The same response in a row with a prompt token before it and padding after it (junk rewards and values
    there) gives the same numbers at the response positions and 0 elsewhere."""
    adv, ret = gae(torch.tensor([[1.0, 2, 3]]), torch.tensor([[0.5, 1, 1.5]]), torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[5.5, 4.0, 1.5]]))
    assert torch.allclose(ret, torch.tensor([[6.0, 5.0, 3.0]]))

    rewards = torch.tensor([[99.0, 1, 2, 3, 99]])
    values = torch.tensor([[-7.0, 0.5, 1, 1.5, 42]])
    adv, ret = gae(rewards, values, torch.tensor([[0, 1, 1, 1, 0]]), 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[0.0, 5.5, 4.0, 1.5, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.0, 6.0, 5.0, 3.0, 0.0]]))


def test_gae_lambda_zero_is_one_step_td():
    """λ = 0: A_t = δ_t. γ = ½, r = (0, 1), V = (1, 2): δ_0 = 0 + ½·2 − 1 = 0, δ_1 = 1 + ½·0 − 2 = −1
    (the value after the last token is 0)."""
    adv, _ = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), 0.5, 0.0)
    assert torch.allclose(adv, torch.tensor([[0.0, -1.0]]))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_matches_plain_loop(data, gamma, lam):
    """Random rows of 6 positions, each with a contiguous response somewhere (left or right padding)."""
    rows = data.draw(st.integers(1, 4))
    T = 6
    mask = []
    for _ in range(rows):
        start = data.draw(st.integers(0, T - 1))
        end = data.draw(st.integers(start + 1, T))
        mask.append([1 if start <= t < end else 0 for t in range(T)])
    floats = st.floats(-5, 5)
    rewards = [[data.draw(floats) for _ in range(T)] for _ in range(rows)]
    values = [[data.draw(floats) for _ in range(T)] for _ in range(rows)]
    adv, ret = gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(mask), gamma, lam)
    expected = torch.tensor(_gae_loop(rewards, values, mask, gamma, lam))
    assert torch.allclose(adv, expected, atol=1e-4)
    m = torch.tensor(mask).bool()
    assert torch.allclose(ret[m], (expected + torch.tensor(values))[m], atol=1e-4)


def test_whiten_hand_example():
    """Masked x = (1, 3) (a masked-out 100 ignored): mean 2, population variance 1 → (−1, 1) up to the 1e-8
    in the square root; 0 where the mask is 0. shift_mean=False adds the mean back: (1, 3)."""
    x, mask = torch.tensor([[1.0, 100.0, 3.0]]), torch.tensor([[1, 0, 1]])
    assert torch.allclose(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0]]))
    assert torch.allclose(whiten(x, mask, shift_mean=False), torch.tensor([[1.0, 0.0, 3.0]]))


def test_whiten_gives_masked_mean_zero_std_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=g) * 3 + 5
    mask = torch.rand(4, 7, generator=g) > 0.3
    out = whiten(x, mask)[mask]
    assert abs(out.mean().item()) < 1e-5
    assert math.isclose(out.std(unbiased=False).item(), 1.0, rel_tol=1e-5)


def test_grpo_advantages_group_scale():
    """G = 4, group (1, 0, 0, 0): mean ¼, unbiased variance (0.75² + 3·0.25²)/3 = 0.75/3 = ¼ → std ½.
    A = (0.75, −0.25, −0.25, −0.25) / (0.5 + 1e-4). Group (2, 2, 2, 2): std 0 → A = 0 (the 1e-4 keeps
    it finite)."""
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 0, 2, 2, 2, 2]), group_size=4)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / 0.5001
    expected[4:] = 0
    assert torch.allclose(adv, expected, atol=1e-6)


@pytest.mark.parametrize(
    "scale, expected",
    [
        # groups (0, 2) and (1, 1): means 1 and 1; group stds √2 and 0
        ("group", [-1 / (math.sqrt(2) + 1e-4), 1 / (math.sqrt(2) + 1e-4), 0.0, 0.0]),
        # batch (0, 2, 1, 1): mean 1, unbiased variance (1 + 1 + 0 + 0)/3 = 2/3; the centring is per group
        ("batch", [-1 / (math.sqrt(2 / 3) + 1e-4), 1 / (math.sqrt(2 / 3) + 1e-4), 0.0, 0.0]),
        ("none", [-1.0, 1.0, 0.0, 0.0]),
    ],
)
def test_grpo_advantages_scales(scale, expected):
    adv = grpo_advantages(torch.tensor([0.0, 2, 1, 1]), group_size=2, scale=scale)
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)


def test_rloo_hand_example():
    """G = 3, r = (1, 2, 6): leave-one-out baselines (2 + 6)/2 = 4, (1 + 6)/2 = 3.5, (1 + 2)/2 = 1.5
    → A = (−3, −1.5, 4.5) = 3/2·(r − mean 3)."""
    assert torch.allclose(rloo_advantages(torch.tensor([1.0, 2, 6]), 3), torch.tensor([-3.0, -1.5, 4.5]))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 5).flatmap(
        lambda g: st.tuples(st.just(g), st.lists(st.floats(-10, 10), min_size=g, max_size=g))
    )
)
def test_group_advantages_sum_to_zero(group):
    """Both estimators centre within each group: Σ_i A_i = 0 (float64, so that rounding in a near-tie group
    is not blown up by the 1/(std + 1e-4) of GRPO)."""
    g, rewards = group
    r = torch.tensor(rewards, dtype=torch.float64)
    assert abs(rloo_advantages(r, g).sum().item()) < 1e-9
    assert abs(grpo_advantages(r, g).sum().item()) < 1e-7


@pytest.mark.parametrize("fn", [grpo_advantages, rloo_advantages])
def test_bad_group_size_raises(fn):
    with pytest.raises(ValueError):
        fn(torch.tensor([1.0, 2.0]), 1)
    with pytest.raises(ValueError):
        fn(torch.tensor([1.0, 2.0, 3.0]), 2)
