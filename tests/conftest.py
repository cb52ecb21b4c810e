"""Suite-wide test settings."""

import pytest
import torch

# Tiny models on 2 cores: with one intra-op thread, small ops skip the thread hand-off that made them up to
# ~30x slower on a busy machine (measured on the rollout tests: 1.2 s → 0.04 s).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Every test, and every process a test starts, keeps tether's cache ($TETHER_CACHE: pulled models,
    cached evaluation samples) in a folder of the session's own, never in the user's ~/.cache/tether."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TETHER_CACHE", str(tmp_path_factory.mktemp("tether-cache")))
        yield
