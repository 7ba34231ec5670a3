"""The submitit callable: one training run in its job folder.

The pattern of DINO's and ConvNeXt's ``run_with_submitit.py``: a picklable object whose ``__call__``
imports the training code lazily and runs it on every rank, and whose ``checkpoint()`` (called by
submitit at preemption or time limit) returns the same job again, which resumes from ``last.ckpt``.
It knows the folder, the ranks and the environment, not how to train: it runs
``shufflenet-pl fit --config <job folder>/config.yaml`` in-process.
"""

import json
import os
import random
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["TrainingJob", "read_json", "write_json_atomic"]


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically in its folder, so a reader never sees half a file."""
    from shufflenet_pl.files import write_text

    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _last_error_line(env: Any) -> Optional[str]:
    """The last ``error: ...`` line the CLI printed to this rank's log (the CLI exits with it)."""
    try:
        sys.stderr.flush()
        text = Path(env.paths.stderr).read_text(errors="replace")
    except Exception:  # no log file (run outside submitit), unreadable: the generic message stays
        return None
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else None


class TrainingJob:
    """Train with the resolved config of a job folder, resuming from its ``last.ckpt`` if present.

    Args:
        folder: the job folder (``config.yaml``, ``launch.json``, ``checkpoints/``, ``wandb/``...).
        wandb_run_id: the job's W&B run id; the same for every restart of the job.
        executor: ``slurm`` or ``local``, as submitted.
        max_failures: times a SLURM job requeues itself when a rank died (a lost peer); 0: never.
        restart_from_scratch: when every checkpoint of the folder fails to verify, start from step 0
            (and remove them) instead of refusing.
    """

    # Class-level default: a job pickled by an earlier version (submitit re-reads the pickle at each
    # requeue) has no such attribute and falls back to it.
    max_failures: int = 3
    restart_from_scratch: bool = False

    def __init__(
        self,
        folder: str,
        wandb_run_id: str,
        executor: str,
        max_failures: int = 3,
        restart_from_scratch: bool = False,
    ) -> None:
        self.folder = folder
        self.wandb_run_id = wandb_run_id
        self.executor = executor
        self.max_failures = max_failures
        self.restart_from_scratch = restart_from_scratch

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.folder) / "checkpoints" / "last.ckpt"

    def __call__(self) -> Dict[str, Any]:
        import submitit

        from .requeue import PREEMPTION, Preempted

        PREEMPTION.install()  # first: a signal from now on waits for a batch boundary
        env = submitit.JobEnvironment()
        folder = Path(self.folder)
        self._export_environment(env)
        from shufflenet_pl.joblock import FolderInUse, lock_holder

        holder = lock_holder(self.checkpoint_path.parent)
        if holder is not None:  # another copy of this job trains here: touch nothing, not even bad files
            raise FolderInUse(
                f"{self.checkpoint_path.parent} is in use by a running trainer: pid {holder.get('pid')} on "
                f"{holder.get('host')} (since {holder.get('started')}); this copy of the job does not start"
            )
        resume = self.resume_checkpoint(remove_discarded=env.global_rank == 0)
        host = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        restart = f", restart {os.environ['SLURM_RESTART_COUNT']}" if "SLURM_RESTART_COUNT" in os.environ else ""
        print(
            f"[shufflenet-pl] job {env.job_id}: rank {env.global_rank}/{env.num_tasks} (node "
            f"{env.node}/{env.num_nodes}, "
            f"local rank {env.local_rank}) on {host}{restart}: "
            + (f"resuming from {resume}" if resume else "starting from the beginning"),
            file=sys.stderr,
            flush=True,
        )
        if read_json(folder / "launch.json").get("accelerator") == "gpu":
            from shufflenet_pl.cuda_driver import usable_gpu_problem

            problem = usable_gpu_problem()  # a driver too old for torch's CUDA: say so, not a device error
            if problem is not None:
                self._mark_failed(env)
                raise RuntimeError(problem)
        if env.global_rank == 0:
            self._record_attempt(env, resume)

        args = ["fit", "--config", str(folder / "config.yaml")]
        if resume is not None:
            args += ["--ckpt_path", str(resume)]
        from shufflenet_pl.cli import build_cli

        # The job's own sys.argv is submitit's; the training arguments are given explicitly.
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        try:
            cli = build_cli(args, save_config=False)  # the job folder's config.yaml is the one config
        except SystemExit as exit_:
            if exit_.code in (0, None):
                raise
            # The CLI printed why (a bad value, a missing dataset, a full disk) above; make it a failure
            # that submitit records, with that line, so the launcher can name it.
            line = _last_error_line(env)
            self._mark_failed(env)
            raise RuntimeError(
                f"shufflenet-pl fit stopped: {line}"
                if line
                else f"shufflenet-pl fit stopped with exit status {exit_.code}; its message is above in this log"
            ) from None
        except Preempted as stop:
            _close_wandb_run()
            if PREEMPTION.requeue_requested:
                print(
                    f"[shufflenet-pl] rank {env.global_rank}: stopped at global step {stop.global_step} for requeue",
                    file=sys.stderr,
                    flush=True,
                )
                PREEMPTION.hand_over()  # rank 0: submitit calls checkpoint(), requeues and exits
                sys.exit(0)  # other ranks: leave; SLURM (or the local controller) restarts all of them
            # SIGTERM alone (scancel; preemption without a user signal, which SLURM requeues itself).
            raise RuntimeError(
                f"stopped by SIGTERM at global step {stop.global_step} with {stop.checkpoint} saved; "
                f"continue with: python launch.py --resume {self.folder}"
            ) from None
        except Exception as err:
            if self._requeue_after_lost_peer(env, err):
                sys.exit(1)  # no error result: the requeued job writes this rank's result
            if not _is_lost_peer(err):
                self._mark_failed(env)
            raise
        return self._result(cli.trainer, env.global_rank)

    def _requeue_after_lost_peer(self, env: Any, err: BaseException) -> bool:
        """A rank died (node failure, kill -9, out of memory): the survivors see their collective fail.
        One of them requeues the SLURM job, at most ``max_failures`` times; it resumes from the newest
        complete checkpoint. True if requeued."""
        if self.executor != "slurm" or not _is_lost_peer(err):
            return False
        job_id = env.job_id
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        folder = Path(self.folder)
        failed = sorted(folder.glob(f".failed-{job_id}-{restart}-rank*"))
        if failed:  # the peer stopped on an error of its own (a full disk, a bad file): a requeue repeats it
            rank = failed[0].name.rsplit("rank", 1)[-1]
            print(
                f"[shufflenet-pl] rank {env.global_rank}: rank {rank} stopped on an error (see its log); not requeued",
                file=sys.stderr,
                flush=True,
            )
            return False
        _close_wandb_run()  # write this rank's W&B rows now: a requeue sends SIGTERM to W&B's service too
        try:  # one requeue per failure, whichever survivor gets here first
            (folder / f".requeue-{job_id}-{restart}").open("x").close()
        except FileExistsError:
            return True
        record = read_json(folder / "launch.json")
        failures: List[Dict[str, Any]] = record.setdefault("failures", [])
        requeued = [failure for failure in failures if failure.get("requeued", True)]
        failure = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "job_id": job_id,
            "restart": int(restart),
            "seen_by_rank": env.global_rank,
            "error": f"{type(err).__name__}: {err}".splitlines()[0][:300],
        }
        if len(requeued) >= self.max_failures:
            # The refused failure is recorded too: launch.json tells why the job stopped.
            failures.append({**failure, "requeued": False, "limit": self.max_failures})
            write_json_atomic(folder / "launch.json", record)
            print(
                f"[shufflenet-pl] rank {env.global_rank}: a peer was lost and the job already failed "
                f"{len(requeued)} time(s) (--max-failures {self.max_failures}): not requeued",
                file=sys.stderr,
                flush=True,
            )
            return False
        failures.append(failure)
        write_json_atomic(folder / "launch.json", record)
        print(
            f"[shufflenet-pl] rank {env.global_rank}: a peer was lost ({type(err).__name__}); requeueing job {job_id} "
            f"(failure {len(requeued) + 1} of at most {self.max_failures}); it resumes from the newest checkpoint",
            file=sys.stderr,
            flush=True,
        )
        import subprocess

        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            print(
                f"[shufflenet-pl] scontrol requeue {job_id} failed: {result.stderr.strip()}",
                file=sys.stderr,
                flush=True,
            )
            return False
        return True

    def _mark_failed(self, env: Any) -> None:
        """Leave word that this rank stopped on an error, not a kill: its peers then do not requeue."""
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        try:
            (Path(self.folder) / f".failed-{env.job_id}-{restart}-rank{env.global_rank}").touch()
        except OSError:  # a full disk: the peers requeue, and the requeued job meets the same error
            pass

    def resume_checkpoint(self, remove_discarded: bool = True) -> Optional[Path]:
        """``last.ckpt`` if it verifies, else the newest good checkpoint of the folder (each bad one
        named in a line; the discarded timeline removed when ``remove_discarded``); ``None`` when the
        folder has none.

        Raises:
            NoGoodCheckpoint: every checkpoint failed and not ``restart_from_scratch``.
        """
        from shufflenet_pl.checkpoints import choose_checkpoint

        choice = choose_checkpoint(
            self.checkpoint_path,
            restart_from_scratch=getattr(self, "restart_from_scratch", False),
            remove_discarded=remove_discarded,
        )
        return choice.path

    def checkpoint(self) -> Any:
        """Called by submitit at preemption/timeout: the same job, which resumes from ``last.ckpt``."""
        import submitit

        return submitit.helpers.DelayedSubmission(
            TrainingJob(self.folder, self.wandb_run_id, self.executor, self.max_failures, self.restart_from_scratch)
        )

    def _export_environment(self, env: Any) -> None:
        """Environment shared by all ranks: the W&B run and job folder contract, and (local executor)
        what Lightning's default cluster environment reads to join the processes submitit started."""
        os.environ["SHUFFLENET_PL_JOB_DIR"] = self.folder
        os.environ["WANDB_RUN_ID"] = self.wandb_run_id
        os.environ["WANDB_RESUME"] = "allow"
        os.environ["WANDB_DIR"] = self.folder
        tasks_per_node = max(1, env.num_tasks // max(1, env.num_nodes))
        if self.executor == "local":
            os.environ["LOCAL_RANK"] = str(env.local_rank)
            os.environ["NODE_RANK"] = "0"
            os.environ["MASTER_ADDR"] = "127.0.0.1"
            os.environ.setdefault("MASTER_PORT", str(random.Random(env.job_id).randint(20000, 60000)))
        # As Lightning's own launchers do: one process per device should not start one thread per core.
        if "OMP_NUM_THREADS" not in os.environ:
            cpus = os.environ.get("SLURM_CPUS_PER_TASK")
            threads = int(cpus) if cpus else max(1, len(os.sched_getaffinity(0)) // tasks_per_node)
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)

    def _record_attempt(self, env: Any, resume: Optional[Path]) -> None:
        path = Path(self.folder) / "launch.json"
        record = read_json(path)
        attempts: List[Dict[str, Any]] = record.setdefault("attempts", [])
        attempts.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "job_id": env.job_id,
                "restart": len(attempts),
                "hosts": list(env.hostnames),
                "resumed_from": str(resume) if resume else None,
            }
        )
        write_json_atomic(path, record)

    def _result(self, trainer: Any, global_rank: int) -> Dict[str, Any]:
        """What the job returns (and rank 0 writes to ``result.json``): steps, metrics, checkpoints."""
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
        callback = trainer.checkpoint_callback
        result = {
            "global_rank": global_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "metrics": metrics,
            "best_checkpoint": getattr(callback, "best_model_path", None) or None,
            "last_checkpoint": str(self.checkpoint_path) if self.checkpoint_path.exists() else None,
            "wandb_run_id": self.wandb_run_id,
        }
        if global_rank == 0:
            write_json_atomic(Path(self.folder) / "result.json", result)
        return result


#: What gloo/NCCL/the TCP store say when the process at the other end is gone.
_LOST_PEER = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "connection closed",
    "NCCL communicator was aborted",
    "Socket Timeout",
    "recvValue failed",
    "Connection refused",
)


def _is_lost_peer(err: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistNetworkError", ())) or isinstance(err, getattr(dist, "DistBackendError", ())):
        return True
    text = f"{err}"
    return isinstance(err, (RuntimeError, ConnectionError)) and any(s.lower() in text.lower() for s in _LOST_PEER)


def _close_wandb_run() -> None:
    """Flush and close this process's W&B run before the requeue kills it (the restarted job continues
    the same run id in a new offline run folder). Never raises: the requeue matters more. (A SIGTERM
    to the job, as at SLURM preemption without ``send_user_signal``, stops W&B's service process.)"""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    try:
        run.mark_preempting()
        run.finish()
    except Exception as err:  # the service is gone: what it had not written is lost, the run id is not
        print(
            f"[shufflenet-pl] could not close the W&B run cleanly ({type(err).__name__}: {err})",
            file=sys.stderr,
            flush=True,
        )
