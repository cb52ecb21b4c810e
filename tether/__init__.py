"""tether: reinforcement learning from human feedback, correct to the math and honest about results."""

__version__ = "0.1.0"
