"""Suite-wide test settings."""

import torch

# Tiny models on 2 cores: with one intra-op thread, small ops skip the thread hand-off that made them up to
# ~30x slower on a busy machine (measured on the rollout tests: 1.2 s → 0.04 s).
torch.set_num_threads(1)
