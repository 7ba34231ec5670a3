"""``python launch.py``: resolve the training config, make the job folder, submit through submitit.

One job = one folder (``jobs/<job-name>-<time>/``)::

    config.yaml     the resolved config the job runs (``shufflenet-pl fit --config`` reads it as is)
    launch.json     resources, executor, job id, array index, W&B run id, seed, command line, attempts
    logs/           submitit's files: <job id>_<rank>_log.out / .err per rank, the sbatch script
    checkpoints/    last.ckpt (also written at preemption) and the best val/acc1, each with its .sha256;
                    .trainer.lock, held by the running trainer
    wandb/          the W&B run (its id is in launch.json; the same across requeues)
    result.json     steps, final metrics and checkpoint paths, when the job has finished

A sweep (``--sweep key=v1,v2``) is one SLURM job array with one such folder per element.
"""

import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .args import check_configs, label, parse_args, parse_sweeps, sweep_args
from .config import (
    apply_job_settings,
    check_batch,
    launch_record,
    new_folder,
    resolve_config,
    say_seed,
    validate_config_file,
    wandb_run_id,
    write_config,
)
from .errors import LaunchError, say
from .job import TrainingJob, write_json_atomic
from .resources import check_partition
from .resume import resume
from .submit import (
    FALLBACK_TIME_MIN,
    check_local,
    choose_cpus_per_task,
    choose_executor,
    dry_run,
    run_local,
    submit_slurm,
)

__all__ = ["LaunchError", "launch", "main", "parse_sweeps", "resolve_config"]


def launch(argv: Sequence[str]) -> int:
    args, resources, training_args = parse_args(argv)
    if args.resume:
        if training_args or args.sweep:
            raise LaunchError(
                f"--resume runs the job's own config.yaml; remove {' '.join(training_args or ['--sweep'])}"
            )
        return resume(args)
    training_args = check_configs(training_args)
    elements = parse_sweeps(args.sweep)
    # Every element's config parses (and its batch fits the processes) before anything is made or asked.
    configs = [(choices, resolve_config([*training_args, *sweep_args(choices)])) for choices in elements]
    from shufflenet_pl.input_checks import check_run_config

    for _, config in configs:
        check_run_config(config, "fit")  # the checks `shufflenet-pl fit` runs, before any folder is made
        check_batch(config, resources)
    executor, reachable = choose_executor(args.cluster, dry_run=args.dry_run, nodes=resources.nodes)
    time_min = resources.time_minutes or FALLBACK_TIME_MIN
    partition_info: Dict[str, Any] = {}
    if executor == "slurm" and reachable:
        partition_info = check_partition(resources)
        resources.partition = resources.partition or partition_info["partition"]
        time_min = resources.time_minutes or partition_info.get("time_limit_min") or FALLBACK_TIME_MIN
    elif executor == "local":
        resources = check_local(resources)
    if executor == "slurm":
        resources = choose_cpus_per_task(resources, partition_info.get("cpus_per_node"))
    kind = "CPU process(es)" if resources.cpu else "GPU(s)"
    say(
        f"{executor}: {resources.nodes} node(s) x {resources.gpus} {kind} = world size {resources.processes}"
        + (f", partition {resources.partition or '(the default)'}, {time_min} min" if executor == "slurm" else "")
        + (f", {len(elements)} jobs" if len(elements) > 1 else "")
    )

    if args.dry_run:
        return dry_run(args, resources, executor, configs, time_min)

    root = new_folder(Path(args.jobs_dir), resources.job_name)
    jobs_to_submit = []
    try:
        for index, (choices, resolved) in enumerate(configs):
            folder = root if len(elements) == 1 else root / f"{index:02d}-{label(choices)}"
            folder.mkdir(exist_ok=True)
            (folder / "checkpoints").mkdir(exist_ok=True)
            given = resolved.get("seed_everything")
            config = apply_job_settings(resolved, resources, executor, folder)
            say_seed(config["seed_everything"], given)
            write_config(config, folder / "config.yaml")
            validate_config_file(folder / "config.yaml")
            run_id = wandb_run_id()
            record = launch_record(args, resources, executor, folder, choices, run_id)
            record["seed"] = config["seed_everything"]
            write_json_atomic(folder / "launch.json", record)
            jobs_to_submit.append((folder, TrainingJob(str(folder), run_id, executor, resources.max_failures)))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # nothing was submitted: leave no half-made job folder
        raise

    if executor == "slurm":
        return submit_slurm(args, resources, root, jobs_to_submit, time_min)
    return run_local(resources, jobs_to_submit)


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        sys.exit(launch(sys.argv[1:] if argv is None else argv))
    except (LaunchError, ValueError) as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        sys.exit(2)
