"""W&B logging for shufflenet-pl: offline unless credentials exist, one run per (requeued) job.

wandb does not fall back to offline mode by itself: without an API key ``wandb.init`` raises
``UsageError`` and, on a terminal, waits at a login prompt forever. So the mode is decided here,
before ``wandb.init``: an explicit ``mode``, else ``WANDB_MODE``, else ``online`` when credentials
are found (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a ``.netrc`` entry for the W&B host),
else ``offline``.

Inside a job of ``launch.py`` the launcher sets ``WANDB_RUN_ID`` (the same after a requeue),
``WANDB_DIR`` and ``SHUFFLENET_PL_JOB_DIR`` (which holds ``launch.json``): the run id, the folder and
the job's resources (``launch.json`` and the ``SLURM_*`` variables) come from there, so a preempted
and requeued job is one W&B run. Outside a job every run gets a fresh id.
"""

import json
import netrc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn

from .metrics import define_wandb_metrics

__all__ = [
    "JOB_DIR_ENV",
    "OfflineFirstWandbLogger",
    "WandbLogger",
    "apply_cli_defaults",
    "find_wandb_credentials",
    "job_resources",
    "remove_wandb_loggers",
    "resolve_wandb_mode",
    "run_context",
]

JOB_DIR_ENV = "SHUFFLENET_PL_JOB_DIR"
DEFAULT_PROJECT = "shufflenet-pl"
_DEFAULT_BASE_URL = "https://api.wandb.ai"
_MODES = ("online", "offline", "disabled")
# Old spellings that wandb still accepts in WANDB_MODE.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
# SLURM variables that describe the job's resources and identity (``SLURM_`` prefix dropped, lower case).
_SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NAME",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_ACCOUNT",
    "SLURM_JOB_QOS",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_GPUS_ON_NODE",
    "SLURM_GPUS_PER_NODE",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_NODELIST",
    "SLURM_RESTART_COUNT",
)


def find_wandb_credentials() -> Optional[str]:
    """Where wandb would find credentials for the W&B host, without importing or starting wandb.

    Returns:
        The source (``"WANDB_API_KEY"``, ``"WANDB_IDENTITY_TOKEN_FILE"`` or the ``.netrc`` path), or
        ``None`` when there are none.
    """
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or _DEFAULT_BASE_URL).netloc
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return str(path) if entry and entry[2] else None


def resolve_wandb_mode(mode: Optional[str] = None) -> Tuple[str, str]:
    """The W&B mode to run in, and why.

    Args:
        mode: ``online``, ``offline`` or ``disabled`` from the config; ``None`` decides from
            ``WANDB_MODE`` (or ``WANDB_DISABLED``), then from whether credentials exist.

    Returns:
        ``(mode, reason)``, e.g. ``("offline", "no W&B API key in WANDB_API_KEY or ~/.netrc")``.

    Raises:
        ValueError: ``mode`` or ``WANDB_MODE`` is not a W&B mode.
    """
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(f"trainer.logger.mode={mode!r}: choose one of {', '.join(_MODES)}")
        return mode, "trainer.logger.mode"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        env_mode = _MODE_ALIASES.get(env_mode, env_mode)
        if env_mode not in _MODES:
            raise ValueError(f"WANDB_MODE={os.environ['WANDB_MODE']!r}: choose one of {', '.join(_MODES)}")
        return env_mode, "WANDB_MODE"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled", "WANDB_DISABLED"
    source = find_wandb_credentials()
    if source is None:
        return "offline", "no W&B API key in WANDB_API_KEY or ~/.netrc"
    return "online", f"credentials from {source}"


