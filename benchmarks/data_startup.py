"""Start-up of the FFCV datamodule's pipelines: first start (numba compiles) vs second start (the
numba code comes from the on-disk cache, :mod:`shufflenet_pl.data.jit_cache`), each in a fresh
process, as every ``validate``, DDP rank and requeued job is.

    python benchmarks/data_startup.py ROOT [--workers N] [--json PATH]

ROOT holds ``train.beton`` and ``val.beton``. The time measured per start is the pipeline warm-up:
from ``iter()`` of the train and the val loader to their first batch, summed over both loaders. The
datamodule's import (which the cache shortens too) is reported apart; ``setup`` is not counted.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]


def probe(root: Path, workers: int = 2) -> Dict[str, float]:
    """In this process: seconds from ``iter()`` to the first batch, train and val loader; and of the
    datamodule's import (lightning, ffcv and the typed dicts ffcv builds; not part of ``warmup_s``)."""
    start = time.perf_counter()
    from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

    import_s = time.perf_counter() - start

    datamodule = FFCVImageNetDataModule(root=str(root), batch_size=8, num_workers=workers, train_res=64, val_res=64)
    datamodule.setup("fit")
    out = {"import_s": import_s}
    for name, make in (("train", datamodule.train_dataloader), ("val", datamodule.val_dataloader)):
        start = time.perf_counter()
        batches = iter(make())
        next(batches)
        out[f"{name}_s"] = time.perf_counter() - start
        for _ in batches:  # let the epoch end cleanly
            pass
    out["warmup_s"] = out["train_s"] + out["val_s"]
    return out


def start_once(root: Path, cache: Path, workers: int = 2, timeout: float = 600) -> Dict[str, float]:
    """:func:`probe` in a fresh Python process that uses the cache folder ``cache``."""
    # Both caches in ``cache``: the pipelines' (jit_cache) and numba's own for module-level
    # ``cache=True`` kernels (shufflenet_pl.data.ffcv_decode), so a first start really compiles all.
    env = dict(os.environ, SHUFFLENET_PL_JIT_CACHE=str(cache), NUMBA_CACHE_DIR=str(Path(cache) / "kernels"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = (
        f"import json, sys; from benchmarks.data_startup import probe; "
        f"print('PROBE ' + json.dumps(probe(sys.argv[1], {workers})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"start-up probe failed:\n{result.stderr[-3000:]}")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    return json.loads(line[len("PROBE ") :])


def measure_startup(root: Path, cache: Optional[Path] = None, workers: int = 2) -> Dict[str, float]:
    """First start into an empty cache folder, then a second start: pipeline warm-up seconds."""
    with tempfile.TemporaryDirectory(prefix="shufflenet-pl-jit-") as scratch:
        cache = cache or Path(scratch) / "cache"
        first = start_once(root, cache, workers)
        second = start_once(root, cache, workers)
    return {
        "startup_first_s": first["warmup_s"],
        "startup_second_s": second["warmup_s"],
        "startup_first_train_s": first["train_s"],
        "startup_second_train_s": second["train_s"],
        "startup_first_val_s": first["val_s"],
        "startup_second_val_s": second["val_s"],
        "startup_first_import_s": first["import_s"],
        "startup_second_import_s": second["import_s"],
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder with train.beton and val.beton")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the numbers there")
    args = parser.parse_args(argv)
    numbers = measure_startup(args.root, workers=args.workers)
    print(
        f"pipeline warm-up (train + val loader, fresh process): first start {numbers['startup_first_s']:.1f} s, "
        f"second start {numbers['startup_second_s']:.1f} s (numba code from the cache)"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
