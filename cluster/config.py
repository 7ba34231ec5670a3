"""The job's resolved config: ``shufflenet-pl fit`` parses it in-process, the launcher puts the job's
size, folder, checkpoints and seed into it, checks its batch against the processes, and names the job
folder and its ``launch.json`` record."""

import argparse
import contextlib
import io
import os
import secrets
import shlex
import string
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from .errors import LaunchError, say
from .resources import Resources

__all__ = [
    "DEFAULT_CHECKPOINT_MINUTES",
    "DEFAULT_SEED",
    "apply_job_settings",
    "check_batch",
    "launch_record",
    "new_folder",
    "resolve_config",
    "say_seed",
    "validate_config_file",
    "wandb_run_id",
    "write_config",
]

#: Minutes between the periodic last.ckpt of a job whose trainer config sets no TimedCheckpoint: the
#: callback's default (shufflenet_pl.callbacks.DEFAULT_EVERY_MINUTES, stretched where saving would cost
#: over 1 % of training; not imported here, so that the launcher starts without Lightning).
DEFAULT_CHECKPOINT_MINUTES = 2.0
#: The seed of a job whose config gives none (or ``seed_everything: true``): the same command trains
#: the same weights on the same machine; ``--seed_everything N`` picks another.
DEFAULT_SEED = 0


def resolve_config(training_args: List[str]) -> Dict[str, Any]:
    """``shufflenet-pl fit <args> --print_config``, in-process: parsed and type-checked, nothing built."""
    from shufflenet_pl.cli import build_cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "LightningCLI's args parameter")
            build_cli(["fit", *training_args, "--print_config"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            # jsonargparse prints the whole usage first; the error is what the user needs.
            lines = err.getvalue().splitlines()
            errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
            raise LaunchError(
                errors[0] if errors else " ".join(lines[-1:]) or "the training config does not parse"
            ) from None
    config = yaml.safe_load(out.getvalue())
    if not isinstance(config, dict) or "trainer" not in config:
        raise LaunchError("could not resolve the training config (is shufflenet_pl installed?)")
    return config


def _as_list(value: Any) -> List[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def apply_job_settings(config: Dict[str, Any], resources: Resources, executor: str, folder: Path) -> Dict[str, Any]:
    """Put the job's resources and folder into the resolved config.

    The Trainer's size comes from the resources; checkpoints go to ``<folder>/checkpoints`` with a
    ``last.ckpt`` (saved also at preemption by ``PreemptionCheckpoint`` and every few minutes by
    ``TimedCheckpoint``); loggers write under the
    folder; a config without a seed (or with ``seed_everything: true``) gets :data:`DEFAULT_SEED`, so
    that every rank, every restart and every run of the same command draws the same one.
    """
    trainer = config.setdefault("trainer", {})
    trainer.update(resources.trainer_settings(executor))
    trainer["default_root_dir"] = str(folder)
    checkpoints = str(folder / "checkpoints")
    callbacks = _as_list(trainer.get("callbacks"))
    has_model_checkpoint = False
    for callback in callbacks:
        # Lightning's ModelCheckpoint, ours (VerifiedModelCheckpoint) and its other name in older job
        # configs (shufflenet_pl.callbacks.ModelCheckpoint) all end so.
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            init = callback.setdefault("init_args", {})
            init["dirpath"] = checkpoints
            init["save_last"] = init.get("save_last") or True
            # A requeued run must overwrite last.ckpt, not write last-v1.ckpt beside it.
            init["enable_version_counter"] = False
            has_model_checkpoint = True
    if not has_model_checkpoint and trainer.get("enable_checkpointing") is not False:
        callbacks.append(
            {
                "class_path": "shufflenet_pl.callbacks.VerifiedModelCheckpoint",
                "init_args": {"dirpath": checkpoints, "save_last": True, "enable_version_counter": False},
            }
        )
    timed = [c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).endswith("TimedCheckpoint")]
    for callback in timed:
        callback.setdefault("init_args", {})["dirpath"] = checkpoints
    if not timed and trainer.get("enable_checkpointing") is not False:
        # A lost node or a crash redoes at most this much (set TimedCheckpoint in the trainer config to change).
        callbacks.append(
            {
                "class_path": "shufflenet_pl.callbacks.TimedCheckpoint",
                "init_args": {"dirpath": checkpoints},
            }
        )
    callbacks.append(
        {"class_path": "shufflenet_pl.callbacks.PreemptionCheckpoint", "init_args": {"dirpath": checkpoints}}
    )
    trainer["callbacks"] = callbacks
    for logger in _as_list(trainer.get("logger")):
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(folder)
    if config.get("seed_everything") is True or config.get("seed_everything") is None:
        config["seed_everything"] = DEFAULT_SEED
    return config


def say_seed(seed: Any, given: Any) -> None:
    if seed is False:
        say("seed: none (seed_everything: false): runs differ from each other")
    elif given is True or given is None:
        say(f"seed {seed} (the default; --seed_everything N for another)")
    else:
        say(f"seed {seed} (set by the config or the command line)")


def write_config(config: Dict[str, Any], path: Path) -> None:
    from shufflenet_pl.files import write_text

    write_text(
        path,
        "# Resolved by launch.py; the job runs: shufflenet-pl fit --config <this file>\n"
        + yaml.safe_dump(config, sort_keys=False),
    )


#: Below this many images per process, BatchNorm normalises with the statistics of a handful of images.
SMALL_PER_PROCESS_BATCH = 8


def check_batch(config: Dict[str, Any], resources: Resources) -> None:
    """Refuse a global batch that does not divide over the processes (before any process starts);
    warn when each process would get only a few images."""
    data = config.get("data")
    init = (data.get("init_args") or {}) if isinstance(data, dict) else {}
    batch = init.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool):
        return
    from shufflenet_pl.data.common import per_device_batch_size

    processes = resources.processes
    per_process = per_device_batch_size(batch, processes, resources.nodes)  # InputError: main() prints it
    if per_process < SMALL_PER_PROCESS_BATCH:
        say(
            f"warning: data.batch_size={batch} (global) over {processes} processes is {per_process} "
            f"image(s) per process: BatchNorm statistics over so few images are noise; use "
            f"--data.init_args.batch_size {SMALL_PER_PROCESS_BATCH * processes} or more (or fewer processes)"
        )


def new_folder(root: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{i}" for i in range(1, 100)]:
        folder = root / f"{name}-{stamp}{suffix}"
        try:
            folder.mkdir(parents=True)
            return folder.resolve()
        except FileExistsError:
            continue
    raise LaunchError(f"could not create a job folder under {root}")


def wandb_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def launch_record(
    args: argparse.Namespace,
    resources: Resources,
    executor: str,
    folder: Path,
    choices: Sequence[Tuple[str, str]],
    run_id: str,
) -> Dict[str, Any]:
    return {
        "folder": str(folder),
        "config": str(folder / "config.yaml"),
        "executor": executor,
        "job_id": None,
        "array_index": None,
        "sweep": {k: v for k, v in choices},
        "nodes": resources.nodes,
        "gpus_per_node": resources.gpus,
        "processes": resources.processes,
        "accelerator": "cpu" if resources.cpu else "gpu",
        "partition": resources.partition,
        "account": resources.account,
        "qos": resources.qos,
        "time": resources.time,
        "resources": resources.as_dict(),
        "wandb_run_id": run_id,
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "cwd": os.getcwd(),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "attempts": [],
    }


def validate_config_file(path: Path) -> None:
    resolve_config(["--config", str(path)])  # the job parses exactly this; fail now, not after queueing
