"""``python launch.py``: resolve the training config, make the job folder, submit through submitit.

One job = one folder (``jobs/<job-name>-<time>/``)::

    config.yaml     the resolved config the job runs (``shufflenet-pl fit --config`` reads it as is)
    launch.json     resources, executor, job id, array index, W&B run id, command line, attempts
    logs/           submitit's files: <job id>_<rank>_log.out / .err per rank, the sbatch script
    checkpoints/    last.ckpt (also written at preemption) and the best val/acc1
    wandb/          the W&B run (its id is in launch.json; the same across requeues)
    result.json     steps, final metrics and checkpoint paths, when the job has finished

A sweep (``--sweep key=v1,v2``) is one SLURM job array with one such folder per element.
"""

import argparse
import contextlib
import io
import itertools
import os
import re
import secrets
import shlex
import string
import subprocess
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .job import TrainingJob, read_json, write_json_atomic
from .resources import Resources, check_partition, list_presets, load_preset, slurm_available

__all__ = ["LaunchError", "main", "parse_sweeps", "resolve_config"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "experiment" / "demo.yaml"
#: Time limit when neither --time nor the partition gives one.
FALLBACK_TIME_MIN = 24 * 60
_TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                    "DEADLINE", "PREEMPTED_FINAL", "SPECIAL_EXIT", "REVOKED"}


class LaunchError(Exception):
    """A problem the user can fix; printed as one message, without a traceback."""


def _say(message: str) -> None:
    print(f"[launch] {message}", flush=True)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train ShuffleNet V2 as a job: on SLURM through submitit (DDP over --nodes x --gpus, requeued on\n"
            "preemption or time limit and resumed from last.ckpt), or on this machine. Every other argument\n"
            "(--config FILE, --trainer.max_epochs 3, --model.lr 0.1 ...) goes to `shufflenet-pl fit`\n"
            "(see `shufflenet-pl fit --help`); without --config the built-in demo runs."
        ),
        epilog=(
            "examples:\n"
            "  python launch.py                                   # the demo, here (or on SLURM if sbatch answers)\n"
            "  python launch.py --nodes 4 --gpus 8 --preset a100-example --time 2-00:00:00 \\\n"
            "      --config configs/trainer/default.yaml --config configs/experiment/official.yaml \\\n"
            "      --config configs/model/x1_0.yaml --config configs/data/imagenet_folder.yaml \\\n"
            "      --data.init_args.root /datasets/imagenet\n"
            "  python launch.py ... --sweep config=configs/model/x0_5.yaml,configs/model/x1_0.yaml   # job array\n"
            "  python launch.py ... --dry-run                     # print the sbatch script, submit nothing\n"
            f"presets (cluster/*.yaml): {', '.join(list_presets()) or 'none'}\n"
        ),
    )
    where = parser.add_argument_group("where")
    where.add_argument("--cluster", choices=("auto", "slurm", "local"), default="auto",
                       help="auto: SLURM when sbatch is on the PATH and the controller answers, else this machine")
    where.add_argument("--preset", help="defaults for these options from cluster/<NAME>.yaml (or a YAML file)")
    size = parser.add_argument_group("size (the Trainer's num_nodes/devices/strategy follow)")
    size.add_argument("--nodes", type=int, help="nodes (default 1)")
    size.add_argument("--gpus", type=int, help="GPUs per node = processes per node (default 1)")
    size.add_argument("--cpu", action="store_true", default=None,
                      help="CPU job: --gpus counts CPU processes per node (gloo); automatic here without CUDA")
    slurm = parser.add_argument_group("SLURM")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--time", help="time limit: minutes or [D-]HH:MM:SS (default: the partition's)")
    slurm.add_argument("--constraint", help="node features, e.g. a100")
    slurm.add_argument("--mem", help="memory per node, e.g. 480G")
    slurm.add_argument("--cpus-per-task", type=int, help="CPUs per process (data loading)")
    slurm.add_argument("--gpu-type", help="GPU type in the GRES request, e.g. a100 (--gpus-per-node=a100:8)")
    slurm.add_argument("--exclusive", action="store_true", default=None, help="whole nodes")
    slurm.add_argument("--mail", help="e-mail for SLURM notifications")
    slurm.add_argument("--mail-type", help="when to mail (default END,FAIL)")
    slurm.add_argument("--job-name", help="SLURM job name, also the job folder's prefix (default shufflenet-pl)")
    slurm.add_argument("--signal-delay", type=int, dest="signal_delay", metavar="SECONDS",
                       help="seconds before the time limit for the checkpoint signal (default 120)")
    slurm.add_argument("--max-timeouts", type=int, help="requeues after reaching the time limit (default 3)")
    slurm.add_argument("--setup", action="append", help="shell line run before the job in the sbatch script (repeat)")
    slurm.add_argument("--array-parallelism", type=int, help="sweep elements running at once (default 256)")
    job = parser.add_argument_group("job")
    job.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                     help="one job per value (a SLURM job array); repeat for a grid; KEY 'config' adds --config files")
    job.add_argument("--jobs-dir", default="jobs", help="where job folders go (default jobs/)")
    job.add_argument("--dry-run", action="store_true", help="print the sbatch script (or the local plan) and exit")
    wait = job.add_mutually_exclusive_group()
    wait.add_argument("--wait", action="store_true", default=None,
                      help="follow rank 0's log until the job ends (the default on this machine)")
    wait.add_argument("--no-wait", dest="wait", action="store_false", help="submit and return (SLURM's default)")
    return parser