def _git_info() -> Dict[str, Any]:
    """Commit of the shufflenet-pl checkout and whether tracked files differ from it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {}  # not a git checkout (an installed package), or no git
    return {"commit": commit, "dirty": dirty}


def job_resources() -> Dict[str, Any]:
    """The job's resources: ``launch.json`` from ``$SHUFFLENET_PL_JOB_DIR`` (written by ``launch.py``)
    under ``launch`` and the ``SLURM_*`` variables under ``slurm``; empty outside a job."""
    resources: Dict[str, Any] = {}
    job_dir = os.environ.get(JOB_DIR_ENV)
    if job_dir:
        path = Path(job_dir) / "launch.json"
        try:
            launch = json.loads(path.read_text())
            resources["launch"] = {"job_dir": job_dir, **launch} if isinstance(launch, dict) else {"job_dir": job_dir}
        except (OSError, ValueError) as err:
            # Tracking must not stop a training job: say what is missing and go on.
            rank_zero_warn(
                f"{JOB_DIR_ENV}={job_dir}: cannot read {path} ({err}); the W&B run config will lack the job's resources"
            )
            resources["launch"] = {"job_dir": job_dir}
    slurm = {name[len("SLURM_") :].lower(): os.environ[name] for name in _SLURM_VARS if name in os.environ}
    if slurm:
        resources["slurm"] = slurm
    return resources


def run_context() -> Dict[str, Any]:
    """What a W&B run records besides the CLI config: git commit, job resources, library versions."""
    import lightning
    import torchvision

    from .. import __version__

    context: Dict[str, Any] = {"git": _git_info(), **job_resources()}
    context["versions"] = {
        "shufflenet_pl": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "python": sys.version.split()[0],
    }
    return {key: value for key, value in context.items() if value}


class OfflineFirstWandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` with shufflenet-pl's defaults: offline without credentials, the run
    id and folder of the launcher's job, the job's resources and the git commit in the run config,
    best-accuracy summaries and an images-seen axis (see :mod:`shufflenet_pl.tracking.metrics`).

    Only rank 0 creates a run (Lightning's ``rank_zero_experiment``); other ranks log nothing.

    Args:
        project: W&B project; ``None`` reads ``WANDB_PROJECT``, else ``shufflenet-pl``.
        entity: W&B user or team; ``None`` uses ``WANDB_ENTITY`` or your default entity.
        name: run name shown in the W&B UI; ``None`` lets W&B pick one.
        group: group runs together, e.g. the four widths of a sweep.
        tags: tags of the run.
        notes: a longer description of the run.
        job_type: kind of run; ``None`` uses the CLI subcommand (``fit``, ``validate``...).
        mode: ``online``, ``offline`` or ``disabled``; ``None`` uses ``WANDB_MODE``, else ``online``
            when W&B credentials exist and ``offline`` (files only, ``wandb sync`` later) when not.
        save_dir: folder that receives ``wandb/``; ``None`` uses ``WANDB_DIR``, else the trainer's
            ``default_root_dir`` (set by the CLI), else the working directory.
        id: run id, to continue a run; ``None`` uses ``WANDB_RUN_ID`` (set per job by ``launch.py``),
            else a fresh id.
        log_model: upload checkpoints as W&B artifacts (``True``: at the end, ``"all"``: each one).
        **kwargs: Lightning's ``WandbLogger`` arguments (``offline=True`` means ``mode="offline"``,
            ``dir`` means ``save_dir``, ``version`` means ``id``) and ``wandb.init``'s (``settings``...).
    """

    def __init__(
        self,
        project: Optional[str] = None,
        entity: Optional[str] = None,
        name: Optional[str] = None,
        group: Optional[str] = None,
        tags: Optional[List[str]] = None,
        notes: Optional[str] = None,
        job_type: Optional[str] = None,
        mode: Optional[Literal["online", "offline", "disabled"]] = None,
        save_dir: Optional[str] = None,
        id: Optional[str] = None,
        log_model: Union[bool, Literal["all"]] = False,
        **kwargs: Any,
    ) -> None:
        # Lightning's spellings of the same things, which would bypass the mode decision.
        if kwargs.pop("offline", False) and mode is None:
            mode = "offline"
        save_dir = save_dir or kwargs.pop("dir", None)
        id = id or kwargs.pop("version", None)
        self.mode, self.mode_reason = resolve_wandb_mode(mode)
        self._save_dir_given = bool(save_dir or os.environ.get("WANDB_DIR"))
        super().__init__(
            project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=entity,
            name=name,
            group=group,
            tags=list(tags) if tags else None,
            notes=notes,
            job_type=job_type,
            mode=self.mode,
            save_dir=os.fspath(save_dir or os.environ.get("WANDB_DIR") or "."),
            id=id or os.environ.get("WANDB_RUN_ID") or None,
            log_model=log_model,
            **kwargs,
        )
        # Lightning passes anonymous=None, which only earns a warning from wandb.
        self._wandb_init.pop("anonymous", None)
        # Rows logged by this process, to log again if W&B's service dies before writing them.
        self._rows: List[Tuple[Dict[str, Any], Optional[int]]] = []
        self._reopened = False

    def apply_cli_defaults(self, default_root_dir: Optional[str], job_type: Optional[str]) -> None:
        """Fill what the config left open from the CLI: the folder (``trainer.default_root_dir``) and
        the job type (the subcommand). Call before the run starts."""
        if self._experiment is not None:
            return
        if not self._save_dir_given and default_root_dir:
            self._save_dir = self._wandb_init["dir"] = os.fspath(default_root_dir)
        if not self._wandb_init.get("job_type") and job_type:
            self._wandb_init["job_type"] = job_type

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run (created on first use, on rank 0 only)."""
        if self._experiment is None and getattr(self, "_attach_id", None) is None:
            self._wandb_init["config"] = {**run_context(), **(self._wandb_init.get("config") or {})}
            if self._save_dir:
                os.makedirs(self._save_dir, exist_ok=True)
            run = super().experiment
            define_wandb_metrics(run, images_seen_axis=False)
            if self.mode == "offline":
                run_folder = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>/files
                print(
                    f"shufflenet-pl: W&B is offline ({self.mode_reason}): run {run.id} is saved in {run_folder}; "
                    f"upload it later with `wandb sync {run_folder}`",
                    file=sys.stderr,
                )
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        row = (dict(metrics), step)
        self._rows.append(row)
        try:
            super().log_metrics(*row)
        except ConnectionError as err:  # ConnectionResetError, BrokenPipeError: the service is gone
            if self._reopened or self._experiment is None:
                raise
            self._reopen(err)

    def _reopen(self, err: BaseException) -> None:
        """W&B's service process died: SLURM sends SIGTERM to every process of a job (``scancel``,
        preemption) and the service ends on it, losing what it had not written (wandb#9963). Start a
        new service on the same run id (a further offline folder; ``wandb sync`` merges them in start
        order) and log again every row that the dead one did not write, so the steps trained until the
        job's checkpoint are all in the run. Once per process: SIGTERM comes once."""
        import wandb

        from .reader import read_run_files

        self._reopened = True
        dead = self._experiment
        folder = Path(dead.dir).parent if getattr(dead, "dir", None) else None
        written = set()
        try:
            if folder is not None:
                written = {_row_key(row) for row in read_run_files(folder).history}
        except Exception:  # an unreadable tail: log everything again rather than lose it
            written = set()
        try:
            wandb.teardown()
        except Exception:  # it cannot reach the dead service; the new run replaces it below
            pass
        print(
            f"shufflenet-pl: W&B's service stopped ({type(err).__name__}); continuing run {dead.id} in a new "
            f"service and logging again what it had not written",
            file=sys.stderr,
            flush=True,
        )
        self._wandb_init["id"] = dead.id
        self._wandb_init["resume"] = "allow"
        self._experiment = None
        wandb.run = None  # the dead run; Lightning would attach to it
        _ = self.experiment
        for metrics, step in self._rows:
            if _row_key({**metrics, **({"trainer/global_step": step} if step is not None else {})}) not in written:
                super().log_metrics(metrics, step)


def _row_key(row: Mapping[str, Any]) -> Tuple[Any, ...]:
    """A logged row by its step and keys (W&B's own ``_step`` differs between the parts of a run)."""
    return (row.get("trainer/global_step"), tuple(sorted(k for k in row if not k.startswith("_"))))


def _is_wandb_logger_config(entry: Any) -> bool:
    class_path = getattr(entry, "class_path", None) if isinstance(entry, Namespace) else None
    if not class_path:
        return isinstance(entry, LightningWandbLogger)
    module_name, _, class_name = class_path.rpartition(".")
    try:
        import importlib

        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return class_name.endswith("WandbLogger")
    return isinstance(cls, type) and issubclass(cls, LightningWandbLogger)


def remove_wandb_loggers(trainer_config: Namespace) -> bool:
    """``--no-wandb``: drop the W&B loggers from a parsed ``trainer`` config. When none is left, a
    CSVLogger in ``trainer.default_root_dir`` takes their place, so metrics (throughput included)
    still reach the disk. Returns whether anything was dropped."""
    logger = trainer_config.get("logger")
    entries = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    kept = [entry for entry in entries if not _is_wandb_logger_config(entry)]
    if len(kept) == len(entries):
        return False
    if not kept:
        save_dir = trainer_config.get("default_root_dir") or "."
        kept = [
            Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=save_dir, name="lightning_logs"),
            )
        ]
    trainer_config.logger = kept if len(kept) > 1 else kept[0]
    return True


def apply_cli_defaults(trainer: L.Trainer, subcommand: Optional[str]) -> None:
    """Give the CLI's W&B loggers what their config left open: ``trainer.default_root_dir`` as the
    folder and the subcommand as the job type."""
    for logger in trainer.loggers:
        if isinstance(logger, OfflineFirstWandbLogger):
            logger.apply_cli_defaults(trainer.default_root_dir, subcommand)


#: Another name of the same class: job configs name ``shufflenet_pl.tracking.WandbLogger``.
WandbLogger = OfflineFirstWandbLogger


def __getattr__(name: str) -> Any:
    # The config saver is a callback (shufflenet_pl.callbacks); imported on first use from here, since
    # the callbacks import this package.
    if name == "RunConfigSaver":
        from ..callbacks.run_config import RunConfigSaver

        return RunConfigSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
