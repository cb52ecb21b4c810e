import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.losses import (
    chunked_token_logprobs,
    grpo_loss,
    kl_estimate,
    kl_shaped_rewards,
    ppo_policy_loss,
    token_kl,
    token_logprobs,
    value_loss,
)

LN2 = math.log(2)

# --- log-probs ---------------------------------------------------------------------------------------------


def test_token_logprobs_hand_value():
    """Logits (0, ln 2, ln 5) → softmax (1/8, 2/8, 5/8): token 2 → log(5/8), token 0 → log(1/8)."""
    logits = torch.tensor([0.0, LN2, math.log(5)]).expand(1, 2, 3)
    out = token_logprobs(logits, torch.tensor([[2, 0]]))
    assert out.shape == (1, 2)
    assert torch.allclose(out, torch.tensor([[math.log(5 / 8), math.log(1 / 8)]]))


def test_token_logprobs_half_precision_is_upcast():
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(1))
    full = token_logprobs(logits, tokens)
    half = token_logprobs(logits.bfloat16(), tokens)
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, atol=0.05)


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_chunked_equals_full_values_and_gradients(chunk_size):
    """The chunked form computes the same numbers as token_logprobs(hidden @ Wᵀ + b) / τ, and, through the
    checkpointed chunks, the same gradients for hidden, W and b. B·T = 10, so 3 leaves a ragged last chunk."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    weight = torch.randn(11, 8, generator=g, requires_grad=True)
    bias = torch.randn(11, generator=g, requires_grad=True)
    tokens = torch.randint(0, 11, (2, 5), generator=g)

    full = token_logprobs((hidden @ weight.T + bias) / 0.7, tokens)
    full.sum().backward()
    expected_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None

    chunked = chunked_token_logprobs(
        hidden, weight, tokens, chunk_size=chunk_size, bias=bias, temperature=0.7
    )
    assert torch.allclose(chunked, full, atol=1e-5)
    chunked.sum().backward()
    for t, expected in zip((hidden, weight, bias), expected_grads, strict=True):
        assert torch.allclose(t.grad, expected, atol=1e-5)

    with torch.no_grad():
        assert torch.allclose(
            chunked_token_logprobs(hidden, weight, tokens, chunk_size),
            token_logprobs(hidden @ weight.T, tokens),
            atol=1e-5,
        )


# --- KL ----------------------------------------------------------------------------------------------------


def test_kl_estimators_hand_values():
    """π(y) = 1/2, π_ref(y) = 1/4, so r = logπ − logπ_ref = ln 2:
    k1 = ln 2; k2 = ½·ln²2; k3 = exp(−ln 2) − (−ln 2) − 1 = ln 2 − ½."""
    lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert math.isclose(kl_estimate(lp, ref, "k1").item(), LN2, rel_tol=1e-6)
    assert math.isclose(kl_estimate(lp, ref, "k2").item(), 0.5 * LN2**2, rel_tol=1e-6)
    assert math.isclose(kl_estimate(lp, ref, "k3").item(), LN2 - 0.5, rel_tol=1e-6)
    with pytest.raises(ValueError):
        kl_estimate(lp, ref, "k4")


def test_k1_and_k3_are_unbiased():
    """Over the vocabulary, E_π[k] = Σ_v π(v)·k(v). For k1 that is KL(π‖π_ref) by definition; for k3,
    Σ π·(π_ref/π − log(π_ref/π) − 1) = Σ π_ref + KL − Σ π = KL. With π = (½, ½), π_ref = (¼, ¾):
    KL = ½·ln 2 + ½·ln(2/3) = ½·ln(4/3)."""
    pi, ref = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    kl = 0.5 * math.log(4 / 3)
    for kind in ("k1", "k3"):
        expectation = (pi * kl_estimate(pi.log(), ref.log(), kind)).sum().item()
        assert math.isclose(expectation, kl, rel_tol=1e-6), kind


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-40, 0), st.floats(-40, 0)), min_size=1, max_size=20))
def test_k3_is_never_negative(pairs):
    """k3 = e^x − x − 1 with x = logπ_ref − logπ, and e^x ≥ 1 + x for all real x."""
    lp = torch.tensor([[a for a, _ in pairs]])
    ref = torch.tensor([[b for _, b in pairs]])
    assert (kl_estimate(lp, ref, "k3") >= 0).all()


def test_token_kl_hand_value_and_mask():
    """Position 0: π = (½, ½), π_ref = (¼, ¾) → KL = ½·ln(4/3) (see above); position 1 is masked → 0.
    Logits are log-probs plus an arbitrary per-position constant, which softmax removes."""
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]])) + 3.0
    ref_logits = torch.log(torch.tensor([[[0.25, 0.75], [0.1, 0.9]]])) - 1.0
    out = token_kl(logits, ref_logits, torch.tensor([[1, 0]]))
    assert torch.allclose(out, torch.tensor([[0.5 * math.log(4 / 3), 0.0]]), atol=1e-6)


def test_kl_shaped_rewards_left_and_right_padding():
    """β = 0.1, kl = 1 everywhere. Row 0 (prompt, 2 response tokens, right pad): (0, −0.1, −0.1 + 2, 0).
    Row 1 (left pad, prompt, 2 response tokens): (0, 0, −0.1, −0.1 + 5)."""
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    out = kl_shaped_rewards(torch.tensor([2.0, 5.0]), torch.ones(2, 4), mask, beta=0.1)
    expected = torch.tensor([[0.0, -0.1, 1.9, 0.0], [0.0, 0.0, -0.1, 4.9]])
    assert torch.allclose(out, expected)


def test_kl_shaped_rewards_empty_row_raises():
    with pytest.raises(ValueError):
        kl_shaped_rewards(torch.tensor([1.0]), torch.zeros(1, 3), torch.zeros(1, 3), beta=0.1)


# --- PPO ------------------------------------------------------------------------------------------


def test_ppo_clip_two_tokens():
    """ε = 0.2, both tokens with ratio ρ = 1.5 (log ρ = ln 1.5), plus a masked third token.
    Token 1, A = +1: −min(1.5, 1.2) = −1.2, the clipped term binds → no gradient.
    Token 2, A = −1: −min(−1.5, −1.2) = 1.5, unclipped (pessimistic bound) → d/dlogπ (−Aρ) = ρ = 1.5.
    Loss = (−1.2 + 1.5) / 2 = 0.15; gradient (0, 1.5/2 = 0.75, 0); clipfrac ½; ratio_mean 1.5;
    approx_kl = ½·ln²1.5."""
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    logprobs = (old + torch.tensor([[math.log(1.5), math.log(1.5), 5.0]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, m = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    assert math.isclose(loss.item(), 0.15, rel_tol=1e-5)
    loss.backward()
    assert torch.allclose(logprobs.grad, torch.tensor([[0.0, 0.75, 0.0]]))
    assert math.isclose(m["clipfrac"].item(), 0.5)
    assert math.isclose(m["ratio_mean"].item(), 1.5, rel_tol=1e-6)
    assert math.isclose(m["approx_kl"].item(), 0.5 * math.log(1.5) ** 2, rel_tol=1e-5)


def test_ppo_num_tokens():
    """On-policy (ρ = 1), A = (1, 3): loss = −mean(A) = −2 locally; divided by num_tokens = 4: −4/4 = −1."""
    lp = torch.zeros(1, 2)
    adv, mask = torch.tensor([[1.0, 3.0]]), torch.ones(1, 2)
    assert math.isclose(ppo_policy_loss(lp, lp, adv, mask, 0.2)[0].item(), -2.0)
    loss, m = ppo_policy_loss(lp, lp, adv, mask, 0.2, num_tokens=4)
    assert math.isclose(loss.item(), -1.0)
    # metrics stay local means (ratio 1 on both tokens), whatever the loss divides by
    assert math.isclose(m["ratio_mean"].item(), 1.0)


def test_value_loss_clipping():
    """ε = 0.2, V_old = 0, V = 1 → V_clip = 0.2.
    Token 1, R = 0.5: (1 − 0.5)² = 0.25 vs (0.2 − 0.5)² = 0.09 → 0.25.
    Token 2, R = 2: (1 − 2)² = 1 vs (0.2 − 2)² = 3.24 → 3.24 (clipped).  Token 3 masked.
    Loss = ½·(0.25 + 3.24) / 2 = 0.8725; value_clipfrac ½; value_mse (0.25 + 1) / 2 = 0.625."""
    values = torch.tensor([[1.0, 1.0, 50.0]])
    loss, m = value_loss(
        values, torch.zeros(1, 3), torch.tensor([[0.5, 2.0, -50.0]]), torch.tensor([[1, 1, 0]]), 0.2
    )
    assert math.isclose(loss.item(), 0.8725, rel_tol=1e-6)
    assert math.isclose(m["value_clipfrac"].item(), 0.5)
    assert math.isclose(m["value_mse"].item(), 0.625, rel_tol=1e-6)


# --- GRPO -----------------------------------------------------------------------------------------


def _grpo_batch():
    """On-policy (ρ = 1), β = 0: the per-token loss is −A. Row 0: A = 1 on 2 tokens; row 1: A = −2 on 3."""
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return lp, torch.tensor([1.0, -2.0]), mask


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        ("sequence_mean", 0.5),  # per-sequence means (−1, 2), averaged: ½
        ("token_mean", 0.8),  # (−1 −1 + 2 + 2 + 2) / 5 tokens
        ("constant_norm", 0.4),  # the same sum 4 / (B·max_tokens = 2·5)
    ],
)
def test_grpo_aggregations(aggregation, expected):
    lp, adv, mask = _grpo_batch()
    loss, _ = grpo_loss(lp, lp, None, adv, mask, 0.0, 0.2, 0.2, aggregation, max_tokens=5)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_grpo_kl_penalty():
    """A = 0, ρ = 1, logπ − logπ_ref = ln 2 everywhere: per-token loss = β·k3 = 0.1·(ln 2 − ½) for each
    aggregation with the mask above (every mean of a constant is that constant; constant_norm with
    max_tokens = 3 gives 0.1·(ln 2 − ½)·5/6)."""
    lp, _, mask = _grpo_batch()
    ref = lp - LN2
    k3 = LN2 - 0.5
    for aggregation, expected in [
        ("sequence_mean", 0.1 * k3),
        ("token_mean", 0.1 * k3),
        ("constant_norm", 0.1 * k3 * 5 / 6),
    ]:
        loss, m = grpo_loss(lp, lp, ref, torch.zeros(2), mask, 0.1, 0.2, 0.2, aggregation, max_tokens=3)
        assert math.isclose(loss.item(), expected, rel_tol=1e-5), aggregation
        assert math.isclose(m["ref_kl"].item(), k3, rel_tol=1e-5)


def test_grpo_clip_higher():
    """eps_low = 0.2, eps_high = 0.28 (DAPO). Row 0: ρ = 1.5, A = 1 → −min(1.5, 1.28) = −1.28.
    Row 1: ρ = 0.5, A = −1 → −min(−0.5, −0.8) = 0.8. token_mean over one token each:
    (−1.28 + 0.8)/2 = −0.24."""
    old = torch.zeros(2, 1)
    lp = torch.log(torch.tensor([[1.5], [0.5]]))
    loss, m = grpo_loss(
        lp, old, None, torch.tensor([1.0, -1.0]), torch.ones(2, 1), 0.0, 0.2, 0.28, "token_mean"
    )
    assert math.isclose(loss.item(), -0.24, rel_tol=1e-5)
    assert m["clipfrac"].item() == 1.0


def test_grpo_bad_arguments_raise():
    lp, adv, mask = _grpo_batch()
    with pytest.raises(ValueError):
        grpo_loss(lp, lp, None, adv, mask, 0.1, 0.2, 0.2, "token_mean")  # β > 0 needs ref
    with pytest.raises(ValueError):
        grpo_loss(lp, lp, None, adv, mask, 0.0, 0.2, 0.2, "constant_norm")  # needs max_tokens
    with pytest.raises(ValueError):
        grpo_loss(lp, lp, None, adv, mask, 0.0, 0.2, 0.2, "median")
