import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.losses import DPO_LOGPROB_REDUCTION, bradley_terry_loss, dpo_loss
from tether.losses.preference import DPO_LOSSES

LOG2 = math.log(2)
LN3 = math.log(3)


# --- Bradley-Terry -----------------------------------------------------------------------------------------


def test_bt_equal_rewards_is_log2():
    """r_w = r_l → −log σ(0) = log 2 for every pair; accuracy 0 (ties are not wins); margin 0."""
    r = torch.tensor([0.3, -1.0, 2.0])
    loss, metrics = bradley_terry_loss(r, r.clone())
    assert math.isclose(loss.item(), LOG2, rel_tol=1e-6)
    assert metrics["accuracy"].item() == 0 and metrics["margin"].item() == 0


def test_bt_hand_values_and_margin():
    """r_w − r_l = ln 3: σ(ln 3) = 3/4 → loss log(4/3). With margin ln 3, Δ = 0 → log 2.
    Pair 2 has r_w − r_l = −ln 3: loss log 4; mean over the two pairs = (log(4/3) + log 4) / 2.
    Accuracy 1/2, mean margin 0."""
    chosen, rejected = torch.tensor([LN3, 0.0]), torch.tensor([0.0, LN3])
    loss, metrics = bradley_terry_loss(chosen[:1], rejected[:1])
    assert math.isclose(loss.item(), math.log(4 / 3), rel_tol=1e-6)
    loss, _ = bradley_terry_loss(chosen[:1], rejected[:1], margin=torch.tensor([LN3]))
    assert math.isclose(loss.item(), LOG2, rel_tol=1e-6)
    loss, metrics = bradley_terry_loss(chosen, rejected)
    assert math.isclose(loss.item(), (math.log(4 / 3) + math.log(4)) / 2, rel_tol=1e-6)
    assert metrics["accuracy"].item() == 0.5 and abs(metrics["margin"].item()) < 1e-7


def test_bt_soft_labels():
    """Δ = ln 3, p = 1/2: ½·[ℓ(ln 3) + ℓ(−ln 3)] = ½·[log(4/3) + log 4] = ½·log(16/3).
    p = 1 gives the hard-label loss."""
    chosen, rejected = torch.tensor([LN3]), torch.tensor([0.0])
    loss, _ = bradley_terry_loss(chosen, rejected, labels=torch.tensor([0.5]))
    assert math.isclose(loss.item(), 0.5 * math.log(16 / 3), rel_tol=1e-6)
    hard, _ = bradley_terry_loss(chosen, rejected, labels=torch.tensor([1.0]))
    assert math.isclose(hard.item(), math.log(4 / 3), rel_tol=1e-6)


def test_bt_center_coef():
    """r_w = r_l = 1: log 2 + c·(1 + 1)² = log 2 + 4c; c = 0.5 → log 2 + 2."""
    loss, _ = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]), center_coef=0.5)
    assert math.isclose(loss.item(), LOG2 + 2, rel_tol=1e-6)


# --- DPO ---------------------------------------------------------------------------------------------------


def _logps(h_chosen, h_rejected, batch=1):
    """Policy and reference log-probs with (logπ − logπ_ref)(y_w) = h_chosen and (y_l) = h_rejected."""
    ref_c, ref_r = torch.full((batch,), -2.0), torch.full((batch,), -3.0)
    return ref_c + h_chosen, ref_r + h_rejected, ref_c, ref_r


@pytest.mark.parametrize(
    "loss_type, beta, expected",
    [
        ("sigmoid", 0.1, LOG2),  # ℓ(0) = log 2
        ("hinge", 0.1, 1.0),  # relu(1 − 0) = 1
        ("ipo", 0.5, 1.0),  # (0 − 1/(2·0.5))² = 1
    ],
)
def test_dpo_at_reference(loss_type, beta, expected):
    """π = π_ref → h = 0 for every pair; the loss is the per-pair value at h = 0. Implicit rewards all 0."""
    loss, metrics = dpo_loss(*_logps(0.0, 0.0, batch=3), beta=beta, loss_type=loss_type)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert metrics["margin"].item() == 0 and metrics["accuracy"].item() == 0


def test_dpo_robust_at_reference_is_log2():
    """h = 0: [(1 − ε)·log 2 − ε·log 2] / (1 − 2ε) = log 2 for any ε < ½."""
    loss, _ = dpo_loss(*_logps(0.0, 0.0), beta=0.1, loss_type="robust", label_smoothing=0.3)
    assert math.isclose(loss.item(), LOG2, rel_tol=1e-6)


# h = (+1) − (−1) = 2 below: the policy raised y_w by 1 nat and lowered y_l by 1 nat relative to π_ref.
# With β = ln(3)/2, βh = ln 3, ℓ(ln 3) = log(4/3) and ℓ(−ln 3) = log 4.
BETA = LN3 / 2


