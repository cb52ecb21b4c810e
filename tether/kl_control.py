"""The KL coefficient β of PPO's reward r − β·KL, fixed or adapted towards a target KL (Ziegler et al. 2019).

KL here is what the trainer measures per update: by the project's convention the sequence-level KL in nats
(the sum of per-token estimates over the response), averaged over the batch.
"""

from __future__ import annotations


class FixedKLController:
    """A constant β; `update` does nothing."""

    def __init__(self, beta: float):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """β adapted so that the measured KL tracks `target_kl`, by the proportional controller of
    Ziegler et al. 2019: e = clip(KL / target − 1, −0.2, 0.2), β ← β·(1 + e·n_steps / horizon).

    n_steps is the number of samples (or steps) since the last update; over `horizon` of them β can change
    by at most ±20%, which keeps the controller from chasing noise in the KL estimate.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: float):
        if not init_beta >= 0:
            raise ValueError(f"init_beta must be >= 0, got {init_beta}")
        if not target_kl > 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_beta)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """One proportional step towards the target; `current_kl` may be a float or a 0-dim tensor."""
        error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
