"""Read W&B runs back from their local files, without network or API key.

wandb 0.31 writes no ``wandb-summary.json`` or ``config.yaml`` for offline runs and has no public
reader for them: every value lives in ``run-<id>.wandb``, a LevelDB-style log (32 KiB blocks,
records split into FULL/FIRST/MIDDLE/LAST chunks with a CRC-32 each) of ``wandb_internal_pb2.Record``
protobufs. This module parses it (a live or crashed run's unfinished tail is ignored), and merges
the offline folders that a requeued job leaves with the same run id into one history, as
``wandb sync`` would upload them. A CSVLogger's ``metrics.csv`` (``--no-wandb``) reads the same way.
"""

import csv
import json
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import metrics as keys

__all__ = ["RunFiles", "Run", "find_run_files", "iter_records", "load_run", "read_run_files"]

_BLOCK = 32768
_HEADER = 7  # crc32 (4), length (2), chunk type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_DIR_PATTERN = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(\w+)$")


def iter_records(path: Union[str, Path], verify: bool = True) -> Iterator[Any]:
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file, in order.

    Args:
        path: a ``run-<id>.wandb`` file.
        verify: check each chunk's CRC-32.

    Raises:
        ValueError: the file is not a W&B transaction log, or a chunk is corrupt.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < 7 or struct.unpack("<4sHB", data[:7]) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path} is not a W&B transaction log (.wandb file)")
    pos, pending = 7, b""
    while True:
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block tail too short for a header is zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        if pos + _HEADER > len(data):
            return
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if kind == 0 or len(chunk) < length:
            return  # unwritten or truncated tail: a live or crashed run
        if verify and zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: corrupt record at byte {pos} (CRC mismatch)")
        pos += _HEADER + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _items(items: Sequence[Any]) -> Dict[str, Any]:
    # wandb-core writes keys as nested_key=[...]; nested dicts arrive as ["a", "b"] -> "a.b".
    return {(item.key or ".".join(item.nested_key)): json.loads(item.value_json) for item in items}


@dataclass
class RunFiles:
    """One folder of a W&B run (``offline-run-<time>-<id>``): one process's part of the run.

    Attributes:
        path: the folder.
        run_id: the W&B run id.
        start_time: seconds since the epoch when this part started.
        history: logged rows in order; each has ``_step`` and the logged keys.
        summary: the run summary (best value for metrics defined with ``summary="max"``, as
            ``{"max": value}``).
        config: the run config.
        metric_definitions: ``define_metric`` options by name (``step_metric``, ``summary``...).
        exit_code: the process's exit code, ``None`` if it did not finish (still running, or killed).
        job_type: the run's job type (shufflenet-pl sets the CLI subcommand: ``fit``, ``validate``...).
    """

    path: Path
    run_id: str
    start_time: float
    history: List[Dict[str, Any]] = field(default_factory=list)
    summary: Dict[str, Any] = field(default_factory=dict)
    config: Dict[str, Any] = field(default_factory=dict)
    metric_definitions: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    exit_code: Optional[int] = None
    job_type: str = ""


def read_run_files(path: Union[str, Path]) -> RunFiles:
    """Read one run folder (or its ``.wandb`` file).

    Raises:
        FileNotFoundError: no ``run-*.wandb`` file there.
    """
    from google.protobuf.json_format import MessageToDict

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{path}: no run-*.wandb file (is this a W&B run folder, wandb/offline-run-*?)")
    folder = files[0].parent
    match = _DIR_PATTERN.match(folder.name)
    run = RunFiles(path=folder, run_id=match.group(2) if match else files[0].stem[len("run-") :], start_time=0.0)
    if match:
        from datetime import datetime

        run.start_time = datetime.strptime(match.group(1), "%Y%m%d_%H%M%S").timestamp()
    for record in iter_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append({"_step": record.history.step.num, **_items(record.history.item)})
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
            for item in record.summary.remove:
                run.summary.pop(item.key or ".".join(item.nested_key), None)
        elif kind == "config":
            run.config.update(_items(record.config.update))
            for item in record.config.remove:
                run.config.pop(item.key or ".".join(item.nested_key), None)
        elif kind == "run":
            run.run_id = record.run.run_id or run.run_id
            run.job_type = record.run.job_type or run.job_type
            if record.run.start_time.seconds:
                run.start_time = record.run.start_time.seconds + record.run.start_time.nanos / 1e9
            run.config.update(_items(record.run.config.update))  # wandb.init(config=...) lands here
        elif kind == "metric":
            definition = MessageToDict(record.metric, preserving_proto_field_name=True)
            name = definition.pop("name", None) or definition.pop("glob_name", None)
            if name:
                run.metric_definitions[name] = definition
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    # Config values are stored as {"value": ..., "desc": ...} by some wandb versions.
    run.config = {
        k: v["value"] if isinstance(v, dict) and set(v) <= {"value", "desc"} and "value" in v else v
        for k, v in run.config.items()
        if not k.startswith("_")
    }
    return run


def _read_csv_metrics(path: Path) -> RunFiles:
    """A CSVLogger ``metrics.csv`` as a run: ``step`` becomes ``trainer/global_step``."""
    rows = []
    with path.open(newline="") as f:
        for index, row in enumerate(csv.DictReader(f)):
            values: Dict[str, Any] = {"_step": index}
            for key, value in row.items():
                if value in ("", None):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                values[keys.GLOBAL_STEP if key == "step" else key] = number
            rows.append(values)
    summary: Dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            mode = keys.SUMMARY_MODES.get(key)
            if mode == "max":
                summary[key] = {"max": max(value, summary.get(key, {"max": -math.inf})["max"])}
            elif not key.startswith("_"):
                summary[key] = value
    return RunFiles(
        path=path.parent, run_id=path.parent.name, start_time=path.stat().st_mtime, history=rows, summary=summary
    )


