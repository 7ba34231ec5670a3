"""Experiment tracking: W&B logging (offline by default), reading offline runs back from their
files, local plots and W&B dashboards of accuracy and throughput."""

from .metrics import define_wandb_metrics
from .reader import Run, load_run
from .wandb_logger import RunConfigSaver, WandbLogger, find_wandb_credentials, resolve_wandb_mode, run_context

__all__ = [
    "Run",
    "RunConfigSaver",
    "WandbLogger",
    "define_wandb_metrics",
    "find_wandb_credentials",
    "load_run",
    "resolve_wandb_mode",
    "run_context",
]
