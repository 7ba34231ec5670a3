"""What the benchmarks share: the device, interleaved timing with medians (from
:mod:`shufflenet_pl.analysis.timing`), tables, and writing JSON and PNG files atomically (a crash
never leaves half a file behind)."""

import json
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch

from shufflenet_pl.files import atomic_path, write_text
from shufflenet_pl.analysis.timing import CLOCKS, median, time_interleaved

__all__ = [
    "CLOCKS",
    "check_minimums",
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
        raise ValueError(
            f"--device {name!r}: no CUDA GPU is visible (torch.cuda.is_available() is False); use --device cpu"
        )
    return device


def check_minimums(options: Iterable[Tuple[str, Optional[float], float]]) -> None:
    """Refuse a command-line number below its minimum: ``(flag, value, minimum)`` triples; a ``None``
    value (option not given) passes.

    Raises:
        ValueError: naming the first flag that is too small.
    """
    for flag, value, minimum in options:
        if value is not None and value < minimum:
            raise ValueError(f"{flag} must be >= {minimum}, got {value}")


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
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_figure(figure: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG via a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