def find_run_files(path: Union[str, Path]) -> List[Path]:
    """Run folders under ``path``: a run folder, a ``.wandb`` file, a ``wandb/`` folder or any folder
    above one (a job folder, ``runs/demo``); symlinks such as ``latest-run`` are not counted twice.
    A CSVLogger folder (with ``metrics.csv``) counts when there is no W&B run.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        return [path]
    found = {os.path.realpath(p.parent): p.parent for p in path.glob("run-*.wandb")}
    if not found:
        for pattern in ("*/run-*.wandb", "**/run-*.wandb"):
            found = {os.path.realpath(p.parent): p.parent for p in path.glob(pattern)}
            if found:
                break
    if not found:
        csvs = [path / "metrics.csv"] if (path / "metrics.csv").is_file() else sorted(path.glob("**/metrics.csv"))
        return csvs
    return list(found.values())


@dataclass
class Run:
    """A W&B run as one history, merged from all its folders (a requeued job writes one per start).

    Attributes:
        run_id: the W&B run id.
        parts: the folders, in start order.
        history: the rows of all parts. Rows of an earlier part at or beyond the optimizer step where
            a later part starts are dropped: the later part redid those steps after resuming from
            its checkpoint.
        summary: the summary of the last part, with ``max`` summaries taken over all parts.
        config: the config of the last part.
    """

    run_id: str
    parts: List[RunFiles]
    history: List[Dict[str, Any]]
    summary: Dict[str, Any]
    config: Dict[str, Any]

    def values(self, key: str) -> List[float]:
        """Every logged value of ``key``, in order."""
        return [row[key] for row in self.history if isinstance(row.get(key), (int, float))]

    def series(self, key: str, x: str = keys.IMAGES_SEEN) -> Tuple[List[float], List[float]]:
        """``(xs, ys)`` of ``key`` against ``x``. A row without ``x`` gets it by linear interpolation
        over ``trainer/global_step`` from the rows that have both (CSV rows and validation rows
        carry no images count); with no ``x`` anywhere, the x values are global steps."""
        import numpy as np

        rows = [row for row in self.history if isinstance(row.get(key), (int, float))]
        known = sorted(
            {row[keys.GLOBAL_STEP]: row[x] for row in self.history if keys.GLOBAL_STEP in row and x in row}.items()
        )
        if x == keys.GLOBAL_STEP or not known:
            return [row.get(keys.GLOBAL_STEP, row["_step"]) for row in rows], [row[key] for row in rows]
        steps, xs_known = zip(*known)
        xs = [row[x] if x in row else float(np.interp(row.get(keys.GLOBAL_STEP, 0), steps, xs_known)) for row in rows]
        return xs, [row[key] for row in rows]

    def best(self, key: str) -> Optional[float]:
        """The summary's best (``max``) value of ``key``, else its largest logged value."""
        value = self.summary.get(key)
        if isinstance(value, dict) and "max" in value:
            return float(value["max"])
        logged = self.values(key)
        return max(logged) if logged else None


def _merge(parts: List[RunFiles]) -> Run:
    parts = sorted(parts, key=lambda part: part.start_time)
    history: List[Dict[str, Any]] = []
    for part in parts:
        steps = [row[keys.GLOBAL_STEP] for row in part.history if keys.GLOBAL_STEP in row]
        if steps:
            history = [row for row in history if row.get(keys.GLOBAL_STEP, -1) < min(steps)]
        history.extend(part.history)
    summary = dict(parts[-1].summary)
    for key in {k for part in parts for k, v in part.summary.items() if isinstance(v, dict) and "max" in v}:
        summary[key] = {"max": max(part.summary[key]["max"] for part in parts if "max" in part.summary.get(key, {}))}
    return Run(run_id=parts[-1].run_id, parts=parts, history=history, summary=summary, config=dict(parts[-1].config))


def load_run(path: Union[str, Path], run_id: Optional[str] = None) -> Run:
    """Load a run from its files, merging the folders that share its id.

    Args:
        path: a run folder, ``.wandb`` file, ``wandb/`` folder or a folder above one (see
            :func:`find_run_files`), or a CSVLogger folder / ``metrics.csv``.
        run_id: which run when ``path`` holds several; ``None`` takes the training run started last
            (a run that logged ``train/loss``; any run when none did).

    Raises:
        FileNotFoundError: nothing readable under ``path``, or no run ``run_id`` there.
    """
    found = find_run_files(path)
    if not found:
        raise FileNotFoundError(f"{path}: no W&B run (run-*.wandb) or metrics.csv found under it")
    parts = [_read_csv_metrics(p) if p.name == "metrics.csv" else read_run_files(p) for p in found]
    if run_id is None:
        # A `validate` after a `fit` is newer but has no curves: prefer runs that trained.
        trained = [part for part in parts if any(keys.TRAIN_LOSS in row for row in part.history)]
        run_id = max(trained or parts, key=lambda part: part.start_time).run_id
    chosen = [part for part in parts if part.run_id == run_id]
    if not chosen:
        available = ", ".join(sorted({part.run_id for part in parts}))
        raise FileNotFoundError(f"{path}: no run with id {run_id!r}; runs there: {available}")
    return _merge(chosen)
