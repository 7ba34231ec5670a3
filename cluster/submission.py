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

import argparse
import contextlib
import io
import itertools
import os
import re
import secrets
import shlex
import shutil
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
#: Minutes between the periodic last.ckpt of a job whose trainer config sets no TimedCheckpoint.
DEFAULT_CHECKPOINT_MINUTES = 10.0
#: The seed of a job whose config gives none (or ``seed_everything: true``): the same command trains
#: the same weights on the same machine; ``--seed_everything N`` picks another.
DEFAULT_SEED = 0
#: Time limit when neither --time nor the partition gives one.
FALLBACK_TIME_MIN = 24 * 60
_TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED_FINAL",
    "SPECIAL_EXIT",
    "REVOKED",
}


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
            "  python launch.py --resume jobs/shufflenet-pl-20260101-120000   # continue a cancelled/failed job\n"
            f"presets (cluster/*.yaml): {', '.join(list_presets()) or 'none'}\n"
        ),
    )
    where = parser.add_argument_group("where")
    where.add_argument(
        "--cluster",
        choices=("auto", "slurm", "local"),
        default="auto",
        help="auto: SLURM when sbatch is on the PATH and the controller answers, else this machine",
    )
    where.add_argument("--preset", help="defaults for these options from cluster/<NAME>.yaml (or a YAML file)")
    size = parser.add_argument_group("size (the Trainer's num_nodes/devices/strategy follow)")
    size.add_argument("--nodes", type=int, help="nodes (default 1)")
    size.add_argument("--gpus", type=int, help="GPUs per node = processes per node (default 1)")
    size.add_argument(
        "--cpu",
        action="store_true",
        default=None,
        help="CPU job: --gpus counts CPU processes per node (gloo); automatic here without CUDA",
    )
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
    slurm.add_argument(
        "--signal-delay",
        type=int,
        dest="signal_delay",
        metavar="SECONDS",
        help="seconds before the time limit for the checkpoint signal (default 120)",
    )
    slurm.add_argument("--max-timeouts", type=int, help="requeues after reaching the time limit (default 3)")
    slurm.add_argument(
        "--max-failures", type=int, help="automatic requeues when a rank dies (node failure, killed process; default 3)"
    )
    slurm.add_argument("--setup", action="append", help="shell line run before the job in the sbatch script (repeat)")
    slurm.add_argument("--array-parallelism", type=int, help="sweep elements running at once (default 256)")
    job = parser.add_argument_group("job")
    job.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one job per value (a SLURM job array); repeat for a grid; KEY 'config' adds --config files",
    )
    job.add_argument("--jobs-dir", default="jobs", help="where job folders go (default jobs/)")
    job.add_argument(
        "--resume",
        metavar="JOB_FOLDER",
        help="continue a stopped or failed job in its folder: same config, W&B run and step count, "
        "from its newest complete checkpoint",
    )
    job.add_argument(
        "--restart-from-scratch",
        action="store_true",
        help="with --resume: when every checkpoint of the job fails to verify, start it over from step 0 "
        "(removing them) instead of refusing",
    )
    job.add_argument("--dry-run", action="store_true", help="print the sbatch script (or the local plan) and exit")
    wait = job.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="follow rank 0's log until the job ends (the default on this machine)",
    )
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
            raise LaunchError(
                f"--config {path}: no such file" + (f" (configs here: {', '.join(nearby)} ...)" if nearby else "")
            )
        _check_yaml(Path(path))
    if given:
        return training_args
    shown = os.path.relpath(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_relative_to(Path.cwd()) else DEFAULT_CONFIG
    _say(f"no --config given: running the built-in demo ({shown})")
    return ["--config", str(DEFAULT_CONFIG), *training_args]


def _check_yaml(path: Path) -> None:
    """A config that is not YAML, named by its file and line (jsonargparse would say ``<unicode string>``)."""
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LaunchError(f"--config {where}: not valid YAML ({problem})") from None


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
            raise LaunchError(
                "the training config does not parse (`shufflenet-pl fit --help` lists the keys):\n"
                + "\n".join(lines[start:]).strip()
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
                "class_path": "shufflenet_pl.callbacks.ModelCheckpoint",
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
                "init_args": {"every_minutes": DEFAULT_CHECKPOINT_MINUTES, "dirpath": checkpoints},
            }
        )
    callbacks.append({"class_path": "cluster.requeue.PreemptionCheckpoint", "init_args": {"dirpath": checkpoints}})
    trainer["callbacks"] = callbacks
    for logger in _as_list(trainer.get("logger")):
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(folder)
    if config.get("seed_everything") is True or config.get("seed_everything") is None:
        config["seed_everything"] = DEFAULT_SEED
    return config


