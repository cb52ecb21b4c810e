"""Operational instruments: measurements that say whether an RLHF run worked.

from tether.instruments import wilson_interval, win_rate, GoldJudge, kl_from_base, rm_accuracy
"""

from tether.instruments.judges import GoldJudge, Judge, ScoreJudge
from tether.instruments.kl import kl_from_base, sequence_kl
from tether.instruments.rm_accuracy import calibration_error, rm_accuracy
from tether.instruments.stats import mean_stderr, wilson_interval
from tether.instruments.win_rate import win_rate

__all__ = [
    "GoldJudge",
    "Judge",
    "ScoreJudge",
    "calibration_error",
    "kl_from_base",
    "mean_stderr",
    "rm_accuracy",
    "sequence_kl",
    "wilson_interval",
    "win_rate",
]
