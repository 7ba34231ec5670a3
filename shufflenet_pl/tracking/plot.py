"""``shufflenet-pl plot RUN``: accuracy and throughput curves of one run, from its local files, to PNG.

Reads W&B's offline (or synced) run folders, merging the folders a requeued job left with the same
run id, or a CSVLogger's ``metrics.csv``; no network, no API key. Top row: validation accuracy and
images/s against training images seen; bottom row: training loss and LR, step time and the share of
it spent waiting for data.
"""

import argparse
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..files import atomic_path
from . import metrics as keys
from .reader import Run, load_run

__all__ = ["plot_main", "plot_run", "run_summary"]


def run_summary(run: Run) -> Dict[str, Any]:
    """Headline numbers of a run: best/last accuracy, median throughput and step time, peak memory."""

    def median(key: str) -> Optional[float]:
        values = run.values(key)
        return statistics.median(values) if values else None

    last_acc1 = run.values(keys.VAL_ACC1)
    peaks = {
        key: max(run.values(key)) for key in (keys.PEAK_DEVICE_MEMORY_GB, keys.PEAK_HOST_MEMORY_GB) if run.values(key)
    }
    steps = run.values(keys.GLOBAL_STEP)
    return {
        "run_id": run.run_id,
        "parts": [str(part.path) for part in run.parts],
        "optimizer_steps": int(max(steps)) + 1 if steps else None,
        "images_seen": max(run.values(keys.IMAGES_SEEN), default=None),
        "best_val_acc1": run.best(keys.VAL_ACC1),
        "best_val_acc5": run.best(keys.VAL_ACC5),
        "last_val_acc1": last_acc1[-1] if last_acc1 else None,
        "median_images_per_sec": median(keys.IMAGES_PER_SEC),
        "median_images_per_sec_per_device": median(keys.IMAGES_PER_SEC_PER_DEVICE),
        "median_step_time_ms": median(keys.STEP_TIME_MS),
        "median_data_wait_share": median(keys.DATA_WAIT_SHARE),
        **{key.split("/")[-1]: value for key, value in peaks.items()},
    }


def plot_run(run: Run, output: Path, title: Optional[str] = None) -> Path:
    """Draw the 2x2 figure of ``run`` to ``output`` (PNG, written atomically).

    Returns:
        ``output``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, PercentFormatter

    has_images = bool(run.values(keys.IMAGES_SEEN))
    x_key = keys.IMAGES_SEEN if has_images else keys.GLOBAL_STEP
    x_label = "training images seen" if has_images else "optimizer step"
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))

    def draw(ax: Any, key: str, label: str, scale: float = 1.0, **style: Any) -> bool:
        xs, ys = run.series(key, x=x_key)
        if not xs:
            return False
        ax.plot(xs, [y * scale for y in ys], label=label, **style)
        return True

    def finish(ax: Any, ylabel: str, drawn: bool, what: str) -> None:
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=9)
        else:
            ax.text(0.5, 0.5, f"{what} not logged", transform=ax.transAxes, ha="center", va="center", color="gray")

    ax = axes[0, 0]
    drawn = draw(ax, keys.VAL_ACC1, "top-1", 100, marker="o", markersize=3)
    drawn = draw(ax, keys.VAL_ACC5, "top-5", 100, marker="o", markersize=3) or drawn
    best = run.best(keys.VAL_ACC1)
    ax.set_title(f"Validation accuracy (best top-1 {100 * best:.2f} %)" if best is not None else "Validation accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    finish(ax, "accuracy", drawn, "val/acc1")

    ax = axes[0, 1]
    drawn = draw(ax, keys.IMAGES_PER_SEC, "whole job")
    drawn = draw(ax, keys.IMAGES_PER_SEC_PER_DEVICE, "per device (mean)", linestyle="--") or drawn
    median = run_summary(run)["median_images_per_sec"]
    ax.set_title(f"Training throughput (median {median:,.0f} images/s)" if median else "Training throughput")
    ax.set_ylim(bottom=0)
    finish(ax, "images / s", drawn, "perf/images_per_sec")

    ax = axes[1, 0]
    drawn = draw(ax, keys.TRAIN_LOSS, "train loss", color="tab:blue")
    ax.set_title("Training loss and learning rate")
    finish(ax, "loss", drawn, "train/loss")
    xs, ys = run.series(keys.TRAIN_LR, x=x_key)
    if xs:
        twin = ax.twinx()
        twin.plot(xs, ys, color="tab:orange", label="lr")
        twin.set_ylabel("learning rate", color="tab:orange")

    ax = axes[1, 1]
    drawn = draw(ax, keys.STEP_TIME_MS, "step time", color="tab:blue")
    ax.set_title("Step time and data wait")
    ax.set_ylim(bottom=0)
    finish(ax, "ms / step", drawn, "perf/step_time_ms")
    xs, ys = run.series(keys.DATA_WAIT_SHARE, x=x_key)
    if xs:
        twin = ax.twinx()
        twin.plot(xs, [100 * y for y in ys], color="tab:red", linestyle="--", label="waiting for data")
        twin.set_ylim(0, 100)
        twin.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        twin.set_ylabel("share of the step waiting for data", color="tab:red")

    parts = f" ({len(run.parts)} parts: requeued)" if len(run.parts) > 1 else ""
    fig.suptitle(title or f"run {run.run_id}{parts}")
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return output


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def plot_main(argv: Optional[List[str]] = None) -> None:
    """``shufflenet-pl plot``: draw one run's curves and print its headline numbers."""
    parser = argparse.ArgumentParser(
        prog="shufflenet-pl plot",
        description="Draw validation accuracy and training throughput (images/s, step time, data wait) of a run "
        "to PNG from its local files: a W&B run folder (wandb/offline-run-*), a wandb/ folder or any folder above "
        "one (e.g. runs/demo or a job folder), or a CSVLogger folder with metrics.csv. The folders of a requeued "
        "job (same run id) are merged.",
    )
    parser.add_argument("path", type=Path, help="run folder, .wandb file, wandb/ folder, or a folder above them")
    parser.add_argument("--run-id", help="which run, when the folder holds several (default: the newest that trained)")
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default: curves-<run id>.png here)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.path, run_id=args.run_id)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    output = plot_run(run, args.output or Path(f"curves-{run.run_id}.png"), title=args.title)
    for key, value in run_summary(run).items():
        if value is not None:
            print(f"{key:<34} {', '.join(value) if isinstance(value, list) else _format(value)}")
    print(f"wrote {output}")
