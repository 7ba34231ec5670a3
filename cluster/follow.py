"""Following a submitted job to its end, across every requeue, whoever requeued it.

The launcher prints rank 0's training output as it grows and tells each fault in one line of its
own, from what the project can see: every rank's log (the job's own lines, submitit's, srun's) and
SLURM's account of the job and its nodes (``scontrol``, ``sinfo``). The noise of a stopping job
(srun's and slurmstepd's lines, W&B's traceback at exit) stays in the logs. The job has ended when
SLURM says so, not when result files appear: a job that SLURM requeues leaves the results of the
stopped attempt behind. A failed job is explained by the rank that died first and how, with the
last lines of its log.
"""

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, TextIO, Tuple

from .errors import LaunchError, say
from .slurm_state import JobState, job_state, node_states

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
#: Pending reasons of a job that simply waits its turn (a requeued job waits for ``BeginTime``).
_ORDINARY_WAIT = {"None", "BeginTime", "Priority", "Dependency", "JobArrayTaskLimit"}

#: The first line of every rank at every start: ``[shufflenet-pl] job 7: rank 1/2 (node 0/1, local
#: rank 1) on node1, restart 1: resuming from ...``.
_START = re.compile(
    r"\[shufflenet-pl\] job \S+: rank (?P<rank>\d+)/(?P<world>\d+) \(node \d+/\d+, local rank \d+\) "
    r"on (?P<host>[^\s,:]+)(?:, restart (?P<restart>\d+))?:"
)
_SIGNAL = re.compile(r"\[shufflenet-pl\] got signal (?P<signal>SIG\w+)")
_STOPPED_FOR_REQUEUE = re.compile(r"stopped at global step (?P<step>\d+) for requeue")
_STOPPED_BY_SIGTERM = re.compile(r"stopped by SIGTERM at global step (?P<step>\d+)")
_PEER_REQUEUE = re.compile(
    r"\[shufflenet-pl\] rank (?P<rank>\d+): a peer was lost \((?P<error>\w+)\); requeueing job \S+ "
    r"\(failure (?P<failure>\d+) of at most (?P<limit>\d+)\)"
)
_PEER_LIMIT = re.compile(
    r"\[shufflenet-pl\] rank (?P<rank>\d+): a peer was lost and the job already failed (?P<failures>\d+) "
    r"time\(s\) \(--max-failures (?P<limit>\d+)\): not requeued"
)
_PEER_ERROR = re.compile(r"\[shufflenet-pl\] rank \d+: rank (?P<rank>\d+) stopped on an error")
_SUBMITIT_CASE = re.compile(r"Caught signal (?P<signal>SIG\w+) on \S+: this job is (?P<case>timed-out|preempted)")
_SUBMITIT_REQUEUED = re.compile(r"Requeued job \S+ \((?P<left>\d+) remaining timeouts\)")
_SUBMITIT_NOT_REQUEUED = re.compile(r"Job not requeued because: (?P<why>.+?)\.?$")
#: srun's account of a task that ended badly, in the batch log: "srun: error: node2: task 1: Killed".
_SRUN_TASK_ERROR = re.compile(r"srun: error: (?P<host>\S+): tasks? (?P<ranks>[\d,-]+): (?P<how>.+)")
#: Lines that open a stop (a signal, a lost peer): what follows until the next start is shutdown noise.
_STOPPING = re.compile(r"\[shufflenet-pl\] (got signal |rank \d+: a peer was lost)")
#: SLURM's own lines in the batch log (srun, slurmstepd): the launcher tells what they mean.
_SLURM_LINE = re.compile(r"^(srun|slurmstepd(-\S+)?): ")


