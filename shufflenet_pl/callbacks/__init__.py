"""Lightning callbacks: the Lightning glue that is neither model nor data, one module per role.

- :mod:`.checkpoints`: :class:`VerifiedModelCheckpoint`, Lightning's ``ModelCheckpoint`` with
  checksummed atomic files, an always-newest ``last.ckpt`` and one trainer per folder;
  :class:`TimedCheckpoint`, a ``last.ckpt`` every 2 minutes (longer where saving is slow).
- :mod:`.preemption`: :class:`PreemptionCheckpoint`, save and stop at a batch boundary when the job
  is told to stop.
- :mod:`.throughput`: :class:`ImagesPerSecondMonitor`, the ``perf/*`` metrics and the images seen.
- :mod:`.resolution`: :class:`ProgressiveResizing`, the training crop of each epoch.
- :mod:`.predictions`: :class:`PredictionWriter`, ``predict`` results as CSV.
- :mod:`.console`: :class:`ConciseModelSummary` and :class:`LogFriendlyProgressBar`.
- :mod:`.run_config`: :class:`RunConfigSaver`, the CLI's resolved config beside the run and in W&B.

``ModelCheckpoint`` and ``ThroughputMonitor`` are other names of :class:`VerifiedModelCheckpoint` and
:class:`ImagesPerSecondMonitor` (the same classes; their state in checkpoints keeps its keys), so that
configs which name them still run; configs here use the names that say how they differ from Lightning's.
"""

from .checkpoints import (
    DEFAULT_EVERY_MINUTES,
    MAX_SAVE_SHARE,
    TimedCheckpoint,
    VerifiedModelCheckpoint,
    checkpoint_dir,
    save_last_checkpoint,
)
from .console import ConciseModelSummary, LogFriendlyProgressBar
from .predictions import PredictionWriter
from .preemption import Preempted, PreemptionCheckpoint
from .resolution import ProgressiveResizing
from .run_config import RunConfigSaver
from .throughput import ImagesPerSecondMonitor

ModelCheckpoint = VerifiedModelCheckpoint
ThroughputMonitor = ImagesPerSecondMonitor

__all__ = [
    "DEFAULT_EVERY_MINUTES",
    "MAX_SAVE_SHARE",
    "ConciseModelSummary",
    "ImagesPerSecondMonitor",
    "LogFriendlyProgressBar",
    "ModelCheckpoint",
    "Preempted",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ProgressiveResizing",
    "RunConfigSaver",
    "ThroughputMonitor",
    "TimedCheckpoint",
    "VerifiedModelCheckpoint",
    "checkpoint_dir",
    "save_last_checkpoint",
]