def _resource_options() -> List[str]:
    return [f.name for f in fields(Resources)]


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, Resources, List[str]]:
    """Launcher options (preset, then command line) and the arguments left for ``shufflenet-pl fit``."""
    parser = build_parser()
    args, training_args = parser.parse_known_args(list(argv))
    preset = load_preset(args.preset) if args.preset else {}
    values: Dict[str, Any] = {}
    for name in _resource_options():
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
        elif name in preset:
            values[name] = preset[name]
    if args.cluster == "auto" and "cluster" in preset:
        args.cluster = preset["cluster"]
    for arg in training_args:
        if arg.startswith("-") and not arg.startswith("--") and arg not in ("-c",):
            raise LaunchError(f"unknown option {arg}; see python launch.py --help")
    for flag in ("--trainer.num_nodes", "--trainer.devices", "--trainer.strategy", "--trainer.accelerator"):
        if any(a == flag or a.startswith(flag + "=") for a in training_args):
            raise LaunchError(f"{flag} is set by the launcher from --nodes/--gpus/--cpu; remove it")
    return args, Resources(**values), training_args


def parse_sweeps(sweeps: Sequence[str]) -> List[List[Tuple[str, str]]]:
    """``["model.lr=0.1,0.2", "config=a.yaml,b.yaml"]`` -> the grid of (key, value) choices."""
    axes = []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        key = key.strip().lstrip("-")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not choices:
            raise LaunchError(f"--sweep {sweep!r}: use KEY=V1,V2,... e.g. --sweep model.lr=0.1,0.2")
        axes.append([(key, value) for value in choices])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _sweep_args(choices: Sequence[Tuple[str, str]]) -> List[str]:
    args: List[str] = []
    for key, value in choices:
        args += ["--config", value] if key == "config" else [f"--{key}", value]
    return args


def _label(choices: Sequence[Tuple[str, str]]) -> str:
    parts = [Path(v).stem if k == "config" else f"{k.rsplit('.', 1)[-1]}={v}" for k, v in choices]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))[:80]


