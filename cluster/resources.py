"""What a job asks for: nodes, processes (GPUs) per node and SLURM options; presets; checks.

The Lightning Trainer's ``num_nodes``, ``devices``, ``accelerator``, ``strategy`` and cluster plugin are
derived here from the same two numbers that size the SLURM allocation (``--nodes``, ``--gpus``: one
task per GPU, as in DINO/ConvNeXt's ``run_with_submitit.py``), so the two can never disagree.
"""

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

__all__ = ["PRESET_DIR", "Resources", "check_partition", "list_presets", "load_preset", "parse_time", "slurm_available"]

#: Cluster presets: ``cluster/<name>.yaml``, keys named like the launcher's options.
PRESET_DIR = Path(__file__).resolve().parent


def parse_time(value: str) -> int:
    """A SLURM time limit in minutes: ``90``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"--time {value!r}: use minutes, HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        total = int(days) * 24 * 60 + hours * 60 + minutes + seconds / 60
    elif third is not None:  # HH:MM:SS
        total = int(first) * 60 + int(second) + int(third) / 60
    elif second is not None:  # MM:SS
        total = int(first) + int(second) / 60
    else:
        total = int(first)
    minutes_total = int(-(-total // 1))  # round up: never ask for less than given
    if minutes_total < 1:
        raise ValueError(f"--time {value!r} is shorter than a minute")
    return minutes_total


@dataclass
class Resources:
    """The resources of one job (each element of a sweep gets the same).

    Args:
        nodes: nodes of the allocation.
        gpus: GPUs per node = training processes per node (with ``cpu``: CPU processes per node).
        cpu: a CPU job: no GPUs requested, Lightning's ``accelerator=cpu`` with gloo.
        partition: SLURM partition (the cluster's default when unset).
        account: SLURM account to charge.
        qos: SLURM quality of service.
        time: time limit (minutes or ``[D-]HH:MM:SS``); unset: the partition's limit.
        constraint: SLURM node features, e.g. ``a100``.
        mem: memory per node, e.g. ``480G`` (SLURM's ``--mem``).
        cpus_per_task: CPUs per process (feeds the data loader workers).
        gpu_type: GPU type in the GRES request (``--gpus-per-node=<type>:<n>``).
        exclusive: ask for whole nodes.
        mail: e-mail address for SLURM notifications.
        mail_type: when to mail (SLURM's ``--mail-type``).
        job_name: SLURM job name; also names the job folder.
        signal_delay: seconds before the time limit at which the checkpoint signal comes.
        max_timeouts: requeues allowed after reaching the time limit (preemptions are not counted).
        max_failures: automatic requeues after a rank died (node failure, killed process, lost peer).
        setup: shell lines run in the sbatch script before the job (``module load ...``).
        array_parallelism: sweep elements allowed to run at once.
    """

    nodes: int = 1
    gpus: int = 1
    cpu: bool = False
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: Optional[str] = None
    constraint: Optional[str] = None
    mem: Optional[str] = None
    cpus_per_task: Optional[int] = None
    gpu_type: Optional[str] = None
    exclusive: bool = False
    mail: Optional[str] = None
    mail_type: str = "END,FAIL"
    job_name: str = "shufflenet-pl"
    signal_delay: int = 120
    max_timeouts: int = 3
    max_failures: int = 3
    setup: List[str] = field(default_factory=list)
    array_parallelism: int = 256

    def __post_init__(self) -> None:
        # Presets are YAML: check the types here, with the option's name, not deep in submitit.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "setup":
                continue
            kind = int if f.type in (int, Optional[int]) else bool if f.type is bool else None
            if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"--{f.name.replace('_', '-')} must be an integer, got {value!r}")
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"--{f.name.replace('_', '-')} must be true or false, got {value!r}")
        if not isinstance(self.setup, list) or not all(isinstance(line, str) for line in self.setup):
            raise ValueError(f"--setup must be a list of shell lines, got {self.setup!r}")
        for name in ("nodes", "gpus", "array_parallelism"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ValueError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if self.signal_delay < 0 or self.max_timeouts < 0 or self.max_failures < 0:
            raise ValueError("--signal-delay, --max-timeouts and --max-failures must be >= 0")
        if self.time is not None:
            parse_time(self.time)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.job_name):
            raise ValueError(f"--job-name {self.job_name!r}: use letters, digits, '.', '_' and '-'")

    @property
    def processes(self) -> int:
        """World size: one process per GPU (or per CPU slot) on every node."""
        return self.nodes * self.gpus

    @property
    def time_minutes(self) -> Optional[int]:
        return None if self.time is None else parse_time(self.time)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def trainer_settings(self, executor: str) -> Dict[str, Any]:
        """The Trainer's share of the resources, for the job's resolved config."""
        settings: Dict[str, Any] = {
            "num_nodes": self.nodes,
            "devices": self.gpus,
            "accelerator": "cpu" if self.cpu else "gpu",
            "strategy": "ddp" if self.processes > 1 else "auto",
        }
        if executor == "slurm":
            # submitit owns requeue (USR2 + checkpoint()); Lightning's own (USR1) must stay off.
            settings["plugins"] = [
                {
                    "class_path": "lightning.pytorch.plugins.environments.SLURMEnvironment",
                    "init_args": {"auto_requeue": False},
                }
            ]
        elif self.processes > 1:
            # submitit's local executor starts the processes; Lightning joins them (LOCAL_RANK, MASTER_*).
            settings["plugins"] = [{"class_path": "lightning.pytorch.plugins.environments.LightningEnvironment"}]
        return settings

    def slurm_parameters(self, default_time_minutes: int) -> Dict[str, Any]:
        """Parameters of ``submitit.SlurmExecutor.update_parameters``."""
        params: Dict[str, Any] = {
            "job_name": self.job_name,
            "nodes": self.nodes,
            "ntasks_per_node": self.gpus,
            "time": self.time_minutes or default_time_minutes,
            "signal_delay_s": self.signal_delay,
            "array_parallelism": self.array_parallelism,
            "stderr_to_stdout": False,
        }
        if not self.cpu:
            params["gpus_per_node"] = f"{self.gpu_type}:{self.gpus}" if self.gpu_type else self.gpus
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "mem": self.mem,
            "cpus_per_task": self.cpus_per_task,
            "mail_user": self.mail,
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        if self.mail:
            params["mail_type"] = self.mail_type
        if self.exclusive:
            params["exclusive"] = True
        if self.setup:
            params["setup"] = list(self.setup)
        return params


# --- presets -------------------------------------------------------------------------------------

_FIELDS = {f.name for f in fields(Resources)}


def list_presets() -> List[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> Dict[str, Any]:
    """Read a preset: ``cluster/<name>.yaml`` or a YAML file; its keys are launcher option names
    (``cpus-per-task`` or ``cpus_per_task``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"--preset {name_or_path!r}: no file {path}; presets here: {', '.join(list_presets()) or 'none'}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"preset {path}: expected a mapping of option: value")
    preset = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(preset) - _FIELDS - {"cluster"})
    if unknown:
        raise ValueError(
            f"preset {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS | {'cluster'}))}"
        )
    return preset


# --- what the cluster can give -------------------------------------------------------------------


def slurm_available(timeout_s: float = 15) -> Optional[str]:
    """``None`` if SLURM's controller answers, else why not (one line)."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on the PATH"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo did not answer ({err})"
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        return f"sinfo failed: {message[-1] if message else 'exit ' + str(result.returncode)}"
    return None


def _gpus_of(gres: str, gpu_type: Optional[str]) -> int:
    """GPUs of one node from sinfo's GRES column, e.g. ``gpu:a100:8(S:0-1)`` -> 8."""
    total = 0
    for kind, count in re.findall(r"gpu(?::([^:(,]+))?:(\d+)", gres):
        if gpu_type is None or kind == gpu_type:
            total += int(count)
    return total


def check_partition(resources: Resources, timeout_s: float = 15) -> Dict[str, Any]:
    """Check that the partition can give ``resources``; raise ``ValueError`` saying what it can give.

    Returns the partition's name, time limit in minutes (``None``: no limit) and the CPUs of its
    smallest node that fits.
    """
    result = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%P|%N|%c|%G|%l"], capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise ValueError(f"sinfo failed: {result.stderr.strip()}")
    nodes: Dict[str, Dict[str, Dict[str, Any]]] = {}
    default = None
    limits: Dict[str, Optional[int]] = {}
    for line in result.stdout.splitlines():
        partition, node, cpus, gres, limit = line.split("|")
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        nodes.setdefault(partition, {})[node] = {"cpus": int(cpus), "gpus": _gpus_of(gres, resources.gpu_type)}
        limits[partition] = None if limit in ("infinite", "UNLIMITED", "n/a") else parse_time(limit)
    name = resources.partition or default
    if name is None or name not in nodes:
        known = ", ".join(sorted(nodes)) or "none"
        raise ValueError(f"--partition {name!r} does not exist on this cluster (partitions: {known})")
    members = nodes[name].values()
    if resources.cpu:
        slots = resources.gpus * (resources.cpus_per_task or 1)
        fitting = [n for n in members if n["cpus"] >= slots]
        if len(fitting) < resources.nodes:
            most = max(n["cpus"] for n in members)
            raise ValueError(
                f"partition {name!r} cannot give {resources.nodes} node(s) with {resources.gpus} process(es) x "
                f"{resources.cpus_per_task or 1} CPU(s): {len(fitting)} node(s) fit, the largest has {most} CPUs; "
                f"lower --gpus/--cpus-per-task or --nodes"
            )
    else:
        fitting = [n for n in members if n["gpus"] >= resources.gpus]
        if len(fitting) < resources.nodes:
            most = max(n["gpus"] for n in members)
            kind = f" {resources.gpu_type}" if resources.gpu_type else ""
            hint = (
                "it has no GPUs: pick a GPU --partition, or --cpu for a CPU job"
                if most == 0
                else f"use --gpus <= {most} and more --nodes"
            )
            raise ValueError(
                f"--gpus {resources.gpus}: partition {name!r} has {len(fitting)} node(s) with {resources.gpus}"
                f"{kind} GPUs or more (need {resources.nodes}; nodes have at most {most}); {hint}"
            )
    # The smallest node the job may land on: what --cpus-per-task can be derived from.
    cpus_per_node = min(n["cpus"] for n in fitting) if fitting else None
    return {"partition": name, "time_limit_min": limits.get(name), "cpus_per_node": cpus_per_node}
