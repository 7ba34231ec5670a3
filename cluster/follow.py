"""Following a submitted job: rank 0's log as it grows, the end of the job, and why it failed (the
killed rank named first, from srun's own lines, with the last lines of its log)."""

import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import LaunchError

__all__ = ["raise_if_failed", "wait_for"]

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


def _process_exited(job: Any) -> bool:
    """Whether the process of a local job (submitit's ``LocalJob``) has ended, by its own account."""
    return job.get_info().get("jobState") in ("FINISHED", "INTERRUPTED")


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
            if _process_exited(job):
                break
        elif _state(job) in _TERMINAL_STATES:
            time.sleep(poll_s)  # result files land right after the state changes
            break
        time.sleep(poll_s)
    if follower:
        follower.poll()
    raise_if_failed(job)


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


def raise_if_failed(job: Any) -> None:
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
