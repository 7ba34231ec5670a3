"""Conversion cost: ``shufflenet-pl convert`` vs FFCV's stock writer on the same photographs.

    python benchmarks/convert_throughput.py                          # 500 drawn ImageNet-sized JPEGs
    python benchmarks/convert_throughput.py --source ~/photos/train --max-side 320 500 \
        --json benchmarks/results/cpu-2core/convert_throughput.json

The stock writer is what ffcv-imagenet's ``write_imagenet.py`` runs: torchvision's ``ImageFolder`` (PIL
decode) into ``DatasetWriter`` with ``RGBImageField(write_mode="jpg", max_resolution=S, jpeg_quality=Q)``.
Ours is ``convert_split`` with the same settings, with pass-through (the default) and without. Every
run is a fresh process, timed inside it around the conversion alone (imports excluded) by the CPU seconds of the
process and its writer processes (user + system) and by wall time; runs of all rows alternate,
``--repeats`` rounds, medians reported. The profile times one process on a sample of the images: the
header check that decides pass-through, our full decode and the stock writer's, the resize and the JPEG
encode.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]

_MEASURE = """
import json, resource, time
def _cpu():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
def measured(run):
    import multiprocessing
    cpu, wall = _cpu(), time.perf_counter()
    run()
    while multiprocessing.active_children():  # reap the writer processes: their CPU counts once waited for
        time.sleep(0.01)
    print(json.dumps({"cpu_s": _cpu() - cpu, "wall_s": time.perf_counter() - wall}))
"""

_STOCK = (
    _MEASURE
    + """
import sys
from ffcv.fields import IntField, RGBImageField
from ffcv.writer import DatasetWriter
from torchvision.datasets import ImageFolder
split, out, side, quality, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fields = {"image": RGBImageField(write_mode="jpg", max_resolution=side, jpeg_quality=quality), "label": IntField()}
writer = DatasetWriter(out, fields, num_workers=workers)
measured(lambda: writer.from_indexed_dataset(ImageFolder(split), chunksize=64))
"""
)

_OURS = (
    _MEASURE
    + """
import sys
from shufflenet_pl.data.convert import convert_split
import ffcv.writer, ffcv.fields
split, out, side, quality, workers, passthrough = sys.argv[1:7]
measured(lambda: convert_split(split, out, max_side=int(side), jpeg_quality=int(quality), num_workers=int(workers),
                               progress=False, pass_through=passthrough == "1"))