class _LineReader:
    """The complete lines a growing file gains between calls."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self, final: bool = False) -> List[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = b"" if final else lines.pop()
        return [line.decode(errors="replace") for line in lines if line or not final]


class _LogFollower:
    """Print what rank 0's log files gain, line by line, without SLURM's own lines, and nothing from a
    stop (a signal, a lost peer) to the job's next start: the launcher tells that stop itself."""

    def __init__(self, paths: Sequence[Path]) -> None:
        # stderr first: it holds the start line that ends a quiet stretch
        self.readers = [_LineReader(p) for p in sorted(paths, key=lambda p: p.suffix != ".err")]
        self.quiet = False

    def poll(self, final: bool = False) -> None:
        for reader in self.readers:
            stream: TextIO = sys.stderr if reader.path.suffix == ".err" else sys.stdout
            for line in reader.new_lines(final):
                if _START.search(line):
                    self.quiet = False
                elif _STOPPING.search(line):
                    self.quiet = True
                if not self.quiet and not _SLURM_LINE.match(line):
                    stream.write(line + "\n")
            stream.flush()


@dataclass
class _Attempt:
    """What the ranks' logs tell about one start of the job (restart 0, 1, ...)."""

    hosts: Dict[int, str] = field(default_factory=dict)
    world: int = 0
    signal: str = ""
    submitit_case: str = ""
    submitit_requeued: Optional[int] = None
    submitit_not_requeued: str = ""
    stop_step: Optional[int] = None
    #: (survivor rank, its error type, failure k, at most n) of the project's requeue after a lost rank
    peer_requeue: Optional[Tuple[int, str, int, int]] = None
    #: (survivor rank, failures so far, --max-failures) when the limit refused one more requeue
    peer_limit: Optional[Tuple[int, int, int]] = None
    peer_error_rank: Optional[int] = None
    srun: Dict[int, Tuple[str, str]] = field(default_factory=dict)
    lost_seen_at: float = 0.0


def _how(text: str) -> str:
    text = text.strip()
    return {"Killed": "killed by SIGKILL", "Terminated": "killed by SIGTERM"}.get(text, text[0].lower() + text[1:])


def _srun_entries(line: str) -> List[Tuple[int, str, str]]:
    """``[(rank, how, host)]`` of an srun error line about tasks."""
    match = _SRUN_TASK_ERROR.search(line)
    if not match:
        return []
    entries = []
    for part in match["ranks"].split(","):
        first, _, last = part.partition("-")
        for rank in range(int(first), int(last or first) + 1):
            entries.append((rank, _how(match["how"]), match["host"]))
    return entries


def _lost_rank(srun: Dict[int, Tuple[str, str]]) -> Optional[Tuple[int, str, str]]:
    """The rank that died first by srun's account: killed or crashed, before those that SLURM then
    terminated and those that exited on their own."""

    def weight(how: str) -> int:
        if how == "killed by SIGTERM":
            return 3
        if how.startswith("exited with exit code"):
            return 2
        return 1

    if not srun:
        return None
    rank, (how, host) = min(srun.items(), key=lambda item: (weight(item[1][0]), item[0]))
    return (rank, how, host) if weight(how) < 3 else None


def _lost_peer(attempt: _Attempt, survivor: int) -> Optional[Tuple[int, str, str]]:
    """The lost rank by srun's account, never the survivor that saw it go (which then exits itself)."""
    return _lost_rank({rank: entry for rank, entry in attempt.srun.items() if rank != survivor})