def _say_seed(seed: Any, given: Any) -> None:
    if seed is False:
        _say("seed: none (seed_everything: false): runs differ from each other")
    elif given is True or given is None:
        _say(f"seed {seed} (the default; --seed_everything N for another)")
    else:
        _say(f"seed {seed} (set by the config or the command line)")


def write_config(config: Dict[str, Any], path: Path) -> None:
    from shufflenet_pl.files import write_text

    write_text(
        path,
        "# Resolved by launch.py; the job runs: shufflenet-pl fit --config <this file>\n"
        + yaml.safe_dump(config, sort_keys=False),
    )


# --- executors ---------------------------------------------------------------------------------


def choose_executor(cluster: str, dry_run: bool = False, nodes: int = 1) -> Tuple[str, bool]:
    """``(executor, reachable)``: ``slurm`` or ``local``, and whether SLURM answered. A dry run of
    several nodes means SLURM; it asks the controller briefly and prints the script either way."""
    if cluster == "local":
        return "local", False
    if dry_run and nodes > 1:
        cluster = "slurm"
    if dry_run and cluster == "slurm" and shutil.which("sbatch") is None:
        _say("sbatch is not on the PATH: printing the script without checking the partition")
        return "slurm", False
    why_not = slurm_available(timeout_s=5 if dry_run else 15)
    if cluster == "slurm":
        if why_not and dry_run:
            _say(f"SLURM is not reachable ({why_not}): printing the script without checking the partition")
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
        _say(
            f"sbatch is installed but no SLURM cluster answers ({why_not}); running on this machine "
            f"(--cluster slurm to insist)"
        )
    return "local", False


def _check_local(resources: Resources) -> Resources:
    if resources.nodes != 1:
        raise LaunchError(
            f"--nodes {resources.nodes}: the local executor runs on this machine only; use --nodes 1 or --cluster slurm"
        )
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


#: srun's account of a task that ended badly, in the batch log: "srun: error: node2: task 1: Killed".
_SRUN_TASK_ERROR = re.compile(r"srun: error: (?P<host>\S+): tasks? (?P<ranks>[\d,-]+): (?P<how>.+)")


def _srun_task_errors(job: Any) -> Dict[int, str]:
    """``{rank: "killed by SIGKILL on node2"}`` from srun's lines in the job's batch log (SLURM only)."""
    errors: Dict[int, str] = {}
    log = job.paths.stderr
    if not log.exists():
        return errors
    for line in log.read_text(errors="replace").splitlines():
        match = _SRUN_TASK_ERROR.search(line)
        if not match:
            continue
        how = match["how"].strip()
        how = {"Killed": "killed by SIGKILL", "Terminated": "killed by SIGTERM"}.get(how, how[0].lower() + how[1:])
        for part in match["ranks"].split(","):
            first, _, last = part.partition("-")
            for rank in range(int(first), int(last or first) + 1):
                errors.setdefault(rank, f"{how} on {match['host']}")
    return errors


def _no_space_line(task: Any) -> Optional[str]:
    """The last "no space left on ..." line of a task's log, if it has one."""
    log = task.paths.stderr
    if not log.exists():
        return None
    found = [line for line in log.read_text(errors="replace").splitlines() if "no space left on " in line]
    return found[-1][found[-1].index("no space left on ") :].strip() if found else None


