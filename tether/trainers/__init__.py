"""Training stages: each is data → loss (from tether.losses) → optimizer, on the shared loop in base.py."""