def _check_configs(training_args: List[str]) -> List[str]:
    """Name a missing --config file before anything else; add the demo config when none is given."""
    given = []
    for i, arg in enumerate(training_args):
        if arg in ("--config", "-c") and i + 1 < len(training_args):
            given.append(training_args[i + 1])
        elif arg.startswith("--config="):
            given.append(arg.split("=", 1)[1])
    for path in given:
        if not Path(path).is_file():
            nearby = sorted(str(p) for p in Path("configs").glob("*/*.yaml"))[:12] if Path("configs").is_dir() else []
            raise LaunchError(f"--config {path}: no such file" + (f" (configs here: {', '.join(nearby)} ...)" if nearby else ""))
    if given:
        return training_args
    shown = os.path.relpath(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_relative_to(Path.cwd()) else DEFAULT_CONFIG
    _say(f"no --config given: running the built-in demo ({shown})")
    return ["--config", str(DEFAULT_CONFIG), *training_args]


# --- the resolved config -----------------------------------------------------------------------


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
            start = next((i for i, line in enumerate(lines) if line.startswith("error:")), 0)
            raise LaunchError("the training config does not parse (`shufflenet-pl fit --help` lists the keys):\n"
                              + "\n".join(lines[start:]).strip()) from None
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
    ``last.ckpt`` (saved also at preemption by ``PreemptionCheckpoint``); loggers write under the
    folder; a ``seed_everything: true`` becomes a fixed seed so that every rank and every restart
    draws the same one.
    """
    trainer = config.setdefault("trainer", {})
    trainer.update(resources.trainer_settings(executor))
    trainer["default_root_dir"] = str(folder)
    checkpoints = str(folder / "checkpoints")
    callbacks = _as_list(trainer.get("callbacks"))
    has_model_checkpoint = False
    for callback in callbacks:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            init = callback.setdefault("init_args", {})
            init["dirpath"] = checkpoints
            init["save_last"] = init.get("save_last") or True
            # A requeued run must overwrite last.ckpt, not write last-v1.ckpt beside it.
            init["enable_version_counter"] = False
            has_model_checkpoint = True
    if not has_model_checkpoint and trainer.get("enable_checkpointing") is not False:
        callbacks.append({"class_path": "shufflenet_pl.callbacks.ModelCheckpoint",
                          "init_args": {"dirpath": checkpoints, "save_last": True, "enable_version_counter": False}})
    callbacks.append({"class_path": "cluster.requeue.PreemptionCheckpoint", "init_args": {"dirpath": checkpoints}})
    trainer["callbacks"] = callbacks
    for logger in _as_list(trainer.get("logger")):
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(folder)
    if config.get("seed_everything") in (True, None):
        config["seed_everything"] = secrets.randbelow(2**31)
    return config


def write_config(config: Dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Resolved by launch.py; the job runs: shufflenet-pl fit --config <this file>\n"
                   + yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)


# --- executors ---------------------------------------------------------------------------------


def choose_executor(cluster: str, dry_run: bool = False) -> Tuple[str, bool]:
    """``(executor, reachable)``: ``slurm`` or ``local``, and whether SLURM answered."""
    if cluster == "local":
        return "local", False
    why_not = slurm_available()
    if cluster == "slurm":
        if why_not and dry_run:
            _say(f"SLURM is not reachable ({why_not}): printing the script without checking the partition")
            return "slurm", False
        if why_not:
            raise LaunchError(f"SLURM is not reachable: {why_not}. Check that slurmctld runs and SLURM_CONF points "
                              f"at its slurm.conf, or run here with --cluster local")
        return "slurm", True
    if why_not is None:
        return "slurm", True
    if "not on the PATH" not in why_not:
        _say(f"sbatch is installed but no SLURM cluster answers ({why_not}); running on this machine "
             f"(--cluster slurm to insist)")
    return "local", False


def _check_local(resources: Resources) -> Resources:
    if resources.nodes != 1:
        raise LaunchError(f"--nodes {resources.nodes}: the local executor runs on this machine only; use --nodes 1 "
                          f"or --cluster slurm")
    if resources.cpu:
        return resources
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        _say(f"no GPU here: running {resources.gpus} CPU process(es) (--gpus counts processes with --cpu)")
        resources.cpu = True
    elif available < resources.gpus:
        raise LaunchError(f"--gpus {resources.gpus}: this machine has {available} GPU(s)")
    return resources


def _slurm_executor(folder: Path, resources: Resources, time_min: int) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_timeouts)
    executor.update_parameters(**resources.slurm_parameters(time_min))
    return executor


def _local_executor(folder: Path, resources: Resources) -> Any:
    import submitit

    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=resources.max_timeouts)
    minutes = resources.time_minutes or 365 * 24 * 60  # no limit unless asked for
    executor.update_parameters(
        tasks_per_node=resources.gpus, gpus_per_node=0 if resources.cpu else resources.gpus,
        timeout_min=minutes, signal_delay_s=min(resources.signal_delay, max(1, minutes * 60 // 2)),
    )
    return executor


# --- following a job ---------------------------------------------------------------------------


class _LogFollower:
    """Print what a job's rank-0 log files gain, as they grow."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.offsets = {path: 0 for path in paths}

    def poll(self) -> None:
        for path, offset in self.offsets.items():
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                continue
            if chunk:
                self.offsets[path] = offset + len(chunk)
                stream = sys.stderr if path.suffix == ".err" else sys.stdout
                stream.write(chunk.decode(errors="replace"))
                stream.flush()


def _state(job: Any) -> str:
    try:
        info = job.get_info(mode="force")
    except Exception:  # a transient sacct/squeue failure: ask again at the next poll
        return "UNKNOWN"
    return str(info.get("State") or info.get("jobState") or "UNKNOWN").split()[0].upper()


def _tasks_finished(job: Any) -> bool:
    return all(job.task(t).paths.result_pickle.exists() for t in range(job.num_tasks))


def wait_for(job: Any, executor: str, follow: bool, poll_s: float = 2.0) -> None:
    """Wait until ``job`` ends, printing rank 0's log if ``follow``; raise LaunchError if it failed."""
    task0 = job.task(0) if job.num_tasks > 1 else job
    follower = _LogFollower([task0.paths.stdout, task0.paths.stderr]) if follow else None
    while True:
        if follower:
            follower.poll()
        if _tasks_finished(job):
            break
        if executor == "local":
            if job._process is not None and job._process.poll() is not None:
                break
        elif _state(job) in _TERMINAL_STATES:
            time.sleep(poll_s)  # result files land right after the state changes
            break
        time.sleep(poll_s)
    if follower:
        follower.poll()
    _raise_if_failed(job)


def _raise_if_failed(job: Any) -> None:
    from submitit.core.utils import pickle_load

    failed: List[Tuple[float, int, str]] = []
    for rank in range(job.num_tasks):
        task = job.task(rank)
        path = task.paths.result_pickle
        if not path.exists():
            failed.append((float("inf"), rank, "no result (killed, or crashed outside Python)"))
            continue
        outcome, payload = pickle_load(path)
        if outcome == "error":
            failed.append((path.stat().st_mtime, rank, str(payload).strip().splitlines()[-1]))
    if not failed:
        return
    failed.sort()
    _, rank, reason = failed[0]  # the first to fail is the likely cause; the others often wait on it
    task = job.task(rank)
    log = task.paths.stderr if task.paths.stderr.exists() else task.paths.stdout
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else ["(no log)"]
    raise LaunchError(
        f"job {job.job_id} failed; rank {rank}: {reason}\n"
        f"--- last lines of {log} ---\n" + "\n".join(tail) + "\n---\n"
        f"failing ranks: {', '.join(str(r) for _, r, _ in failed)}; all logs: {log.parent}"
    )


# --- main --------------------------------------------------------------------------------------


def _new_folder(root: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{i}" for i in range(1, 100)]:
        folder = root / f"{name}-{stamp}{suffix}"
        try:
            folder.mkdir(parents=True)
            return folder.resolve()
        except FileExistsError:
            continue
    raise LaunchError(f"could not create a job folder under {root}")


def _wandb_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _launch_record(args: argparse.Namespace, resources: Resources, executor: str, folder: Path,
                   choices: Sequence[Tuple[str, str]], run_id: str) -> Dict[str, Any]:
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


def _validate_config_file(path: Path) -> None:
    resolve_config(["--config", str(path)])  # the job parses exactly this; fail now, not after queueing


def launch(argv: Sequence[str]) -> int:
    args, resources, training_args = parse_args(argv)
    training_args = _check_configs(training_args)
    elements = parse_sweeps(args.sweep)
    executor, reachable = choose_executor(args.cluster, dry_run=args.dry_run)
    time_min = resources.time_minutes or FALLBACK_TIME_MIN
    partition_info: Dict[str, Any] = {}
    if executor == "slurm" and reachable:
        partition_info = check_partition(resources)
        resources.partition = resources.partition or partition_info["partition"]
        time_min = resources.time_minutes or partition_info.get("time_limit_min") or FALLBACK_TIME_MIN
    elif executor == "local":
        resources = _check_local(resources)
    kind = "CPU process(es)" if resources.cpu else "GPU(s)"
    _say(f"{executor}: {resources.nodes} node(s) x {resources.gpus} {kind} = world size {resources.processes}"
         + (f", partition {resources.partition}, {time_min} min" if executor == "slurm" else "")
         + (f", {len(elements)} jobs" if len(elements) > 1 else ""))

    if args.dry_run:
        return _dry_run(args, resources, executor, training_args, elements, time_min)

    root = _new_folder(Path(args.jobs_dir), resources.job_name)
    jobs_to_submit = []
    for index, choices in enumerate(elements):
        folder = root if len(elements) == 1 else root / f"{index:02d}-{_label(choices)}"
        folder.mkdir(exist_ok=True)
        (folder / "checkpoints").mkdir(exist_ok=True)
        config = apply_job_settings(resolve_config([*training_args, *_sweep_args(choices)]), resources, executor, folder)
        write_config(config, folder / "config.yaml")
        _validate_config_file(folder / "config.yaml")
        run_id = _wandb_run_id()
        write_json_atomic(folder / "launch.json", _launch_record(args, resources, executor, folder, choices, run_id))
        jobs_to_submit.append((folder, TrainingJob(str(folder), run_id, executor)))

    if executor == "slurm":
        return _submit_slurm(args, resources, root, jobs_to_submit, time_min)
    return _run_local(resources, jobs_to_submit)


def _record_job_id(folder: Path, job_id: str, array_index: Optional[int]) -> None:
    record = read_json(folder / "launch.json")
    record["job_id"] = job_id
    record["array_index"] = array_index
    write_json_atomic(folder / "launch.json", record)


def _submit_slurm(args: argparse.Namespace, resources: Resources, root: Path,
                  jobs_to_submit: List[Tuple[Path, TrainingJob]], time_min: int) -> int:
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
    _say(f"submitted {'array ' if array else ''}job {job_id} ({len(jobs)} job(s))")
    _say(f"folder: {root}")
    log = (jobs_to_submit[0][0] / "logs" / f"{first.job_id}_0_log.err")
    _say(f"follow: tail -f {log}    status: squeue -j {job_id}    cancel: scancel {job_id}")
    if not args.wait:
        return 0
    status = 0
    for (folder, _), job in zip(jobs_to_submit, jobs):
        try:
            wait_for(job, "slurm", follow=not array)
            _say(f"job {job.job_id} finished: {_summary(folder)}")
        except LaunchError as err:
            print(f"[launch] {err}", file=sys.stderr)
            status = 1
    return status


def _run_local(resources: Resources, jobs_to_submit: List[Tuple[Path, TrainingJob]]) -> int:
    status = 0
    for folder, training_job in jobs_to_submit:  # one after another: they share this machine
        executor = _local_executor(folder / "logs", resources)
        job = executor.submit(training_job)
        _record_job_id(folder, job.job_id, None)
        _say(f"running job {job.job_id} here; folder: {folder}")
        _say(f"logs: {folder / 'logs'}; Ctrl-C cancels")
        try:
            wait_for(job, "local", follow=True)
            _say(f"finished: {_summary(folder)}")
        except KeyboardInterrupt:
            job.cancel()
            _say(f"cancelled; checkpoints so far are in {folder / 'checkpoints'}")
            return 130
        except LaunchError as err:
            print(f"[launch] {err}", file=sys.stderr)
            status = 1
    return status


def _summary(folder: Path) -> str:
    result = read_json(folder / "result.json")
    if not result:
        return f"see {folder}"
    metrics = result.get("metrics", {})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val/"))
    return (f"{result.get('global_step')} steps on {result.get('world_size')} process(es)"
            + (f", {shown}" if shown else "") + f"; checkpoints in {folder / 'checkpoints'}")


def _dry_run(args: argparse.Namespace, resources: Resources, executor: str, training_args: List[str],
             elements: List[List[Tuple[str, str]]], time_min: int) -> int:
    root = Path(args.jobs_dir).resolve() / f"{resources.job_name}-<time>"
    for index, choices in enumerate(elements):
        folder = root if len(elements) == 1 else root / f"{index:02d}-{_label(choices)}"
        config = apply_job_settings(resolve_config([*training_args, *_sweep_args(choices)]), resources, executor, folder)
        trainer = config["trainer"]
        _say(f"job {index}: {folder}: trainer num_nodes={trainer['num_nodes']} devices={trainer['devices']} "
             f"accelerator={trainer['accelerator']} strategy={trainer['strategy']}"
             + (f", sweep {dict(choices)}" if choices else ""))
    if executor == "slurm":
        folder = root / "logs" / "%j" if len(elements) > 1 else root / "logs"
        slurm = _slurm_executor(folder, resources, time_min)
        if len(elements) > 1:
            slurm.parameters["map_count"] = len(elements)
        print(slurm._make_submission_file_text(slurm._submitit_command_str, "dry-run"))
    else:
        _say(f"local: {resources.gpus} process(es) of `{shlex.quote(sys.executable)} -m submitit.core._submit "
             f"{root}/logs` on this machine")
    _say("dry run: nothing was submitted")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        sys.exit(launch(sys.argv[1:] if argv is None else argv))
    except (LaunchError, ValueError) as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        sys.exit(2)