class _SlurmWatch:
    """Every rank's log and SLURM's state of one job, read at each poll; one line per fault."""

    def __init__(self, job: Any, folder: Optional[Path]) -> None:
        self.job = job
        self.job_id = str(job.job_id)
        self.folder = folder
        self.readers: Dict[int, List[_LineReader]] = {}
        for rank in range(job.num_tasks):
            task = job.task(rank) if job.num_tasks > 1 else job
            self.readers[rank] = [_LineReader(task.paths.stderr), _LineReader(task.paths.stdout)]
        self.restart_of_rank: Dict[int, int] = {}
        self.attempts: Dict[int, _Attempt] = {}
        self.told: Set[str] = set()
        self.restarts_seen = 0
        #: restarts SLURM counted that no line told yet, with the time they were seen
        self.requeued_at: Dict[int, float] = {}
        self.nodes: List[str] = []
        self.pending_since: Optional[float] = None
        self.unknown_polls = 0
        self.headline: Optional[str] = None
        #: nodes of the job whose slurmd stopped answering (a dead node: srun never hears of its ranks)
        self.unanswered: Set[str] = set()

    def _tell(self, key: str, message: str) -> None:
        if key not in self.told:
            self.told.add(key)
            say(message)

    def _attempt(self, restart: int) -> _Attempt:
        return self.attempts.setdefault(restart, _Attempt())

    def _read_logs(self, final: bool) -> None:
        for rank, readers in self.readers.items():
            for reader in readers:
                for line in reader.new_lines(final):
                    self._read_line(rank, line)

    def _read_line(self, rank: int, line: str) -> None:
        start = _START.search(line)
        if start:
            restart = int(start["restart"] or 0)
            self.restart_of_rank[rank] = restart
            attempt = self._attempt(restart)
            attempt.hosts[int(start["rank"])] = start["host"]
            attempt.world = int(start["world"])
            return
        attempt = self._attempt(self.restart_of_rank.get(rank, 0))
        for rank_lost, how, host in _srun_entries(line):
            attempt.srun.setdefault(rank_lost, (how, host))
        if (match := _SIGNAL.search(line)) and not attempt.signal:
            attempt.signal = match["signal"]
        if match := _STOPPED_FOR_REQUEUE.search(line) or _STOPPED_BY_SIGTERM.search(line):
            attempt.stop_step = int(match["step"])
        if match := _SUBMITIT_CASE.search(line):
            attempt.submitit_case = match["case"]
        if match := _SUBMITIT_REQUEUED.search(line):
            attempt.submitit_requeued = int(match["left"])
        if match := _SUBMITIT_NOT_REQUEUED.search(line):
            attempt.submitit_not_requeued = match["why"]
        if (match := _PEER_REQUEUE.search(line)) and attempt.peer_requeue is None:
            attempt.peer_requeue = (int(match["rank"]), match["error"], int(match["failure"]), int(match["limit"]))
            attempt.lost_seen_at = time.time()
        if (match := _PEER_LIMIT.search(line)) and attempt.peer_limit is None:
            attempt.peer_limit = (int(match["rank"]), int(match["failures"]), int(match["limit"]))
            attempt.lost_seen_at = time.time()
        if match := _PEER_ERROR.search(line):
            attempt.peer_error_rank = int(match["rank"])

    def _loss(self, attempt: _Attempt, survivor: int, error: str) -> str:
        lost = _lost_peer(attempt, survivor)
        on_silent_node = sorted(r for r, host in attempt.hosts.items() if host in self.unanswered and r != survivor)
        if lost is None and on_silent_node:
            rank = on_silent_node[0]
            return f"rank {rank} on {attempt.hosts[rank]} was lost ({attempt.hosts[rank]} does not respond)"
        if lost is None and attempt.world == 2:  # the one peer there is
            rank = 1 - survivor
            host = attempt.hosts.get(rank) or "its node"
            return f"rank {rank} on {host} was lost (rank {survivor} saw {error})"
        if lost is None:
            return f"a peer of rank {survivor} was lost (rank {survivor} saw {error})"
        rank, how, host = lost
        return f"rank {rank} on {host} was lost ({how})"

    def _tell_attempts(self, final: bool) -> None:
        """The faults that the logs tell: a planned requeue, a lost rank (requeued or refused)."""
        resume = f"continue with: python launch.py --resume {self.folder}" if self.folder else ""
        for restart, attempt in sorted(self.attempts.items()):
            where = f"job {self.job_id}" + (f" (restart {restart})" if restart else "")
            if attempt.submitit_requeued is not None:
                cause = "time limit" if attempt.submitit_case == "timed-out" else f"preemption signal {attempt.signal}"
                step = f"; it resumes from last.ckpt at global step {attempt.stop_step}" if attempt.stop_step else ""
                self._tell(f"requeue-{restart}", f"job {self.job_id} requeued ({cause}){step}")
            elif attempt.submitit_not_requeued:
                self._tell(
                    f"not-requeued-{restart}",
                    f"{where}: not requeued ({attempt.submitit_not_requeued})" + (f"; {resume}" if resume else ""),
                )
            waited = (
                final or time.time() - attempt.lost_seen_at > 10 or bool(self.unanswered & set(attempt.hosts.values()))
            )
            if attempt.peer_requeue and (waited or _lost_peer(attempt, attempt.peer_requeue[0])):
                survivor, error, failure, limit = attempt.peer_requeue
                self._tell(
                    f"requeue-{restart}",
                    f"{where}: {self._loss(attempt, survivor, error)}; the job requeued itself (failure "
                    f"{failure} of at most {limit}) and resumes from the newest checkpoint",
                )
            if attempt.peer_limit and (waited or _lost_peer(attempt, attempt.peer_limit[0])):
                survivor, failures, limit = attempt.peer_limit
                loss = self._loss(attempt, survivor, "its peer gone")
                limit_text = f"--max-failures {limit}, {failures} requeue(s) after a lost rank so far"
                self.headline = f"job {self.job_id} stopped: {loss}; the failure limit stopped it ({limit_text})" + (
                    f"; {resume}" if resume else ""
                )
                self._tell(
                    f"limit-{restart}", f"{where}: {loss}; not requeued: the failure limit is reached ({limit_text})"
                )
            if attempt.peer_error_rank is not None:
                self._tell(
                    f"error-{restart}",
                    f"{where}: rank {attempt.peer_error_rank} stopped on an error (its log says which); not requeued",
                )

    def _tell_slurm(self, state: JobState) -> None:
        """What SLURM's state adds: a requeue of its own, nodes that fail, a job that waits for nodes."""
        if state.state == "RUNNING" and state.nodes:
            self.nodes = state.nodes
        if state.state in ("RUNNING", "COMPLETING") and self.nodes:
            self.unanswered = {node.name for node in node_states(self.nodes).values() if node.unanswered}
        while state.restarts > self.restarts_seen:
            self.requeued_at[self.restarts_seen] = time.time()
            self.restarts_seen += 1
        for restart, since in sorted(self.requeued_at.items()):
            attempt = self._attempt(restart)
            told_by_logs = (
                attempt.submitit_requeued is not None
                or attempt.peer_requeue is not None
                or attempt.signal not in ("", "SIGTERM")  # submitit's signal: its "Requeued job" line follows
            )
            if f"requeue-{restart}" in self.told or (told_by_logs and time.time() - since < 15):
                continue  # the logs tell it (srun's line, a line not yet complete): told at a later poll
            down = [node.describe() for node in node_states(self.nodes).values() if node.unavailable]
            why = ": " + ", ".join(down) if down else " (preemption, or a node failure it recovered from)"
            step = f"; it resumes from last.ckpt at global step {attempt.stop_step}" if attempt.stop_step else ""
            self._tell(f"requeue-{restart}", f"job {self.job_id} requeued by SLURM{why}{step or ' and resumes'}")
        self.requeued_at = {r: t for r, t in self.requeued_at.items() if f"requeue-{r}" not in self.told}
        if state.state == "RUNNING" and self.nodes:
            for node in node_states(self.nodes).values():
                if node.unavailable:
                    self._tell(
                        f"node-{node.name}-{node.state}-{state.restarts}",
                        f"job {self.job_id}: {node.describe()}; SLURM requeues the job once it marks the node DOWN",
                    )
        told_requeues = all(f"requeue-{restart}" in self.told for restart in range(state.restarts))
        if state.state == "COMPLETING" and self.nodes and told_requeues:
            # A stopped attempt ends only when every node of the job confirms it: a lost node holds the job
            # until SLURM marks it DOWN (SlurmdTimeout).
            for node in node_states(self.nodes).values():
                if node.unavailable:
                    until = "; the stopped attempt ends once SLURM marks the node DOWN" if node.unanswered else ""
                    self._tell(
                        f"completing-{node.name}-{state.restarts}",
                        f"job {self.job_id} waits for {node.name}: {node.describe()}{until}",
                    )
        if state.state != "PENDING":
            self.pending_since = None
        elif state.restarts:
            self.pending_since = self.pending_since or time.time()
            waited_long = time.time() - self.pending_since > 20  # longer than a requeue's hold
            down = [node.describe() for node in node_states(self.nodes).values() if node.unavailable]
            if state.reason not in _ORDINARY_WAIT or (down and waited_long):
                text = f"(SLURM: {state.reason})" + (f"; {', '.join(down)}" if down else "")
                self._tell(f"wait-{text}", f"job {self.job_id} waits to start again {text}")

    def poll(self, final: bool = False) -> bool:
        """Read the logs and SLURM's state, tell what is new; True once the job has ended."""
        self._read_logs(final)
        self._tell_attempts(final)
        if final:
            return True
        state = job_state(self.job_id)
        if state is not None:
            self.unknown_polls = 0
            self._tell_slurm(state)
            return state.state in _TERMINAL_STATES
        # SLURM no longer knows the job (or does not answer): accounting, then the result files
        self.unknown_polls += 1
        if _state(self.job) in _TERMINAL_STATES:
            return True
        return self.unknown_polls >= 3 and _tasks_finished(self.job)


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


