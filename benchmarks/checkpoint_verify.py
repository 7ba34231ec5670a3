"""What verifying a checkpoint costs at resume: the whole-file SHA-256 that
:func:`shufflenet_pl.checkpoints.verify_checkpoint` checks, beside BLAKE2b and CRC-32 over the same
file and the ``torch.load`` that resuming does anyway, for ShuffleNet V2 2.0x with its SGD momentum
(the state a resume reads). Timed in alternation on a file in the page cache (the resume reads it
right after); medians, and each as a ratio of the load.

    python -m benchmarks.checkpoint_verify --output benchmarks/results/cpu-2core/checkpoint_verify.json
"""

import argparse
import hashlib
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from shufflenet_pl.checkpoints import file_digest, save_with_checksum, verify_checkpoint
from shufflenet_pl.models import build_model

from ._timing import environment, format_table, median, time_interleaved, write_json

_CHUNK = 8 << 20


def _whole_file(path: Path, update: Callable[[bytes], None]) -> Callable[[], None]:
    def run() -> None:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                update(chunk)

    return run


def _checkpoint(model_name: str) -> Dict[str, object]:
    model = build_model(model_name, num_classes=1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # momentum buffers exist, as in any checkpoint past step 0
    return {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shufflenet_v2_x2_0")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, help="JSON result file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as scratch:
        path = Path(scratch) / "last.ckpt"
        save_with_checksum(_checkpoint(args.model), path)
        size = path.stat().st_size
        assert verify_checkpoint(path) is None and file_digest(path)
        crc = [0]
        candidates = {
            "sha256 (verify_checkpoint)": lambda: verify_checkpoint(path),
            "blake2b": _whole_file(path, hashlib.blake2b().update),
            "crc32": _whole_file(path, lambda chunk: crc.__setitem__(0, zlib.crc32(chunk, crc[0]))),
            "torch.load": lambda: torch.load(path, map_location="cpu", weights_only=False),
        }
        samples = time_interleaved(candidates, repeats=args.repeats, warmup=1, synchronize=lambda: None)
    medians = {name: median(times) for name, times in samples.items()}
    load = medians["torch.load"]
    rows = [
        [name, f"{seconds * 1e3:.1f}", f"{size / seconds / 2**20:.0f}", f"{seconds / load:.2f}"]
        for name, seconds in medians.items()
    ]
    print(f"{args.model} checkpoint with SGD momentum: {size / 2**20:.1f} MiB")
    print(format_table(["check", "ms (median)", "MiB/s", "x torch.load"], rows))
    result = {
        "model": args.model,
        "checkpoint_bytes": size,
        "repeats": args.repeats,
        "median_seconds": medians,
        "samples_seconds": samples,
        "verify_over_load": medians["sha256 (verify_checkpoint)"] / load,
        "environment": environment(torch.device("cpu")),
    }
    if args.output is not None:
        write_json(args.output, result)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
