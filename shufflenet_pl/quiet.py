"""Quiet runs: a training run prints our lines and the progress, not third-party noise.

- :func:`silence_third_party_noise` drops a few messages that say nothing to a user of this project:
  Lightning's ``srun`` hint (jobs are started by ``launch.py``, which uses ``srun`` where it matters),
  its LitLogger advertisement, and torch's ``LeafSpec`` deprecation raised inside Lightning's code.
- :func:`make_trainer_quiet` swaps Lightning's default summary and progress bar for
  :class:`~shufflenet_pl.callbacks.ConciseModelSummary` and
  :class:`~shufflenet_pl.callbacks.LogFriendlyProgressBar`; callbacks a config sets itself are left
  alone. Both are importable from here too (configs may name ``shufflenet_pl.quiet.LogFriendlyProgressBar``).
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar

from .callbacks.console import ConciseModelSummary, LogFriendlyProgressBar

__all__ = ["ConciseModelSummary", "LogFriendlyProgressBar", "make_trainer_quiet", "silence_third_party_noise"]

NOISE_WARNINGS = (
    r"The `srun` command is available on your system but is not used",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
NOISE_LOG_PREFIXES = ("💡 Tip: For seamless cloud logging",)


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_LOG_PREFIXES)


def silence_third_party_noise() -> None:
    """Install the warning and logging filters (idempotent)."""
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages())


def make_trainer_quiet(trainer: Trainer) -> None:
    """Swap Lightning's default model summary and progress bar (exactly those classes) for the quiet ones."""
    for index, callback in enumerate(trainer.callbacks):
        if type(callback) is ModelSummary:
            trainer.callbacks[index] = ConciseModelSummary(max_depth=callback._max_depth)
        elif type(callback) is TQDMProgressBar:
            trainer.callbacks[index] = LogFriendlyProgressBar(
                refresh_rate=callback.refresh_rate, process_position=callback.process_position, leave=callback._leave
            )
