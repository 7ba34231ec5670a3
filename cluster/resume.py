"""``launch.py --resume FOLDER``: the job of a folder submitted again, after checking that it is a job
folder, has not finished and runs nowhere."""

import argparse
import subprocess
from pathlib import Path
from typing import Optional

from .errors import LaunchError, say
from .job import TrainingJob, read_json
from .resources import Resources, check_partition, slurm_available
from .submit import FALLBACK_TIME_MIN, check_local, run_local, submit_slurm

__all__ = ["resume"]


def resume(args: argparse.Namespace) -> int:
    """``--resume FOLDER``: submit the job of a folder again, with its recorded resources, executor and
    W&B run id; it continues from the newest complete checkpoint (``TrainingJob`` finds it)."""
    folder = Path(args.resume).resolve()
    record = read_json(folder / "launch.json")
    if not record or not (folder / "config.yaml").is_file():
        raise LaunchError(
            f"--resume {args.resume}: not a job folder (it needs launch.json and config.yaml, as launch.py writes them)"
        )
    if (folder / "result.json").is_file():
        raise LaunchError(
            f"--resume {args.resume}: the job finished (result.json); raise trainer.max_epochs in a new job instead"
        )
    from shufflenet_pl.joblock import lock_holder

    holder = lock_holder(folder / "checkpoints")
    if holder is not None:
        raise LaunchError(
            f"--resume {args.resume}: its trainer is still running (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('started')}); wait for it or stop it first"
        )
    executor = record["executor"]
    resources = Resources(**record["resources"])
    if args.max_failures is not None:
        resources.max_failures = args.max_failures
    job = TrainingJob(str(folder), record["wandb_run_id"], executor, resources.max_failures, args.restart_from_scratch)
    checkpoint = job.resume_checkpoint()
    _check_job_config(folder, checkpoint)
    say(
        f"resuming {folder} (W&B run {record['wandb_run_id']}) "
        + (f"from {checkpoint}" if checkpoint else "from the beginning: it has no complete checkpoint yet")
    )
    if executor == "local":
        return run_local(check_local(resources), [(folder, job)])
    why_not = slurm_available()
    if why_not:
        raise LaunchError(f"--resume {args.resume}: the job ran on SLURM, which is not reachable: {why_not}")
    state = _slurm_state(str(record.get("job_id") or ""))
    if state in _ACTIVE_STATES:
        raise LaunchError(
            f"--resume {args.resume}: its job {record['job_id']} is still {state}; it continues by "
            f"itself (scancel {record['job_id']} first to restart it)"
        )
    time_min = resources.time_minutes or check_partition(resources).get("time_limit_min") or FALLBACK_TIME_MIN
    return submit_slurm(args, resources, folder, [(folder, job)], time_min)


def _check_job_config(folder: Path, checkpoint: Optional[Path]) -> None:
    """The job's ``config.yaml`` (edited since, perhaps) gets fit's input checks, and the checkpoint it
    resumes from must fit the network it builds: a refusal here is one line, before anything is submitted."""
    import yaml

    from shufflenet_pl.input_checks import check_checkpoint_fits, check_run_config, check_yaml_file

    config_file = folder / "config.yaml"
    check_yaml_file(config_file, option="--resume")
    config = yaml.safe_load(config_file.read_text()) or {}
    check_run_config(config, "fit")
    if checkpoint is not None:
        try:
            check_checkpoint_fits(checkpoint, config)
        except ValueError as err:
            raise LaunchError(f"--resume {folder}: {err}; or edit {config_file} back") from None


#: A job in these states still runs or will: resuming it would start a second copy.
_ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD"}


def _slurm_state(job_id: str) -> str:
    """A job's state as squeue tells it; "" when squeue no longer knows the job."""
    if not job_id:
        return ""
    try:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip().split("\n")[0].strip() if result.returncode == 0 else ""
