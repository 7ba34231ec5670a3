"""Where a job runs and how it is handed over: the executor (SLURM or this machine), submitit's
executors, the submission of one job or a job array, and the dry run."""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .args import label
from .config import apply_job_settings
from .errors import LaunchError, say
from .follow import wait_for
from .job import TrainingJob, read_json, write_json_atomic
from .resources import Resources, slurm_available
from .sbatch_script import sbatch_script

__all__ = [
    "FALLBACK_TIME_MIN",
    "check_local",
    "choose_cpus_per_task",
    "choose_executor",
    "dry_run",
    "run_local",
    "submit_slurm",
]

#: Time limit when neither --time nor the partition gives one.
FALLBACK_TIME_MIN = 24 * 60


def choose_executor(cluster: str, dry_run: bool = False, nodes: int = 1) -> Tuple[str, bool]:
    """``(executor, reachable)``: ``slurm`` or ``local``, and whether SLURM answered. A dry run of
    several nodes means SLURM; it asks the controller briefly and prints the script either way."""
    if cluster == "local":
        return "local", False
    if dry_run and nodes > 1:
        cluster = "slurm"
    if dry_run and cluster == "slurm" and shutil.which("sbatch") is None:
        say("sbatch is not on the PATH: printing the script without checking the partition")
        return "slurm", False
    why_not = slurm_available(timeout_s=5 if dry_run else 15)
    if cluster == "slurm":
        if why_not and dry_run:
            say(f"SLURM is not reachable ({why_not}): printing the script without checking the partition")
            return "slurm", False
        if why_not:
            raise LaunchError(
                f"SLURM is not reachable: {why_not}. Check that slurmctld runs and SLURM_CONF points "
                f"at its slurm.conf, or run here with --cluster local"
            )
        return "slurm", True
    if why_not is None:
        return "slurm", True
    if "not on the PATH" not in why_not:
        say(
            f"sbatch is installed but no SLURM cluster answers ({why_not}); running on this machine "
            f"(--cluster slurm to insist)"
        )
    return "local", False


def check_local(resources: Resources) -> Resources:
    if resources.nodes != 1:
        raise LaunchError(
            f"--nodes {resources.nodes}: the local executor runs on this machine only; use --nodes 1 or --cluster slurm"
        )
    if resources.cpu:
        return resources
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        say(f"no GPU here: running {resources.gpus} CPU process(es) (--gpus counts processes with --cpu)")
        resources.cpu = True
    elif available < resources.gpus:
        raise LaunchError(f"--gpus {resources.gpus}: this machine has {available} GPU(s)")
    return resources


def _slurm_executor(folder: Path, resources: Resources, time_min: int, script_only: bool = False) -> Any:
    import submitit

    kind = submitit.SlurmExecutor
    if script_only:  # a dry run prints the script where SLURM is not installed (submitit insists on srun)
        kind = type("ScriptOnlySlurmExecutor", (submitit.SlurmExecutor,), {"affinity": classmethod(lambda cls: 1)})
    executor = kind(folder=folder, max_num_timeout=resources.max_timeouts)
    executor.update_parameters(**resources.slurm_parameters(time_min))
    return executor


