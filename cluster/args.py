"""``launch.py``'s command line: launcher options (preset, then command line), sweeps, and the
``--config`` files checked before anything else reads them."""

import argparse
import itertools
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .errors import LaunchError, say
from .resources import Resources, list_presets, load_preset

__all__ = ["build_parser", "check_configs", "label", "parse_args", "parse_sweeps", "sweep_args"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "experiment" / "demo.yaml"


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
            "exit status (--wait, and always on this machine): 0 the job finished, however often it was requeued;\n"
            "  1 it stopped without finishing (failed, cancelled, --max-failures or --max-timeouts reached);\n"
            "  2 a bad option or input, nothing submitted; 130 Ctrl-C (a SLURM job keeps running). Without --wait:\n"
            "  0 once submitted.\n"
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


def sweep_args(choices: Sequence[Tuple[str, str]]) -> List[str]:
    args: List[str] = []
    for key, value in choices:
        args += ["--config", value] if key == "config" else [f"--{key}", value]
    return args


def label(choices: Sequence[Tuple[str, str]]) -> str:
    parts = [Path(v).stem if k == "config" else f"{k.rsplit('.', 1)[-1]}={v}" for k, v in choices]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))[:80]


def check_configs(training_args: List[str]) -> List[str]:
    """Name a missing --config file before anything else; add the demo config when none is given."""
    from shufflenet_pl.input_checks import config_files

    given = config_files(training_args)
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
    say(f"no --config given: running the built-in demo ({shown})")
    return ["--config", str(DEFAULT_CONFIG), *training_args]


def _check_yaml(path: Path) -> None:
    """A config that is not YAML, named by its file and line (the check ``shufflenet-pl fit`` runs too)."""
    from shufflenet_pl.input_checks import check_yaml_file

    check_yaml_file(path)  # InputError: main() prints it
