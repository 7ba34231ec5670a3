"""Experiment tracking: W&B logging (offline by default), reading offline runs back from their
files, local plots and W&B dashboards of accuracy and throughput."""

from typing import Any

from .metrics import define_wandb_metrics
from .reader import Run, load_run
from .wandb_logger import (
    OfflineFirstWandbLogger,
    WandbLogger,
    find_wandb_credentials,
    resolve_wandb_mode,
    run_context,
)

__all__ = [
    "OfflineFirstWandbLogger",
    "Run",
    "WandbLogger",
    "define_wandb_metrics",
    "find_wandb_credentials",
    "load_run",
    "resolve_wandb_mode",
    "run_context",
]


def __getattr__(name: str) -> Any:
    # The config saver is a callback (shufflenet_pl.callbacks), which imports this package: it is
    # imported from there on first use.
    if name == "RunConfigSaver":
        from ..callbacks.run_config import RunConfigSaver

        return RunConfigSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