def _local_executor(folder: Path, resources: Resources) -> Any:
    import submitit

    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=resources.max_timeouts)
    minutes = resources.time_minutes or 365 * 24 * 60  # no limit unless asked for
    executor.update_parameters(
        tasks_per_node=resources.gpus,
        gpus_per_node=0 if resources.cpu else resources.gpus,
        timeout_min=minutes,
        signal_delay_s=min(resources.signal_delay, max(1, minutes * 60 // 2)),
    )
    return executor


def choose_cpus_per_task(resources: Resources, cpus_per_node: Optional[int]) -> Resources:
    """``--cpus-per-task`` when neither the command line nor the preset gave it: the node's CPUs
    divided by the processes per node (SLURM's own default, 1, starves the data loader)."""
    if resources.cpus_per_task is not None:
        say(f"cpus-per-task: {resources.cpus_per_task} (given)")
    elif cpus_per_node:
        resources.cpus_per_task = max(1, cpus_per_node // resources.gpus)
        say(
            f"cpus-per-task: {resources.cpus_per_task} (the node's {cpus_per_node} CPUs / {resources.gpus} "
            f"process(es) per node; --cpus-per-task to change)"
        )
    else:
        say(
            "cpus-per-task: not set (SLURM did not say how many CPUs a node has; SLURM's default is 1 per "
            "process: give --cpus-per-task)"
        )
    return resources


def _record_job_id(folder: Path, job_id: str, array_index: Optional[int]) -> None:
    record = read_json(folder / "launch.json")
    if record.get("job_id") and record["job_id"] != job_id:  # a resumed job: keep the earlier ids
        record.setdefault("previous_job_ids", []).append(record["job_id"])
    record["job_id"] = job_id
    record["array_index"] = array_index
    write_json_atomic(folder / "launch.json", record)


def submit_slurm(
    args: argparse.Namespace,
    resources: Resources,
    root: Path,
    jobs_to_submit: List[Tuple[Path, TrainingJob]],
    time_min: int,
) -> int:
    array = len(jobs_to_submit) > 1
    log_folder = root / "logs" / "%j" if array else root / "logs"
    executor = _slurm_executor(log_folder, resources, time_min)
    try:
        if array:
            with executor.batch():
                jobs = [executor.submit(job) for _, job in jobs_to_submit]
        else:
            jobs = [executor.submit(jobs_to_submit[0][1])]
    except subprocess.CalledProcessError as err:
        output = (err.output or b"").decode(errors="replace") if isinstance(err.output, bytes) else str(err.output)
        raise LaunchError(f"sbatch refused the job: {output.strip() or err}") from None
    for index, ((folder, _), job) in enumerate(zip(jobs_to_submit, jobs)):
        _record_job_id(folder, job.job_id, index if array else None)
        if array:
            (folder / "logs").symlink_to(Path("..") / "logs" / job.job_id)
    first = jobs[0]
    job_id = first.job_id.split("_")[0]
    say(f"submitted {'array ' if array else ''}job {job_id} ({len(jobs)} job(s))")
    say(f"folder: {root}")
    log = jobs_to_submit[0][0] / "logs" / f"{first.job_id}_0_log.err"
    say(f"follow: tail -f {log}    status: squeue -j {job_id}    cancel: scancel {job_id}")
    if not args.wait:
        return 0
    status = 0
    for (folder, _), job in zip(jobs_to_submit, jobs):
        try:
            wait_for(job, "slurm", follow=not array, folder=folder)
            say(f"job {job.job_id} finished: {_summary(folder)}")
        except LaunchError as err:
            print(f"[launch] {err}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            say(
                f"stopped following; job {job_id} keeps running (squeue -j {job_id}; scancel {job_id} stops it, "
                f"then python launch.py --resume {folder} continues it)"
            )
            return 130
    return status


def run_local(resources: Resources, jobs_to_submit: List[Tuple[Path, TrainingJob]]) -> int:
    status = 0
    for folder, training_job in jobs_to_submit:  # one after another: they share this machine
        executor = _local_executor(folder / "logs", resources)
        job = _submit_quietly(executor, training_job, folder / "logs" / "controller.log")
        _record_job_id(folder, job.job_id, None)
        say(f"running job {job.job_id} here; folder: {folder}")
        say(f"logs: {folder / 'logs'}; Ctrl-C cancels")
        try:
            wait_for(job, "local", follow=True)
            say(f"finished: {_summary(folder)}")
        except KeyboardInterrupt:
            job.cancel()
            say(
                f"cancelled; checkpoints so far are in {folder / 'checkpoints'}; "
                f"continue with: python launch.py --resume {folder}"
            )
            return 130
        except LaunchError as err:
            print(f"[launch] {err}", file=sys.stderr)
            status = 1
    return status


def _submit_quietly(executor: Any, training_job: TrainingJob, log: Path) -> Any:
    """Submit to the local executor with the controller's stderr in ``log``: the controller is
    submitit's process between the launcher and the ranks, in the launcher's process group, and a
    Ctrl-C there ends it with a traceback that belongs in the logs, not on the terminal."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with log.open("ab") as f:
            os.dup2(f.fileno(), 2)
        return executor.submit(training_job)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _summary(folder: Path) -> str:
    result = read_json(folder / "result.json")
    if not result:
        return f"see {folder}"
    metrics = result.get("metrics", {})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val/"))
    return (
        f"{result.get('global_step')} steps on {result.get('world_size')} process(es)"
        + (f", {shown}" if shown else "")
        + f"; checkpoints in {folder / 'checkpoints'}"
    )


def dry_run(
    args: argparse.Namespace,
    resources: Resources,
    executor: str,
    configs: List[Tuple[List[Tuple[str, str]], Dict[str, Any]]],
    time_min: int,
) -> int:
    root = Path(args.jobs_dir).resolve() / f"{resources.job_name}-<time>"
    for index, (choices, resolved) in enumerate(configs):
        folder = root if len(configs) == 1 else root / f"{index:02d}-{label(choices)}"
        config = apply_job_settings(resolved, resources, executor, folder)
        trainer = config["trainer"]
        say(
            f"job {index}: {folder}: trainer num_nodes={trainer['num_nodes']} devices={trainer['devices']} "
            f"accelerator={trainer['accelerator']} strategy={trainer['strategy']}"
            + (f", sweep {dict(choices)}" if choices else "")
        )
    if executor == "slurm":
        folder = root / "logs" / "%j" if len(configs) > 1 else root / "logs"
        slurm = _slurm_executor(folder, resources, time_min, script_only=True)
        if len(configs) > 1:
            slurm.parameters["map_count"] = len(configs)
        print(sbatch_script(slurm))
    else:
        say(
            f"local: {resources.gpus} process(es) of `{shlex.quote(sys.executable)} -m submitit.core._submit "
            f"{root}/logs` on this machine"
        )
    say("dry run: nothing was submitted")
    return 0