"""
)


def _timed_run(code: str, args: List[str]) -> Dict[str, float]:
    """CPU seconds (the process and its writer processes) and wall seconds of one conversion, measured
    inside a fresh process around the conversion alone (imports excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _count_images(split: Path) -> int:
    return sum(1 for p in split.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def profile(split: Path, side: int, quality: int, sample: int = 200) -> Dict[str, float]:
    """Milliseconds per image, one process: the pass-through header check, our decode, the stock
    writer's decode (PIL, as torchvision's ImageFolder loads), resize, encode."""
    from ffcv.fields.rgb_image import encode_jpeg, resizer

    from shufflenet_pl.data.convert import PassThrough, read_for_writing, stored_jpeg

    paths = sorted(str(p) for p in split.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:sample]
    import numpy as np
    from PIL import Image

    times = {"header_check": 0.0, "decode": 0.0, "resize": 0.0, "encode": 0.0, "stock_decode": 0.0}
    fits = 0
    for path in paths:
        t0 = time.perf_counter()
        fits += stored_jpeg(path, PassThrough(side, quality)) is not None
        t1 = time.perf_counter()
        image = read_for_writing(path, None)
        t2 = time.perf_counter()
        image = resizer(image, side)
        t3 = time.perf_counter()
        encode_jpeg(image, quality)
        t4 = time.perf_counter()
        with Image.open(path) as stock:
            np.asarray(stock.convert("RGB"))
        t5 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[key] += seconds
    result = {f"{key}_ms": 1000 * value / len(paths) for key, value in times.items()}
    result["fits_share"] = fits / len(paths)
    return result


def loader_rates(betons: Dict[str, Path], workers: int, epochs: int, batch: int = 64) -> Dict[str, object]:
    """Images/s of the datamodule's training decode stage (176 px crops) on each file, timed
    epochs interleaved after a warm-up epoch each: whether pass-through files load as fast."""
    sys.path.insert(0, str(REPO))
    from benchmarks.data_throughput import measure, ours_epoch

    _, rates = measure({name: ours_epoch(path, 176, batch, workers) for name, path in betons.items()}, epochs)
    return {
        "images_per_s": rates,
        "pass_through_vs_reencoded": rates["ours"] / rates["ours_no_pass_through"],
        "epochs": epochs,
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, help="an ImageFolder split of your own JPEGs (default: drawn ones)")
    parser.add_argument("--images", type=int, default=500, help="JPEGs to draw without --source (default 500)")
    parser.add_argument("--max-side", type=int, nargs="+", default=[320, 500], help="settings (default 320 500)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--workers", type=int, default=2, help="writer processes of both (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every row (default 3)")
    parser.add_argument(
        "--loader-epochs",
        type=int,
        default=4,
        help="timed loader epochs on ours' files with and without pass-through, at the last --max-side (default 4)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke size: 60 images, one round, 320 only")
    parser.add_argument("--json", type=Path, help="also write the numbers there as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.max_side, args.loader_epochs = 60, 1, args.max_side[:1], 1

    with tempfile.TemporaryDirectory(prefix="convert-bench-") as work:
        work_dir = Path(work)
        if args.source is None:
            sys.path.insert(0, str(REPO))
            from benchmarks.data_throughput import make_imagenet_like_jpegs

            split = make_imagenet_like_jpegs(work_dir / "src", args.images)
            source = f"{args.images} drawn ImageNet-sized JPEGs (quality 90)"
        else:
            split = args.source.resolve()
            source = str(args.source)
        count = _count_images(split)
        rows: Dict[str, Dict[str, object]] = {}
        for side in args.max_side:
            variants = {
                "stock": (_STOCK, []),
                "ours": (_OURS, ["1"]),
                "ours_no_pass_through": (_OURS, ["0"]),
            }
            runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in variants}
            for round_index in range(args.repeats):
                for name, (code, extra) in variants.items():
                    out = work_dir / f"{name}-{side}-{round_index}.beton"
                    settings = [str(split), str(out), str(side), str(args.quality), str(args.workers), *extra]
                    runs[name].append(_timed_run(code, settings))
                    if round_index < args.repeats - 1 or name == "stock":
                        out.unlink(missing_ok=True)
                        out.with_name(out.name + ".json").unlink(missing_ok=True)
            summary: Dict[str, object] = {}
            for name, measured in runs.items():
                cpu = statistics.median(r["cpu_s"] for r in measured)
                wall = statistics.median(r["wall_s"] for r in measured)
                summary[name] = {
                    "cpu_s": cpu,
                    "cpu_ms_per_image": 1000 * cpu / count,
                    "images_per_s": count / wall,
                    "runs": measured,
                }
            stock_cpu = summary["stock"]["cpu_s"]  # type: ignore[index]
            for name in ("ours", "ours_no_pass_through"):
                summary[name]["cpu_vs_stock"] = summary[name]["cpu_s"] / stock_cpu  # type: ignore[index]
            summary["profile"] = profile(split, side, args.quality)
            rows[str(side)] = summary
            last = {name: work_dir / f"{name}-{side}-{args.repeats - 1}.beton" for name in variants if name != "stock"}
            print(f"max side {side}, {count} images ({source}), {args.workers} workers, q{args.quality}:")
            print(f"  {'':22s} {'CPU ms/img':>10s} {'img/s':>8s} {'CPU vs stock':>13s}")
            for name in variants:
                row = summary[name]
                ratio = f"{row['cpu_vs_stock']:.2f}x" if "cpu_vs_stock" in row else "1.00x"  # type: ignore[operator]
                print(f"  {name:22s} {row['cpu_ms_per_image']:10.2f} {row['images_per_s']:8.0f} {ratio:>13s}")  # type: ignore[index]
            prof = summary["profile"]
            print(
                "  profile (ms/img, one process): "
                + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in prof.items() if k.endswith("_ms"))  # type: ignore[union-attr]
                + f"; {prof['fits_share']:.0%} fit and pass through"  # type: ignore[index]
            )
        loader = loader_rates(last, args.workers, args.loader_epochs, 16 if args.quick else 64)
        loader["max_side"] = args.max_side[-1]
        rates = loader["images_per_s"]
        print(
            f"loader on ours' files at max side {args.max_side[-1]} ({args.workers} workers, 176 px): "
            f"pass-through {rates['ours']:.0f} img/s, re-encoded {rates['ours_no_pass_through']:.0f} img/s, "
            f"ratio {loader['pass_through_vs_reencoded']:.2f}x"
        )
    result = {
        "benchmark": "convert_throughput",
        "source": source,
        "images": count,
        "workers": args.workers,
        "quality": args.quality,
        "repeats": args.repeats,
        "quick": args.quick,
        "cpus": len(os.sched_getaffinity(0)),
        "max_side": rows,
        "loader": loader,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(REPO))
        from shufflenet_pl.files import write_text

        write_text(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