def wait_for(job: Any, executor: str, follow: bool, poll_s: float = 2.0, folder: Optional[Path] = None) -> None:
    """Wait until ``job`` ends, printing rank 0's log if ``follow`` and, on SLURM, one line per fault
    and requeue; raise LaunchError if it failed. ``folder``: the job folder, for the ``--resume`` hint."""
    task0 = job.task(0) if job.num_tasks > 1 else job
    follower = _LogFollower([task0.paths.stdout, task0.paths.stderr]) if follow else None
    watch = _SlurmWatch(job, folder) if executor == "slurm" else None
    while True:
        if watch and watch.poll():
            time.sleep(poll_s)  # result files land right after the state changes
            break
        if follower:
            follower.poll()
        if executor == "local" and (_tasks_finished(job) or _process_exited(job)):
            break
        time.sleep(poll_s)
    if watch:
        watch.poll(final=True)
    if follower:
        follower.poll(final=True)
    raise_if_failed(job, headline=watch.headline if watch else None)


def _srun_task_errors(job: Any) -> Dict[int, str]:
    """``{rank: "killed by SIGKILL on node2"}`` from srun's lines in the job's batch log (SLURM only),
    of its last start."""
    errors: Dict[int, str] = {}
    log = job.paths.stderr
    if not log.exists():
        return errors
    lines = log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if _START.search(line)]
    for line in lines[starts[-1] if starts else 0 :]:
        for rank, how, host in _srun_entries(line):
            errors.setdefault(rank, f"{how} on {host}")
    return errors


def _no_space_line(task: Any) -> Optional[str]:
    """The last "no space left on ..." line of a task's log, if it has one."""
    log = task.paths.stderr
    if not log.exists():
        return None
    found = [line for line in log.read_text(errors="replace").splitlines() if "no space left on " in line]
    return found[-1][found[-1].index("no space left on ") :].strip() if found else None


def raise_if_failed(job: Any, headline: Optional[str] = None) -> None:
    """Raise LaunchError naming the rank that failed first and how, with the last lines of its log;
    ``headline``, when given, is the report's first line (what stopped the job)."""
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
    if not failed and headline is None:
        return
    failed.sort()
    _, _, rank, reason = failed[0] if failed else (0, 0.0, 0, "no result")
    task = job.task(rank)
    log = task.paths.stderr if task.paths.stderr.exists() else task.paths.stdout
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else ["(no log)"]
    raise LaunchError(
        (f"{headline}\n" if headline else "") + f"job {job.job_id} failed; rank {rank}: {reason}\n"
        f"--- last lines of {log} ---\n" + "\n".join(tail) + "\n---\n"
        f"failing ranks: {', '.join(str(r) for _, _, r, _ in failed)}; all logs: {log.parent}"
    )
