"""What the benchmarks share: the device, interleaved timing with medians, tables, and writing JSON
and PNG files atomically (a crash never leaves half a file behind)."""

import json
import math
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch

__all__ = [
    "CLOCKS",
    "describe_device",
    "environment",
    "format_table",
    "median",
    "resolve_device",
    "save_figure",
    "synchronizer",
    "time_interleaved",
    "write_json",
]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (a CUDA GPU when one is visible, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: an unknown device, or CUDA asked for where none is visible.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device: {err}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: no CUDA GPU is visible (torch.cuda.is_available() is False); use --device cpu")
    return device


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"CPU: <model>, 2 cores, 2 threads"``: what the numbers were measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU: {_cpu_model()}, {os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''}"


def environment(device: torch.device) -> Dict[str, Any]:
    """Versions and device, stored with every result file."""
    import torchvision

    return {
        "device": describe_device(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def time_interleaved(
    candidates: Mapping[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    synchronize: Callable[[], None],
    min_sample_seconds: float = 0.0,
    clock: str = "wall",
) -> Dict[str, List[float]]:
    """Seconds per call of each candidate, measured in alternation.

    Every round calls each candidate once, and the order reverses from one round to the next
    (A B, B A, A B, ...), so a machine that speeds up or slows down during the run (other jobs, clocks,
    heat) affects every candidate alike; compare their medians.

    Args:
        candidates: name -> a function that runs the work once.
        repeats: timed rounds (samples per candidate).
        warmup: untimed rounds first (allocator, thread pools, cuDNN autotuning, compilation).
        synchronize: waits for queued device work, so that a call's time includes its kernels.
        min_sample_seconds: a sample repeats a call that is faster than this until it lasts about
            this long and reports the time per call (for sub-millisecond work, where one call is
            mostly timer and launch noise).
        clock: ``"wall"`` (elapsed time) or ``"process"`` (CPU time of this process: on a CPU shared
            with other jobs and one torch thread, it leaves out the time the process waited for a core).
    """
    if repeats < 1 or warmup < 0 or min_sample_seconds < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, min_sample_seconds >= 0; got {repeats}, {warmup}, {min_sample_seconds}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    synchronize()
    calls = {name: 1 for name in names}
    if min_sample_seconds > 0:
        for name in names:
            start = now()
            candidates[name]()
            synchronize()
            calls[name] = max(1, math.ceil(min_sample_seconds / max(now() - start, 1e-9)))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            synchronize()
            start = now()
            for _ in range(calls[name]):
                candidates[name]()
            synchronize()
            samples[name].append((now() - start) / calls[name])
    return samples


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


_NUMBER = re.compile(r"^-?[\d,]*\.?\d+x?$")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-markdown table with aligned columns (text left, numbers right)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).rjust(w) if _NUMBER.match(str(c)) else str(c).ljust(w) for c, w in zip(cells, widths)]
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def save_figure(figure: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG via a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)
