"""Data-loading throughput: our FFCV decode stage vs FFCV's stock pipeline vs torchvision ImageFolder +
DataLoader, against the raw libjpeg-turbo decode rate of the same JPEGs, all measured in one run on
this machine.

    python benchmarks/data_throughput.py                     # 500 ImageNet-sized JPEGs, 176 px, 2 workers
    python benchmarks/data_throughput.py --images 400 --settings jpg:320:90 raw:320 --workers 1 2 \
        --json benchmarks/results/cpu-2core/data_throughput.json

Like with like: both pipelines do RandomResizedCrop(res, scale=(0.08, 1)) + horizontal flip and
return uint8 ``(N, 3, res, res)`` batches (normalisation happens on the device in training, for
both). The two FFCV pipelines hand the batch over the same way (``--layout``): by default as FFCV's
``ToTorchImage()`` does, a channels_last view of the decoded batch (what the datamodule gives a GPU,
whose model runs channels_last); ``--layout contiguous`` makes both copy it to contiguous NCHW in
FFCV's iterator thread. torchvision's collate gives contiguous NCHW. Every rate is measured after a
warm-up epoch (FFCV's JIT compilation, torchvision's worker start-up), over ``--epochs`` epochs, with
the same batch size and worker count.

Rows:
  torchvision            ImageFolder (PIL decode of the source JPEGs) + DataLoader, persistent workers
  ffcv <setting>         FFCV's stock pipeline (RandomResizedCropRGBImageDecoder + RandomHorizontalFlip)
                         over a .beton written with that setting (write mode, max side)
  ours <setting>         the FFCV datamodule's decode stage (shufflenet_pl.data.ffcv_decode: seeded box
                         and flip, only the box decoded at the smallest DCT scale, one resize) in the
                         same FFCV Loader, same settings
  decode ceiling         libjpeg-turbo (FFCV's own libffcv.imdecode, ``--workers`` threads) decoding
                         exactly the JPEGs that .beton holds, nothing else: what an FFCV epoch cannot beat
Profile (for the first .beton setting): FFCV stock: decode only, decode + crop/resize, + flip, + to
NCHW tensor, so the time of each step is the difference of two rows; ours: one thread timing its
kernels on the same images and boxes (the box decode alone, then decode + resize, and a full decode
for scale), the rest being the loader's time per image beyond that. JIT warm-up per loader, and with ``--startup`` the
datamodule's pipeline warm-up in a fresh process, first start vs second start (numba code cached).
All timed epochs run in interleaved rounds, so load from other processes hits every row alike.
With ``--workers 1 2`` every first-setting row is measured at each worker count; the headline
numbers (``--json``) are those of the last count.

With several counts, a scaling table gives ours, FFCV stock and decode alone at each, with the
efficiency rate(n) / (n / b * rate(b)) against the smallest count b (1.00: perfect scaling).

The source JPEGs are drawn procedurally at ImageNet's sizes (most 500x375 or 375x500, some
larger, quality 90; the run prints their mean size): photo-like pixel counts and texture, no download.
``--source DIR`` runs every row on your own JPEGs instead (an ImageFolder tree, DIR/<class>/<image>.jpg):

    python benchmarks/data_throughput.py --source ~/photos/train --settings jpg:320:90 --workers 1 2 4
"""

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_imagenet_like_jpegs(root: Path, count: int, classes: int = 10, seed: int = 0) -> Path:
    """``count`` JPEGs (quality 90) in ImageFolder layout under ``root/train``, ImageNet-like sizes."""
    from PIL import Image, ImageFilter

    from shufflenet_pl.data.demo import DEMO_CLASSES, draw_demo_image

    marker = root / f".done-{count}-{classes}-{seed}"
    if marker.is_file():
        return root / "train"
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = DEMO_CLASSES[index % classes]
        landscape = rng.random() < 0.7
        long_side = 500 if rng.random() < 0.8 else int(rng.integers(500, 900))
        short_side = int(long_side * rng.choice([0.75, 0.667, 0.8, 1.0], p=[0.6, 0.2, 0.1, 0.1]))
        size = (long_side, short_side) if landscape else (short_side, long_side)
        base = draw_demo_image(label, seed * 1_000_000 + index).resize(size, Image.BILINEAR)
        # Photo-like detail: multi-scale noise texture, so that the JPEGs have realistic entropy and size.
        pixels = np.asarray(base, dtype=np.float32)
        for scale, amplitude in ((1, 14.0), (4, 10.0), (16, 8.0)):
            small = rng.normal(0, amplitude, size=(size[1] // scale + 1, size[0] // scale + 1, 3))
            noise = np.asarray(Image.fromarray(small.astype(np.float32)[..., 0]).resize(size, Image.BILINEAR))[
                ..., None
            ]
            pixels = pixels + (noise if scale > 1 else small[: size[1], : size[0]])
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
        out = root / "train" / label / f"{index:06d}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, quality=90)
    marker.touch()
    return root / "train"


EpochFn = Callable[[], int]


def torchvision_epoch(split: Path, res: int, batch: int, workers: int) -> EpochFn:
    """One epoch of ImageFolder + DataLoader (persistent workers); returns the images it gave."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2 as T

    transform = T.Compose([T.RandomResizedCrop(res, antialias=True), T.RandomHorizontalFlip(), T.PILToTensor()])
    loader = DataLoader(
        datasets.ImageFolder(str(split), transform=transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )

    def epoch() -> int:
        count = 0
        for images, _ in loader:
            assert images.dtype == torch.uint8 and images.shape[-1] == res
            count += len(images)
        return count

    return epoch


def train_loader(beton: Path, image_pipeline: list, batch: int, workers: int) -> Any:
    """An FFCV ``Loader`` over ``beton`` as every FFCV row of this benchmark reads it: random order
    (seed 0), whole batches, the OS page cache; ``image_pipeline`` for the images, ints for labels."""
    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor

    return Loader(
        str(beton),
        batch_size=batch,
        num_workers=workers,
        order=OrderOption.RANDOM,
        seed=0,
        drop_last=True,
        os_cache=True,
        pipelines={"image": image_pipeline, "label": [IntDecoder(), ToTensor()]},
    )


def ffcv_epoch(
    beton: Path, res: int, batch: int, workers: int, stages: str = "full", channels_last: bool = True
) -> EpochFn:
    """One epoch of the FFCV train pipeline up to ``stages``: ``crop`` (decode + RandomResizedCrop),
    ``flip``, ``full`` (+ ToTensor + ToTorchImage: a uint8 ``(N, 3, H, W)`` tensor, by default FFCV's
    channels_last view of the batch, with ``channels_last=False`` a contiguous NCHW copy)."""
    import torch
    from ffcv.fields.decoders import RandomResizedCropRGBImageDecoder
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    image = [RandomResizedCropRGBImageDecoder((res, res))]
    if stages in ("flip", "full"):
        image.append(RandomHorizontalFlip())
    image.append(ToTensor())
    if stages == "full":
        image.append(ToTorchImage(channels_last=channels_last))
    loader = train_loader(beton, image, batch, workers)

    def epoch() -> int:
        count = 0
        for images, _ in loader:
            if stages == "full":
                assert images.dtype == torch.uint8 and images.shape[1:] == (3, res, res)
            count += len(images)
        return count

    return epoch


def ours_epoch(beton: Path, res: int, batch: int, workers: int, channels_last: bool = True) -> EpochFn:
    """One epoch of the datamodule's training decode stage in an FFCV Loader, a uint8 ``(N, 3, H, W)``
    tensor out, laid out as for :func:`ffcv_epoch` (the flip happens inside the decode; normalisation
    on the device, as for the other rows)."""
    import torch
    from ffcv.transforms import ToTensor, ToTorchImage

    from shufflenet_pl.data.ffcv_decode import SeededRandomResizedCropDecoder
    from shufflenet_pl.data.jit_cache import pipeline_cache

    decoder = SeededRandomResizedCropDecoder((res, res), seed=0)
    image = [decoder, ToTensor(), ToTorchImage(channels_last=channels_last)]
    with pipeline_cache():
        loader = train_loader(beton, image, batch, workers)
    epochs = [0]

    def epoch() -> int:
        decoder.epoch = epochs[0]
        epochs[0] += 1
        count = 0
        with pipeline_cache():
            batches = iter(loader)
        for images, _ in batches:
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, res, res)
            count += len(images)
        return count

    return epoch


def profile_ours(jpegs: Sequence[Tuple[np.ndarray, int, int]], res: int, rounds: int = 3) -> Dict[str, float]:
    """Milliseconds per image, one thread, of our kernels on the stored JPEGs with the seeded boxes
    of epoch 0: ``decode`` (libjpeg decoding only the box, at the DCT scale the stage picks for it:
    ``decode_jpeg_box``) and ``decode_resize`` (the whole ``decode_box`` kernel: that decode, the one
    resize into the output and the mirror of flipped images); ``full_decode``: FFCV's full decode of the
    same images, for scale."""
    from ffcv.libffcv import imdecode

    from shufflenet_pl.data import ffcv_decode as ours

    mode = int(ours._JPG)
    largest = max(h * w for _, h, w in jpegs)
    temp, out = np.empty(largest * 3, dtype=np.uint8), np.empty((res, res, 3), dtype=np.uint8)
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    plans = []
    for index, (data, height, width) in enumerate(jpegs):
        top, left, h, w, flip = ours.random_crop_box(height, width, 0.08, 1.0, *log_ratio, 0, 0, index)
        plans.append((data, height, width, top, left, h, w, flip))
    seconds = {"decode": 0.0, "decode_resize": 0.0, "full_decode": 0.0}
    data, height, width, top, left, h, w, flip = plans[0]  # compile (or load) the kernels first
    ours.decode_box(data, mode, height, width, top, left, h, w, flip, temp, out, ours.DEFAULT_INTERPOLATION)
    ours.decode_jpeg_box(data, height, width, top, left, h, w, res, res, temp)
    for _ in range(rounds):
        start = time.perf_counter()
        for data, height, width, top, left, h, w, _ in plans:
            ours.decode_jpeg_box(data, height, width, top, left, h, w, res, res, temp)
        seconds["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        for data, height, width, top, left, h, w, flip in plans:
            ours.decode_box(data, mode, height, width, top, left, h, w, flip, temp, out, ours.DEFAULT_INTERPOLATION)
        seconds["decode_resize"] += time.perf_counter() - start
        start = time.perf_counter()
        for data, height, width, *_ in plans:
            imdecode(data, temp, height, width, height, width, 0, 0, 1, 1, False, False)
        seconds["full_decode"] += time.perf_counter() - start
    return {name: 1e3 * value / (rounds * len(plans)) for name, value in seconds.items()}


def stored_jpegs(beton: Path) -> List[Tuple[np.ndarray, int, int]]:
    """The JPEG-compressed images a .beton holds: (bytes, height, width)."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.fromfile(beton, dtype=np.uint8)
    ends = {int(ptr): int(ptr) + int(size) for ptr, size in zip(reader.alloc_table["ptr"], reader.alloc_table["size"])}
    jpegs = []
    for meta in reader.metadata["f0"]:
        if meta["mode"] == 0:
            start = int(meta["data_ptr"])
            jpegs.append((data[start : ends[start]], int(meta["height"]), int(meta["width"])))
    return jpegs


def stored_raw_sizes(beton: Path) -> List[Tuple[int, int]]:
    """(height, width) of the images a .beton holds as raw pixels."""
    from ffcv.reader import Reader

    return [(int(m["height"]), int(m["width"])) for m in Reader(str(beton)).metadata["f0"] if m["mode"] == 1]


def source_jpeg_paths(split: Path) -> List[Path]:
    """The JPEG files of the ImageFolder tree ``split`` (any case of .jpg / .jpeg), sorted."""
    return sorted(p for p in split.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())


def source_jpegs(split: Path) -> List[Tuple[np.ndarray, int, int]]:
    """Every JPEG file of the ImageFolder tree ``split``: its bytes, height and width."""
    from PIL import Image

    out = []
    for path in source_jpeg_paths(split):
        with Image.open(path) as image:
            width, height = image.size
        out.append((np.fromfile(path, dtype=np.uint8), height, width))
    return out


def decode_epoch(jpegs: Sequence[Tuple[np.ndarray, int, int]], workers: int) -> EpochFn:
    """One pass of libjpeg-turbo (libffcv.imdecode) alone over ``jpegs``, with ``workers`` threads."""
    from ffcv.libffcv import imdecode

    largest = max(h * w for _, h, w in jpegs)
    buffers = [np.empty(largest * 3, dtype=np.uint8) for _ in range(workers)]
    shards = [jpegs[k::workers] for k in range(workers)]
    pool = ThreadPoolExecutor(workers)  # ctypes releases the GIL during the C call

    def work(k: int) -> int:
        for data, height, width in shards[k]:
            imdecode(data, buffers[k], height, width, height, width, 0, 0, 1, 1, False, False)
        return len(shards[k])

    def epoch() -> int:
        return sum(pool.map(work, range(workers)))

    return epoch


def scaling(per_workers: Dict[str, Dict[str, Optional[float]]], workers: Sequence[int]) -> Dict[str, Dict]:
    """Per worker count: ours, FFCV stock and decode-alone rates, each one's efficiency
    ``rate(n) / (n / b * rate(b))`` against the smallest count ``b`` (1.0: perfect scaling), and
    ours / decode alone."""
    base = min(workers)
    keys = {"ours": "ours_images_per_s", "ffcv": "ffcv_images_per_s", "decode": "decode_ceiling_images_per_s"}
    out: Dict[str, Dict] = {}
    for w in sorted(set(workers)):
        row: Dict[str, Optional[float]] = {}
        for kind, key in keys.items():
            value, first = per_workers[str(w)][key], per_workers[str(base)][key]
            row[f"{kind}_images_per_s"] = value
            row[f"{kind}_efficiency"] = value * base / (w * first) if value and first else None
        decode = row["decode_images_per_s"]
        row["ours_vs_decode"] = row["ours_images_per_s"] / decode if decode else None  # type: ignore[operator]
        out[str(w)] = row
    return out


def measure(pipelines: Dict[str, EpochFn], epochs: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Warm-up seconds and steady images/s of every pipeline. After one warm-up epoch each, the timed
    epochs run in interleaved rounds (A B C, A B C, ...): other load on the machine then slows all
    pipelines alike instead of whichever happened to run at the time."""
    warmup: Dict[str, float] = {}
    for name, run in pipelines.items():
        start = time.perf_counter()
        run()
        warmup[name] = time.perf_counter() - start
        print(f"  warm-up {name}: {warmup[name]:.1f} s", flush=True)
    images = dict.fromkeys(pipelines, 0)
    seconds = dict.fromkeys(pipelines, 0.0)
    for round_index in range(epochs):
        for name, run in pipelines.items():
            start = time.perf_counter()
            images[name] += run()
            seconds[name] += time.perf_counter() - start
        print(f"  round {round_index + 1}/{epochs} done", flush=True)
    return warmup, {name: images[name] / seconds[name] for name in pipelines}


class _ChunkCheckWhileRunning:
    """The datamodule's background chunk check over ``beton``, verified pass after pass for as long as it
    runs (same function, same pacing: :data:`~shufflenet_pl.data.beton_check.CPU_SHARE`), so that a
    timed epoch overlaps the check all through, as an ImageNet epoch overlaps the check of a 60 GB
    file. Entering waits until the check has spent its
    :data:`~shufflenet_pl.data.beton_check.FREE_CPU_SECONDS` (taken once per file, before its pace
    starts): what follows is the paced steady state. Records the check's CPU seconds meanwhile."""

    def __init__(self, beton: Path) -> None:
        import threading

        from shufflenet_pl.data.beton_check import CPU_SHARE

        self.beton, self.cpu_share = beton, CPU_SHARE
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chunk check (benchmark)", daemon=True)
        self.cpu_seconds, self.damaged = 0.0, 0

    def _run(self) -> None:
        from shufflenet_pl.data.beton_check import chunk_table, damaged_chunks, recorded_regions

        regions = recorded_regions(self.beton)
        if regions is None:
            raise RuntimeError(f"{self.beton}: its sidecar records no chunk checksums")
        # One paced stream of passes, as over one huge file.
        table = chunk_table(regions) * 100_000
        self.damaged = len(damaged_chunks(self.beton, table, cpu_share=self.cpu_share, stop=self.stop))

    def _thread_cpu(self) -> float:
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))

    def __enter__(self) -> "_ChunkCheckWhileRunning":
        from shufflenet_pl.data.beton_check import FREE_CPU_SECONDS

        self.thread.start()
        deadline = time.perf_counter() + 10
        while self._thread_cpu() < FREE_CPU_SECONDS and time.perf_counter() < deadline:
            time.sleep(0.001)
        self._cpu_start = self._thread_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_seconds = self._thread_cpu() - self._cpu_start
        self.stop.set()
        self.thread.join()


def _timed_epochs(run: EpochFn, epochs: int) -> Tuple[int, float, float]:
    """``(images, wall seconds, CPU seconds of the whole process)`` of ``epochs`` epochs of ``run``."""
    start, cpu_start = time.perf_counter(), time.process_time()
    images = sum(run() for _ in range(epochs))
    return images, time.perf_counter() - start, time.process_time() - cpu_start


def measure_check_cost(beton: Path, res: int, batch: int, workers: int, pairs: int, epochs: int) -> Dict[str, object]:
    """Images/s of our FFCV loader over ``beton`` with the background chunk check running vs not, in
    ``pairs`` paired runs of ``epochs`` epochs each, the order alternating (off-on, on-off, ...) so that
    a trend in the machine's load falls on both alike. Returns per pair the rates and ``on / off`` of
    images/s and of the process's CPU time per image (what the check adds to the loader's work, much less
    swayed by other processes on the machine than wall-clock rates), and the same over all runs."""
    run = ours_epoch(beton, res, batch, workers)
    run()  # JIT warm-up
    runs: Dict[str, List[Tuple[int, float, float]]] = {"off": [], "on": []}
    check_cpu = 0.0
    for pair in range(pairs):
        for kind in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            if kind == "off":
                runs[kind].append(_timed_epochs(run, epochs))
                continue
            with _ChunkCheckWhileRunning(beton) as check:
                runs[kind].append(_timed_epochs(run, epochs))  # not the check's stop: that is no loader time
            if check.damaged:
                raise RuntimeError(f"{beton}: the check found damaged chunks in a good file")
            check_cpu += check.cpu_seconds
        (off_images, off_s, off_cpu), (on_images, on_s, on_cpu) = runs["off"][-1], runs["on"][-1]
        print(
            f"  pair {pair + 1}/{pairs}: off {off_images / off_s:.0f} img/s, on {on_images / on_s:.0f} img/s, "
            f"on/off {(on_images / on_s) / (off_images / off_s):.4f}; CPU per image on/off "
            f"{(on_cpu / on_images) / (off_cpu / off_images):.4f}",
            flush=True,
        )
    total = {kind: [sum(column) for column in zip(*rows)] for kind, rows in runs.items()}
    (off_images, off_s, off_cpu), (on_images, on_s, on_cpu) = total["off"], total["on"]
    wall = [(a / b) / (c / d) for (a, b, _), (c, d, _) in zip(runs["on"], runs["off"])]
    cpu = [(b / a) / (d / c) for (a, _, b), (c, _, d) in zip(runs["on"], runs["off"])]
    overall = (on_images / on_s) / (off_images / off_s)
    return {
        "check_off_images_per_s": [images / seconds for images, seconds, _ in runs["off"]],
        "check_on_images_per_s": [images / seconds for images, seconds, _ in runs["on"]],
        "pair_ratios": wall,
        "pair_cpu_per_image_ratios": cpu,
        "check_on_vs_off": overall,
        "check_on_vs_off_median_pair": float(np.median(wall)),
        "check_cost_share": 1 - overall,
        "check_off_cpu_ms_per_image": 1e3 * off_cpu / off_images,
        "check_on_cpu_ms_per_image": 1e3 * on_cpu / on_images,
        "check_thread_cpu_ms_per_image": 1e3 * check_cpu / on_images,
        "check_cpu_per_image_on_vs_off": (on_cpu / on_images) / (off_cpu / off_images),
        "check_cpu_share_of_wall": check_cpu / on_s,
        "beton_bytes": beton.stat().st_size,
    }


def check_cost_main(args: argparse.Namespace) -> None:
    """``--check-cost``: the cost of verifying chunk checksums while training, as a share of our loader's
    images/s on the first setting's .beton, at the last worker count; prints the side-by-side ratio and
    writes ``--json``."""
    import torch

    from benchmarks._timing import environment, write_json
    from shufflenet_pl.data import quiet_numba  # noqa: F401
    from shufflenet_pl.data.convert import convert_split

    workers = args.workers[-1]
    if args.source is not None:
        split, origin = args.source.resolve(), f"photographs under {args.source}"
        work_dir = args.work_dir / ("source-" + split.as_posix().strip("/").replace("/", "_"))
    else:
        split, origin = make_imagenet_like_jpegs(args.work_dir / "jpeg", args.images), "drawn demo images"
        work_dir = args.work_dir
    setting = args.settings[0]
    beton = work_dir / (setting_name(setting).replace(" ", "_") + ".beton")
    convert_split(split, beton, num_workers=workers, progress=False, **setting)
    print(
        f"check cost: {args.images} {origin}, {setting_name(setting)}, {beton.stat().st_size / 2**20:.0f} MiB, "
        f"{workers} workers, {args.check_pairs} pairs of {args.epochs} epochs",
        flush=True,
    )
    result = measure_check_cost(beton, args.res, args.batch, workers, args.check_pairs, args.epochs)
    report: Dict[str, object] = {
        "images": args.images,
        "source": origin,
        "setting": setting_name(setting),
        "res": args.res,
        "batch": args.batch,
        "workers": workers,
        "cpus": os.cpu_count(),
        "epochs_per_run": args.epochs,
        "pairs": args.check_pairs,
        **result,
        "environment": environment(torch.device("cpu")),
    }
    off, on = result["check_off_images_per_s"], result["check_on_images_per_s"]
    print()
    print("| pair | check off (img/s) | check on (img/s) | on / off |")
    print("| ---: | ---: | ---: | ---: |")
    for pair, (a, b, ratio) in enumerate(zip(off, on, result["pair_ratios"]), 1):  # type: ignore[call-overload]
        print(f"| {pair} | {a:.0f} | {b:.0f} | {ratio:.4f} |")
    print(
        f"check on / off over all runs: {result['check_on_vs_off']:.4f} "
        f"(cost {100 * result['check_cost_share']:.2f} %; "
        f"the check took {100 * result['check_cpu_share_of_wall']:.2f} % of one CPU)"
    )
    print(f"median pair on / off: {result['check_on_vs_off_median_pair']:.4f}")
    print(
        f"CPU time per image, check on / off: {result['check_cpu_per_image_on_vs_off']:.4f} "
        f"({result['check_on_cpu_ms_per_image']:.4f} vs {result['check_off_cpu_ms_per_image']:.4f} ms; "
        f"the check thread's own: {result['check_thread_cpu_ms_per_image']:.4f} ms)"
    )
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")


def parse_setting(text: str) -> Dict[str, object]:
    """``jpg:512:90``, ``raw:256``, ``proportion:400:90:0.5`` -> converter keyword arguments."""
    parts = text.split(":")
    mode = parts[0]
    if mode not in ("jpg", "raw", "proportion"):
        raise argparse.ArgumentTypeError(f"setting {text!r}: write mode must be jpg, raw or proportion")
    setting: Dict[str, object] = {
        "write_mode": mode,
        "max_side": int(parts[1]) if len(parts) > 1 and parts[1] else None,
    }
    if len(parts) > 2:
        setting["jpeg_quality"] = int(parts[2])
    if len(parts) > 3:
        setting["compress_probability"] = float(parts[3])
    return setting


def setting_name(setting: Dict[str, object]) -> str:
    name = f"{setting['write_mode']} max {setting['max_side'] or 'orig'}"
    if setting["write_mode"] != "raw":
        name += f" q{setting.get('jpeg_quality', 90)}"
    if setting["write_mode"] == "proportion":
        name += f" p{setting.get('compress_probability', 0.5)}"
    return name


def fail(message: str) -> None:
    """Print the one-line ``error: ...`` message and exit with status 2 (no traceback)."""
    print(message, file=sys.stderr)
    sys.exit(2)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500, help="JPEGs to draw (default 500)")
    parser.add_argument("--res", type=int, default=176, help="training crop side (default 176)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[2],
        help="loader workers / threads for every pipeline; several counts measure the first "
        "setting's rows at each, the last count is the headline (default 2)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one (default 3)")
    parser.add_argument(
        "--settings",
        type=parse_setting,
        nargs="+",
        default=[parse_setting(s) for s in ("jpg:320:90", "jpg:256:90", "jpg:500:90", "raw:320")],
        help="'.beton' settings write_mode:max_side[:quality[:compress_probability]] "
        "(default: jpg:320:90 jpg:256:90 jpg:500:90 raw:320); the first is profiled",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/shufflenet-pl-bench"),
        help="where the JPEGs and .beton files go (reused across runs)",
    )
    parser.add_argument(
        "--layout",
        choices=["channels_last", "contiguous"],
        default="channels_last",
        help="how both FFCV pipelines hand over the (N, 3, H, W) uint8 batch: channels_last, a view "
        "of the decoded NHWC batch (FFCV's default ToTorchImage, and what the datamodule gives "
        "a GPU), or contiguous, an NCHW copy made in FFCV's iterator thread (default channels_last)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="an ImageFolder tree (DIR/<class>/<image>.jpg) of your own JPEGs: every row runs on those "
        "instead of drawn ones (--images is then their count)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers there as JSON")
    parser.add_argument(
        "--startup",
        action="store_true",
        help="also time the datamodule's pipeline warm-up in fresh processes, first vs second start",
    )
    parser.add_argument(
        "--check-cost",
        action="store_true",
        help="measure only what the background chunk check costs: our loader's images/s on the first "
        "setting with the check on vs off, --check-pairs paired runs of --epochs epochs (writes --json)",
    )
    parser.add_argument("--check-pairs", type=int, default=3, help="paired runs for --check-cost (default 3)")
    args = parser.parse_args(argv)
    if args.source is not None:
        if not args.source.is_dir():
            fail(f"error: --source {args.source}: not a folder; give an ImageFolder tree DIR/<class>/<image>.jpg")
        count = len(source_jpeg_paths(args.source))
        if count == 0:
            fail(f"error: --source {args.source}: no .jpg/.jpeg files in its class folders; give an ImageFolder tree")
        args.images = count
    if min(args.workers) < 1 or args.images < args.batch or args.epochs < 1:
        parser.error(
            f"need --workers >= 1, --epochs >= 1 and --images >= --batch (got workers {args.workers}, "
            f"epochs {args.epochs}, images {args.images}, batch {args.batch})"
        )
    if args.check_cost:
        check_cost_main(args)
        return

    from shufflenet_pl.data import quiet_numba  # noqa: F401
    from shufflenet_pl.data.convert import convert_split

    headline_workers = args.workers[-1]
    channels_last = args.layout == "channels_last"
    print(
        f"machine: {os.cpu_count()} CPUs; {args.images} JPEGs, crop {args.res}, batch {args.batch}, "
        f"workers {args.workers}, {args.epochs} timed epochs after 1 warm-up",
        flush=True,
    )
    if args.source is not None:
        split = args.source.resolve()
        args.work_dir = args.work_dir / ("source-" + split.as_posix().strip("/").replace("/", "_"))
        print(f"source: {split} ({args.images} JPEGs)", flush=True)
    else:
        split = make_imagenet_like_jpegs(args.work_dir / "jpeg", args.images)
    sources = source_jpegs(split)
    mean_kb = np.mean([len(d) for d, _, _ in sources]) / 1024
    mean_px = np.mean([h * w for _, h, w in sources])
    print(f"source JPEGs: mean {mean_kb:.0f} KB, {mean_px / 1e3:.0f} kpixels", flush=True)

    def key(name: str, workers: int) -> str:
        return name if workers == headline_workers else f"{name} @{workers}w"

    pipelines: Dict[str, EpochFn] = {}
    storage: Dict[str, str] = {"torchvision": f"{mean_kb:.0f} KB/img (source JPEGs)"}
    names, betons = [], {}
    for index, setting in enumerate(args.settings):
        name = setting_name(setting)
        beton = args.work_dir / (name.replace(" ", "_") + ".beton")
        convert_split(split, beton, num_workers=headline_workers, progress=False, **setting)
        betons[name] = beton
        jpegs = stored_jpegs(beton)
        stored = sum(len(d) for d, _, _ in jpegs) + sum(h * w * 3 for h, w in stored_raw_sizes(beton))
        storage[name] = f"{stored / 1024 / args.images:.0f} KB/img"
        names.append(name)
        for workers in args.workers if index == 0 else [headline_workers]:
            if index == 0:
                pipelines[key("torchvision", workers)] = torchvision_epoch(split, args.res, args.batch, workers)
                pipelines[key("decode source", workers)] = decode_epoch(sources, workers)
            pipelines[key(f"ffcv {name}", workers)] = ffcv_epoch(
                beton, args.res, args.batch, workers, channels_last=channels_last
            )
            pipelines[key(f"ours {name}", workers)] = ours_epoch(
                beton, args.res, args.batch, workers, channels_last=channels_last
            )
            if jpegs:
                pipelines[key(f"decode {name}", workers)] = decode_epoch(jpegs, workers)
    profiled = names[0]
    for stages in ("crop", "flip"):
        pipelines[f"profile {stages}"] = ffcv_epoch(betons[profiled], args.res, args.batch, headline_workers, stages)

    warmup, rate = measure(pipelines, args.epochs)
    tv = rate["torchvision"]
    print()
    print("| pipeline | images/s | vs torchvision | decode ceiling (img/s) | vs ceiling | JIT/start-up (s) | stored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print(
        f"| torchvision ImageFolder + DataLoader (PIL) | {tv:.0f} | 1.00x | {rate['decode source']:.0f} | "
        f"{tv / rate['decode source']:.2f} | {warmup['torchvision']:.1f} | {storage['torchvision']} |"
    )
    for name in names:
        ceiling = rate.get(f"decode {name}", math.nan)
        for kind in ("ffcv", "ours"):
            row = f"{kind} {name}"
            vs = f"{rate[row] / ceiling:.2f}" if math.isfinite(ceiling) else "n/a (raw)"
            ceiling_text = f"{ceiling:.0f}" if math.isfinite(ceiling) else "n/a"
            print(
                f"| {row} | {rate[row]:.0f} | {rate[row] / tv:.2f}x | {ceiling_text} | {vs} | "
                f"{warmup[row]:.1f} | {storage[name]} |"
            )

    ours_name, ffcv_name, ceiling_name = f"ours {profiled}", f"ffcv {profiled}", f"decode {profiled}"
    report: Dict[str, object] = {
        "setting": profiled,
        "images": args.images,
        "res": args.res,
        "batch": args.batch,
        "workers": headline_workers,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "layout": args.layout,
        "torchvision_images_per_s": tv,
        "ffcv_images_per_s": rate[ffcv_name],
        "ours_images_per_s": rate[ours_name],
        "decode_ceiling_images_per_s": rate.get(ceiling_name),
        "ffcv_jit_warmup_s": warmup[ffcv_name],
        "ours_jit_warmup_s": warmup[ours_name],
        "per_workers": {
            str(w): {
                "torchvision_images_per_s": rate[key("torchvision", w)],
                "ffcv_images_per_s": rate[key(ffcv_name, w)],
                "ours_images_per_s": rate[key(ours_name, w)],
                "decode_ceiling_images_per_s": rate.get(key(ceiling_name, w)),
            }
            for w in args.workers
        },
        "settings": {
            name: {
                "ffcv_images_per_s": rate[f"ffcv {name}"],
                "ours_images_per_s": rate[f"ours {name}"],
                "decode_ceiling_images_per_s": rate.get(f"decode {name}"),
                "stored": storage[name],
            }
            for name in names
        },
    }
    ours_rate = rate[ours_name]
    print()
    ceiling = rate.get(ceiling_name)
    ratios = {
        "ours_vs_ceiling": ours_rate / ceiling if ceiling else None,
        "ours_vs_ffcv": ours_rate / rate[ffcv_name],
        "ours_vs_torchvision": ours_rate / tv,
    }
    report.update(ratios)
    print(
        f"ours, {profiled}, {headline_workers} workers: {ours_rate:.0f} img/s = "
        + (f"{ratios['ours_vs_ceiling']:.2f}x the full-decode ceiling, " if ceiling else "")
        + f"{ratios['ours_vs_ffcv']:.2f}x FFCV stock, {ratios['ours_vs_torchvision']:.2f}x torchvision"
    )
    if len(args.workers) > 1:
        report["scaling"] = scaling(report["per_workers"], args.workers)  # type: ignore[arg-type]
        base = min(args.workers)
        print()
        print(f"scaling with workers ({profiled}); efficiency = rate(n) / (n / {base} * rate({base})):")
        print("| workers | ours img/s | eff | ffcv stock img/s | eff | decode alone img/s | eff | ours / decode |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in sorted(set(args.workers)):
            row = report["scaling"][str(w)]  # type: ignore[index]
            cells = []
            for kind in ("ours", "ffcv", "decode"):
                value, eff = row[f"{kind}_images_per_s"], row[f"{kind}_efficiency"]
                cells += [f"{value:.0f}" if value else "n/a", f"{eff:.2f}" if eff else "n/a"]
            vs = f"{row['ours_vs_decode']:.2f}" if row["ours_vs_decode"] else "n/a"
            print(f"| {w} | " + " | ".join(cells) + f" | {vs} |")
    print()
    print(f"where the time goes, ffcv stock {profiled} (steady; per image per worker):")
    rows = [
        ("decode only (libjpeg-turbo)", rate[ceiling_name]) if ceiling_name in rate else None,
        ("decode + RandomResizedCrop", rate["profile crop"]),
        ("  + flip", rate["profile flip"]),
        (f"  + ToTensor + NCHW uint8, {args.layout}", rate[ffcv_name]),
    ]
    for label, value in filter(None, rows):
        print(f"  {label:<36}{value:8.0f} img/s  {1e3 * headline_workers / value:6.2f} ms")
    print(f"  JIT warm-up of a loader: {warmup[ffcv_name]:.1f} s (first epoch, before any batch)")
    jpegs = stored_jpegs(betons[profiled])
    if jpegs:
        kernels = profile_ours(jpegs, args.res)
        loader_ms = 1e3 * headline_workers / ours_rate
        profile = {
            "decode_ms": kernels["decode"],
            "resize_ms": kernels["decode_resize"] - kernels["decode"],
            "rest_ms": loader_ms - kernels["decode_resize"],
            "loader_ms_per_image_per_worker": loader_ms,
            "full_decode_ms": kernels["full_decode"],
        }
        report["ours_profile"] = profile
        print(f"where the time goes, ours {profiled} (ms per image; kernels timed on one thread):")
        print(
            f"  decode of the box alone, at the chosen DCT scale        {profile['decode_ms']:6.3f} ms"
            f"   (full decode: {profile['full_decode_ms']:.3f} ms)"
        )
        print(f"  resize into the batch (+ mirror when flipped)          {profile['resize_ms']:6.3f} ms")
        print(f"  rest (page read, box draw, loader, to NCHW tensor)     {profile['rest_ms']:6.3f} ms")
        print(f"  = loader time per image per worker                     {loader_ms:6.3f} ms")
    print(
        f"  JIT warm-up of our loader: {warmup[ours_name]:.1f} s (first epoch; with the disk cache filled by an "
        f"earlier run, this is the cached start)"
    )
    if jpegs:
        from benchmarks.loader_profile import print_profile, profile_loader

        print(f"where a worker's time goes inside the loader, ours {profiled} (benchmarks/loader_profile.py):")
        breakdown = [profile_loader(betons[profiled], args.res, args.batch, w, epochs=1) for w in args.workers]
        print_profile(breakdown)
        report["loader_breakdown"] = {str(row["workers"]): row for row in breakdown}
    if args.startup:
        from benchmarks.data_startup import measure_startup

        root = args.work_dir / "startup-root"
        root.mkdir(parents=True, exist_ok=True)
        for split_name in ("train", "val"):
            for suffix in (".beton", ".beton.json"):
                link = root / f"{split_name}{suffix}"
                link.unlink(missing_ok=True)
                link.symlink_to(betons[profiled].with_name(betons[profiled].name + suffix[len(".beton") :]))
        startup = measure_startup(root, workers=headline_workers)
        report.update(startup)
        print(
            f"datamodule pipeline warm-up (train + val loader, fresh process): first start "
            f"{startup['startup_first_s']:.1f} s, second start {startup['startup_second_s']:.1f} s (cached)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
