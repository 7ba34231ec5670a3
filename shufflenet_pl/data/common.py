"""Small helpers that the converter, the demo data and both datamodules share (one home, no import
circles): ImageNet normalisation constants, the global-batch split, crop-argument checks, worker counts
and private temporary paths."""

import os
import signal
import socket
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import InputError  # defined with the CLI; re-exported for code that imports it from here

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputError",
    "check_crop_args",
    "default_num_workers",
    "usable_cpus",
    "ignore_sigterm",
    "normalize_on_device",
    "per_device_batch_size",
    "private_temporary_path",
]


IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def per_device_batch_size(global_batch_size: int, world_size: int, num_nodes: Optional[int] = None) -> int:
    """Split the global batch over the ranks, refusing a split that would change the recipe.

    The one check of the split: the datamodules (in every rank), the CLI (before DDP starts the other
    processes) and the launcher (before anything is submitted) all call it.

    Args:
        global_batch_size: ``data.batch_size``, the batch of the whole job.
        world_size: processes of the job.
        num_nodes: when given, the refusal also says how the processes are laid out over nodes.

    Raises:
        InputError: the batch is below 1 or does not divide over ``world_size``.
    """
    if global_batch_size < 1:
        raise InputError(f"data.batch_size must be >= 1, got {global_batch_size}; give a positive batch size")
    if global_batch_size % world_size:
        layout = f" ({num_nodes} node(s) x {world_size // num_nodes} device(s))" if num_nodes else ""
        raise InputError(
            f"data.batch_size={global_batch_size} (global) does not divide over {world_size} processes{layout}; "
            f"use a multiple of {world_size}, e.g. {max(1, global_batch_size // world_size) * world_size}"
        )
    return global_batch_size // world_size


def check_crop_args(train_res: int, val_res: int, val_crop_ratio: float, crop_scale: Sequence[float]) -> None:
    """The crop arguments both datamodules share; a bad one raises ``ValueError`` naming its key."""
    if not 0 < val_crop_ratio <= 1:
        raise ValueError(f"data.val_crop_ratio must be in (0, 1], got {val_crop_ratio}")
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"data.crop_scale must be 0 < min <= max <= 1, got {crop_scale}")
    for key, value in (("train_res", train_res), ("val_res", val_res)):
        if value < 8:
            raise ValueError(f"data.{key} must be >= 8 pixels, got {value}")


def normalize_on_device(images: Tensor) -> Tensor:
    """uint8 ``(N, 3, H, W)`` -> float normalised with ImageNet mean/std (on the images' device)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def usable_cpus() -> int:
    """CPUs this process may use: the job's CPUs per task under SLURM, else the process's CPU affinity
    (which also reflects ``taskset`` and container limits), not the machine's core count."""
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm_cpus.isdigit() and int(slurm_cpus) > 0:
        return int(slurm_cpus)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """Loader workers per process: every usable CPU but one, which the main thread needs to run the
    training step; on two CPUs or fewer, all of them (the step then waits for data most of the time)."""
    cpus = usable_cpus()
    return cpus - 1 if cpus > 2 else cpus


def ignore_sigterm(worker_id: int) -> None:
    """``worker_init_fn`` of loader worker processes: SLURM sends SIGTERM to every process of a job
    (``scancel``, preemption) and a worker killed by it takes the training step down with it before
    the main process could save a checkpoint. The main process ends its workers itself; they also
    exit when it dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def private_temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other process writes: named by host and process, since
    ranks on several nodes (whose process ids can coincide) may prepare the same shared folder."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
