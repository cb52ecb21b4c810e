import math

import pytest
import torch

from tether.losses.kl import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_changes():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 512)
    assert ctl.value == 0.05


@pytest.mark.parametrize(
    "kl, expected",
    [
        # e = clip(6.6/6 − 1) = 0.1 → β = 0.1·(1 + 0.1·256/10000) = 0.1·1.00256
        (6.6, 0.100256),
        # e = 9/6 − 1 = 0.5, clipped to 0.2 → β = 0.1·(1 + 0.2·0.0256) = 0.100512
        (9.0, 0.100512),
        # e = 0/6 − 1 = −1, clipped to −0.2 → β = 0.1·(1 − 0.00512) = 0.099488
        (0.0, 0.099488),
        # on target: e = 0 → β unchanged
        (6.0, 0.1),
    ],
)
def test_adaptive_controller_one_update(kl, expected):
    """init β = 0.1, target 6 nats, horizon 10000, one update after n_steps = 256 samples:
    β ← β·(1 + clip(KL/6 − 1, −0.2, 0.2)·256/10000)."""
    ctl = AdaptiveKLController(0.1, target_kl=6.0, horizon=10000)
    ctl.update(kl, 256)
    assert math.isclose(ctl.value, expected, rel_tol=1e-12)


def test_adaptive_controller_accepts_tensor_kl_and_compounds():
    """Two updates at the clip compound: 1.0·(1 + 0.2·0.5)² = 1.21 (horizon 2, n_steps 1)."""
    ctl = AdaptiveKLController(1.0, target_kl=1.0, horizon=2)
    ctl.update(torch.tensor(5.0), 1)
    ctl.update(torch.tensor(5.0), 1)
    assert math.isclose(ctl.value, 1.21, rel_tol=1e-12)


def test_state_dict_round_trip():
    a = AdaptiveKLController(0.1, 6.0, 10000)
    a.update(9.0, 256)
    b = AdaptiveKLController(0.1, 6.0, 10000)
    b.load_state_dict(a.state_dict())
    assert b.value == a.value


@pytest.mark.parametrize("args", [(-0.1, 6.0, 100), (0.1, 0.0, 100), (0.1, 6.0, 0)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        AdaptiveKLController(*args)
