"""What the periodic checkpoint costs: the time to save ``last.ckpt`` of ShuffleNet V2 with its SGD
momentum through the project's writer (serialised, checksummed, written to a temporary file in the
destination folder, fsynced and renamed), for each width, and what share of training that is at the
default interval of :class:`shufflenet_pl.callbacks.TimedCheckpoint` (which stretches the interval
where the share would pass :data:`~shufflenet_pl.callbacks.MAX_SAVE_SHARE`).

    python -m benchmarks.checkpoint_save --output benchmarks/results/cpu-2core/checkpoint_save.json
    python -m benchmarks.checkpoint_save --dir /scratch/$USER     # the file system your jobs write to
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch

from shufflenet_pl.callbacks import DEFAULT_EVERY_MINUTES, MAX_SAVE_SHARE
from shufflenet_pl.checkpoints import save_with_checksum

from ._timing import environment, format_table, write_json
from .checkpoint_verify import _checkpoint

WIDTHS = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="saves per width (default 5)")
    parser.add_argument("--dir", type=Path, help="folder to save into (default: a temporary folder)")
    parser.add_argument("--output", type=Path, help="JSON result file")
    args = parser.parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a folder")
    torch.set_num_threads(1)
    interval_s = 60 * DEFAULT_EVERY_MINUTES
    result: dict = {"default_interval_s": interval_s, "max_save_share": MAX_SAVE_SHARE, "models": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-save-", dir=args.dir) as scratch:
        path = Path(scratch) / "last.ckpt"
        for model in WIDTHS:
            checkpoint = _checkpoint(model)
            save_with_checksum(checkpoint, path)  # warm-up: allocations, the first file
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                save_with_checksum(checkpoint, path)
                samples.append(time.perf_counter() - start)
            seconds = statistics.median(samples)
            share = seconds / interval_s
            result["models"][model] = {
                "checkpoint_bytes": path.stat().st_size,
                "save_seconds_median": seconds,
                "save_seconds": samples,
                "share_at_default_interval": share,
            }
            rows.append([model, f"{path.stat().st_size / 2**20:.1f}", f"{seconds:.3f}", f"{100 * share:.2f} %"])
    print(format_table(["model", "MiB", "save s (median)", f"share at {DEFAULT_EVERY_MINUTES:g} min"], rows))
    result["environment"] = environment(torch.device("cpu"))
    if args.output is not None:
        write_json(args.output, result)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
