"""Silencing other code's output inside a block: transformers' progress bars and warnings, peft's deprecation
warning, a logger's warnings. Each restores what it changed on exit, also on an exception."""

from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def quiet_transformers(errors_only: bool = False):
    """No transformers progress bars while saving and loading inside a run (they would break tqdm's);
    `errors_only` also hides its warnings (e.g. the load report listing a head that is new on purpose)."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_peft():
    """peft asks transformers for the deprecated `is_gradient_checkpointing`: hide that FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        yield


@contextlib.contextmanager
def quiet_logger(name: str):
    """Only errors from logger `name` inside the block (e.g. no per-pair cut/skip warnings)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
