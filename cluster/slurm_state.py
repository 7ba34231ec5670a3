"""What SLURM says about a job and its nodes, from ``scontrol`` and ``sinfo`` (no accounting needed).

Each call answers ``None`` (or an empty mapping) when SLURM does not answer or no longer knows the
job: the launcher asks again at its next poll.
"""

import re
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = ["JobState", "NodeState", "job_state", "node_states"]

#: ``Key=value`` pairs of ``scontrol show job -o``; a value runs up to the next `` Key=``.
_FIELD = re.compile(r"(?:^|\s)([A-Za-z_/:]+)=(.*?)(?=\s[A-Za-z_/:]+=|$)")


@dataclass
class JobState:
    """A job as ``scontrol show job`` tells it."""

    state: str
    #: times SLURM started the job again (``scontrol requeue``, a failed node, preemption)
    restarts: int
    #: pending reason (``BeginTime`` right after a requeue, ``Resources``, ``ReqNodeNotAvail`` ...)
    reason: str
    nodes: List[str] = field(default_factory=list)


#: Node states (``sinfo``'s words, without their flag suffixes) in which SLURM starts no job on the node.
_OUT_OF_SERVICE = {"down", "drained", "draining", "fail", "failing", "maint"}


@dataclass
class NodeState:
    """A node as ``sinfo`` tells it: ``state`` as SLURM prints it (``down*``: down, not responding)."""

    name: str
    state: str
    reason: str

    @property
    def unavailable(self) -> bool:
        """Down, drained, failing or not responding: no job starts on it."""
        return self.state.endswith("*") or self.state.rstrip("*~#!%$@^-") in _OUT_OF_SERVICE | {"unknown"}

    @property
    def unanswered(self) -> bool:
        """Its slurmd does not answer and SLURM has not marked it DOWN (or drained) yet."""
        return self.state.endswith("*") and self.state.rstrip("*~#!%$@^-") not in _OUT_OF_SERVICE

    def describe(self) -> str:
        """``node2 is DOWN (Not responding)``, ``node2 does not respond`` (not DOWN yet), ``node2 is DRAINED
        (maintenance)``."""
        words = "does not respond" if self.unanswered else f"is {self.state.rstrip('*').upper()}"
        reason = self.reason if self.reason and self.reason != "none" else ""
        return f"{self.name} {words}" + (f" ({reason})" if reason else "")


def _run(command: Sequence[str]) -> Optional[str]:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _hostnames(nodelist: str) -> List[str]:
    if not nodelist or nodelist == "(null)":
        return []
    if "[" not in nodelist:
        return nodelist.split(",")
    out = _run(["scontrol", "show", "hostnames", nodelist])
    return out.split() if out else [nodelist]


def job_state(job_id: str) -> Optional[JobState]:
    """The job's state, restart count, pending reason and nodes; ``None`` when SLURM does not say."""
    out = _run(["scontrol", "show", "job", "-o", job_id])
    if not out or not out.strip():
        return None
    fields: Dict[str, str] = dict(_FIELD.findall(out.strip().splitlines()[0]))
    if "JobState" not in fields:
        return None
    restarts = fields.get("Restarts", "0")
    return JobState(
        state=fields["JobState"].split()[0].upper(),
        restarts=int(restarts) if restarts.isdigit() else 0,
        reason=fields.get("Reason", "None"),
        nodes=_hostnames(fields.get("NodeList", "")),
    )


def node_states(nodes: Sequence[str]) -> Dict[str, NodeState]:
    """``{name: NodeState}`` of ``nodes`` (all nodes when empty)."""
    command = ["sinfo", "-h", "-N", "-o", "%N|%T|%E"]
    if nodes:
        command += ["-n", ",".join(nodes)]
    out = _run(command)
    states: Dict[str, NodeState] = {}
    for line in (out or "").splitlines():
        name, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        if name:
            states[name] = NodeState(name, state.strip().lower(), reason.strip())
    return states