@pytest.mark.parametrize(
    "loss_type, beta, smoothing, expected",
    [
        ("sigmoid", BETA, 0.0, math.log(4 / 3)),
        # conservative DPO, p = 0.75: 0.75·log(4/3) + 0.25·log 4
        ("sigmoid", BETA, 0.25, 0.75 * math.log(4 / 3) + 0.25 * math.log(4)),
        # robust DPO, ε = 0.25: [0.75·log(4/3) − 0.25·log 4] / 0.5
        ("robust", BETA, 0.25, (0.75 * math.log(4 / 3) - 0.25 * math.log(4)) / 0.5),
        ("hinge", 0.25, 0.0, 0.5),  # relu(1 − 0.25·2)
        ("hinge", 1.0, 0.0, 0.0),  # relu(1 − 2)
        ("ipo", 0.25, 0.0, 0.0),  # (2 − 1/0.5)²
        ("ipo", 1.0, 0.0, 2.25),  # (2 − 0.5)²
    ],
)
def test_dpo_hand_values(loss_type, beta, smoothing, expected):
    loss, _ = dpo_loss(*_logps(1.0, -1.0), beta=beta, loss_type=loss_type, label_smoothing=smoothing)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6, abs_tol=1e-7)


def test_dpo_metrics_are_implicit_rewards():
    """β·(logπ − logπ_ref): chosen β·1, rejected −β, margin 2β, accuracy 1."""
    _, m = dpo_loss(*_logps(1.0, -1.0), beta=0.1)
    assert math.isclose(m["chosen_reward"].item(), 0.1, rel_tol=1e-5)
    assert math.isclose(m["rejected_reward"].item(), -0.1, rel_tol=1e-5)
    assert math.isclose(m["margin"].item(), 0.2, rel_tol=1e-5)
    assert m["accuracy"].item() == 1.0


def test_dpo_gradient_at_reference():
    """d ℓ(βh)/dh = −β·σ(−βh) = −β/2 at h = 0, and dh/d logπ(y_w) = 1, dh/d logπ(y_l) = −1; the batch
    mean over B = 2 halves it: gradient −β/4 on the chosen log-probs, +β/4 on the rejected ones."""
    pc, pr, rc, rr = _logps(0.0, 0.0, batch=2)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    dpo_loss(pc, pr, rc, rr, beta=0.2)[0].backward()
    assert torch.allclose(pc.grad, torch.full((2,), -0.05))
    assert torch.allclose(pr.grad, torch.full((2,), 0.05))


def test_dpo_soft_labels_match_label_smoothing():
    """labels p = 0.75 per pair is the same loss as label_smoothing ε = 0.25."""
    args = _logps(1.0, -1.0, batch=2)
    a, _ = dpo_loss(*args, beta=BETA, labels=torch.tensor([0.75, 0.75]))
    b, _ = dpo_loss(*args, beta=BETA, label_smoothing=0.25)
    assert math.isclose(a.item(), b.item(), rel_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(h_c=st.floats(-5, 5), h_r=st.floats(-5, 5), p=st.floats(0, 1), beta=st.floats(0.01, 2.0))
def test_dpo_swapping_pair_and_label_gives_same_loss(h_c, h_r, p, beta):
    """Swapping chosen and rejected negates h; p·ℓ(βh) + (1 − p)·ℓ(−βh) is unchanged if also p → 1 − p."""
    pc, pr, rc, rr = _logps(h_c, h_r)
    a, _ = dpo_loss(pc, pr, rc, rr, beta=beta, labels=torch.tensor([p]))
    b, _ = dpo_loss(pr, pc, rr, rc, beta=beta, labels=torch.tensor([1 - p]))
    assert math.isclose(a.item(), b.item(), rel_tol=1e-5, abs_tol=1e-6)


def test_logprob_reduction_table_covers_every_loss():
    assert set(DPO_LOGPROB_REDUCTION) == set(DPO_LOSSES)
    assert DPO_LOGPROB_REDUCTION["ipo"] == "mean" and DPO_LOGPROB_REDUCTION["sigmoid"] == "sum"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss_type": "nope"},
        {"loss_type": "hinge", "label_smoothing": 0.1},
        {"loss_type": "robust", "labels": torch.tensor([0.9])},
        {"loss_type": "robust", "label_smoothing": 0.5},
        {"beta": 0.0},
    ],
)
def test_dpo_bad_arguments_raise(kwargs):
    kwargs = {"beta": 0.1, **kwargs}
    with pytest.raises(ValueError):
        dpo_loss(*_logps(1.0, -1.0), **kwargs)