def _raise_if_failed(job: Any) -> None:
    from submitit.core.utils import pickle_load

    srun_errors = _srun_task_errors(job) if hasattr(job, "paths") else {}
    failed: List[Tuple[int, float, int, str]] = []
    for rank in range(job.num_tasks):
        task = job.task(rank)
        path = task.paths.result_pickle
        if not path.exists():
            full = _no_space_line(task)
            if full:  # a full disk that held the result file too: Python said why in the log
                failed.append((1, 0.0, rank, full))
                continue
            # Died without a word from Python (a signal, the OOM killer, a lost node): the likely cause.
            failed.append((0, 0.0, rank, srun_errors.get(rank, "no result (killed, or crashed outside Python)")))
            continue
        outcome, payload = pickle_load(path)
        if outcome == "error":
            reason = str(payload).strip().splitlines()[-1]
            failed.append(
                (1, path.stat().st_mtime, rank, reason + (f" ({srun_errors[rank]})" if rank in srun_errors else ""))
            )
    if not failed:
        return
    failed.sort()
    _, _, rank, reason = failed[0]  # a killed rank first, then the first to fail; the others often wait on it
    task = job.task(rank)
    log = task.paths.stderr if task.paths.stderr.exists() else task.paths.stdout
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else ["(no log)"]
    raise LaunchError(
        f"job {job.job_id} failed; rank {rank}: {reason}\n"
        f"--- last lines of {log} ---\n" + "\n".join(tail) + "\n---\n"
        f"failing ranks: {', '.join(str(r) for _, _, r, _ in failed)}; all logs: {log.parent}"
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


def _launch_record(
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


def _validate_config_file(path: Path) -> None:
    resolve_config(["--config", str(path)])  # the job parses exactly this; fail now, not after queueing


def launch(argv: Sequence[str]) -> int:
    args, resources, training_args = parse_args(argv)
    if args.resume:
        if training_args or args.sweep:
            raise LaunchError(
                f"--resume runs the job's own config.yaml; remove {' '.join(training_args or ['--sweep'])}"
            )
        return resume(args)
    training_args = _check_configs(training_args)
    elements = parse_sweeps(args.sweep)
    # Every element's config parses (and its batch fits the processes) before anything is made or asked.
    configs = [(choices, resolve_config([*training_args, *_sweep_args(choices)])) for choices in elements]
    for _, config in configs:
        check_batch(config, resources)
    executor, reachable = choose_executor(args.cluster, dry_run=args.dry_run, nodes=resources.nodes)
    time_min = resources.time_minutes or FALLBACK_TIME_MIN
    partition_info: Dict[str, Any] = {}
    if executor == "slurm" and reachable:
        partition_info = check_partition(resources)
        resources.partition = resources.partition or partition_info["partition"]
        time_min = resources.time_minutes or partition_info.get("time_limit_min") or FALLBACK_TIME_MIN
    elif executor == "local":
        resources = _check_local(resources)
    if executor == "slurm":
        resources = choose_cpus_per_task(resources, partition_info.get("cpus_per_node"))
    kind = "CPU process(es)" if resources.cpu else "GPU(s)"
    _say(
        f"{executor}: {resources.nodes} node(s) x {resources.gpus} {kind} = world size {resources.processes}"
        + (f", partition {resources.partition or '(the default)'}, {time_min} min" if executor == "slurm" else "")
        + (f", {len(elements)} jobs" if len(elements) > 1 else "")
    )

    if args.dry_run:
        return _dry_run(args, resources, executor, configs, time_min)

    root = _new_folder(Path(args.jobs_dir), resources.job_name)
    jobs_to_submit = []
    try:
        for index, (choices, resolved) in enumerate(configs):
            folder = root if len(elements) == 1 else root / f"{index:02d}-{_label(choices)}"
            folder.mkdir(exist_ok=True)
            (folder / "checkpoints").mkdir(exist_ok=True)
            given = resolved.get("seed_everything")
            config = apply_job_settings(resolved, resources, executor, folder)
            _say_seed(config["seed_everything"], given)
            write_config(config, folder / "config.yaml")
            _validate_config_file(folder / "config.yaml")
            run_id = _wandb_run_id()
            record = _launch_record(args, resources, executor, folder, choices, run_id)
            record["seed"] = config["seed_everything"]
            write_json_atomic(folder / "launch.json", record)
            jobs_to_submit.append((folder, TrainingJob(str(folder), run_id, executor, resources.max_failures)))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # nothing was submitted: leave no half-made job folder
        raise

    if executor == "slurm":
        return _submit_slurm(args, resources, root, jobs_to_submit, time_min)
    return _run_local(resources, jobs_to_submit)


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
    processes = resources.processes
    if batch % processes:
        raise LaunchError(
            f"data.batch_size={batch} (global) does not divide over {processes} processes "
            f"({resources.nodes} node(s) x {resources.gpus}); use a multiple of {processes}, "
            f"e.g. {max(1, batch // processes) * processes}"
        )
    if batch // processes < SMALL_PER_PROCESS_BATCH:
        _say(
            f"warning: data.batch_size={batch} (global) over {processes} processes is {batch // processes} "
            f"image(s) per process: BatchNorm statistics over so few images are noise; use "
            f"--data.init_args.batch_size {SMALL_PER_PROCESS_BATCH * processes} or more (or fewer processes)"
        )


def choose_cpus_per_task(resources: Resources, cpus_per_node: Optional[int]) -> Resources:
    """``--cpus-per-task`` when neither the command line nor the preset gave it: the node's CPUs
    divided by the processes per node (SLURM's own default, 1, starves the data loader)."""
    if resources.cpus_per_task is not None:
        _say(f"cpus-per-task: {resources.cpus_per_task} (given)")
    elif cpus_per_node:
        resources.cpus_per_task = max(1, cpus_per_node // resources.gpus)
        _say(
            f"cpus-per-task: {resources.cpus_per_task} (the node's {cpus_per_node} CPUs / {resources.gpus} "
            f"process(es) per node; --cpus-per-task to change)"
        )
    else:
        _say(
            "cpus-per-task: not set (SLURM did not say how many CPUs a node has; SLURM's default is 1 per "
            "process: give --cpus-per-task)"
        )
    return resources


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
    checkpoint = job._resume_checkpoint()
    _say(
        f"resuming {folder} (W&B run {record['wandb_run_id']}) "
        + (f"from {checkpoint}" if checkpoint else "from the beginning: it has no complete checkpoint yet")
    )
    if executor == "local":
        return _run_local(_check_local(resources), [(folder, job)])
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
    return _submit_slurm(args, resources, folder, [(folder, job)], time_min)


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


def _record_job_id(folder: Path, job_id: str, array_index: Optional[int]) -> None:
    record = read_json(folder / "launch.json")
    if record.get("job_id") and record["job_id"] != job_id:  # a resumed job: keep the earlier ids
        record.setdefault("previous_job_ids", []).append(record["job_id"])
    record["job_id"] = job_id
    record["array_index"] = array_index
    write_json_atomic(folder / "launch.json", record)


def _submit_slurm(
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
    _say(f"submitted {'array ' if array else ''}job {job_id} ({len(jobs)} job(s))")
    _say(f"folder: {root}")
    log = jobs_to_submit[0][0] / "logs" / f"{first.job_id}_0_log.err"
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
    return (
        f"{result.get('global_step')} steps on {result.get('world_size')} process(es)"
        + (f", {shown}" if shown else "")
        + f"; checkpoints in {folder / 'checkpoints'}"
    )


def _dry_run(
    args: argparse.Namespace,
    resources: Resources,
    executor: str,
    configs: List[Tuple[List[Tuple[str, str]], Dict[str, Any]]],
    time_min: int,
) -> int:
    root = Path(args.jobs_dir).resolve() / f"{resources.job_name}-<time>"
    for index, (choices, resolved) in enumerate(configs):
        folder = root if len(configs) == 1 else root / f"{index:02d}-{_label(choices)}"
        config = apply_job_settings(resolved, resources, executor, folder)
        trainer = config["trainer"]
        _say(
            f"job {index}: {folder}: trainer num_nodes={trainer['num_nodes']} devices={trainer['devices']} "
            f"accelerator={trainer['accelerator']} strategy={trainer['strategy']}"
            + (f", sweep {dict(choices)}" if choices else "")
        )
    if executor == "slurm":
        folder = root / "logs" / "%j" if len(configs) > 1 else root / "logs"
        slurm = _slurm_executor(folder, resources, time_min, script_only=True)
        if len(configs) > 1:
            slurm.parameters["map_count"] = len(configs)
        print(slurm._make_submission_file_text(slurm._submitit_command_str, "dry-run"))
    else:
        _say(
            f"local: {resources.gpus} process(es) of `{shlex.quote(sys.executable)} -m submitit.core._submit "
            f"{root}/logs` on this machine"
        )
    _say("dry run: nothing was submitted")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        sys.exit(launch(sys.argv[1:] if argv is None else argv))
    except (LaunchError, ValueError) as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        sys.exit(2)
