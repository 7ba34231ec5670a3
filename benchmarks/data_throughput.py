"""Data-loading throughput: FFCV vs torchvision ImageFolder + DataLoader, against the raw
libjpeg-turbo decode rate of the same JPEGs, all measured in one run on this machine.

    python benchmarks/data_throughput.py                     # 500 ImageNet-sized JPEGs, 176 px, 2 workers
    python benchmarks/data_throughput.py --images 1000 --res 160 --batch 128 --workers 8

Like with like: both pipelines do RandomResizedCrop(res, scale=(0.08, 1)) + horizontal flip and
return uint8 ``(N, 3, res, res)`` batches (normalisation happens on the device in training, for
both). Every rate is measured after a warm-up epoch (FFCV's JIT compilation, torchvision's worker
start-up), over ``--epochs`` epochs, with the same batch size and worker count.

Rows:
  torchvision            ImageFolder (PIL decode of the source JPEGs) + DataLoader, persistent workers
  ffcv <setting>         FFCV Loader over a .beton written with that setting (write mode, max side)
  decode ceiling         libjpeg-turbo (FFCV's own libffcv.imdecode, ``--workers`` threads) decoding
                         exactly the JPEGs that .beton holds, nothing else: what an FFCV epoch cannot beat
Profile (for the first .beton setting): decode only, decode + crop/resize, + flip, + to NCHW
tensor, so the time of each step is the difference of two rows; and the JIT warm-up per loader.
All timed epochs run in interleaved rounds, so load from other processes hits every row alike.

The source JPEGs are drawn procedurally at ImageNet's sizes (most 500x375 or 375x500, some
larger, mean ~110-130 KB at quality 90): same pixel counts and entropy as photos, no download.
"""

import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
            noise = np.asarray(Image.fromarray(small.astype(np.float32)[..., 0]).resize(size, Image.BILINEAR))[..., None]
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
    loader = DataLoader(datasets.ImageFolder(str(split), transform=transform), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)

    def epoch() -> int:
        count = 0
        for images, _ in loader:
            assert images.dtype == torch.uint8 and images.shape[-1] == res
            count += len(images)
        return count

    return epoch


def ffcv_epoch(beton: Path, res: int, batch: int, workers: int, stages: str = "full") -> EpochFn:
    """One epoch of the FFCV train pipeline up to ``stages``: ``crop`` (decode + RandomResizedCrop),
    ``flip``, ``full`` (+ ToTensor + ToTorchImage: uint8 NCHW as torchvision gives)."""
    import torch
    from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    image = [RandomResizedCropRGBImageDecoder((res, res))]
    if stages in ("flip", "full"):
        image.append(RandomHorizontalFlip())
    image.append(ToTensor())
    if stages == "full":
        image.append(ToTorchImage(channels_last=False))
    loader = Loader(str(beton), batch_size=batch, num_workers=workers, order=OrderOption.RANDOM, seed=0,
                    drop_last=True, os_cache=True, pipelines={"image": image, "label": [IntDecoder(), ToTensor()]})

    def epoch() -> int:
        count = 0
        for images, _ in loader:
            if stages == "full":
                assert images.dtype == torch.uint8 and images.shape[1:] == (3, res, res)
            count += len(images)
        return count

    return epoch


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
            jpegs.append((data[start: ends[start]], int(meta["height"]), int(meta["width"])))
    return jpegs


def stored_raw_sizes(beton: Path) -> List[Tuple[int, int]]:
    """(height, width) of the images a .beton holds as raw pixels."""
    from ffcv.reader import Reader

    return [(int(m["height"]), int(m["width"])) for m in Reader(str(beton)).metadata["f0"] if m["mode"] == 1]


def source_jpegs(split: Path) -> List[Tuple[np.ndarray, int, int]]:
    from PIL import Image

    out = []
    for path in sorted(split.rglob("*.JPEG")):
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


def parse_setting(text: str) -> Dict[str, object]:
    """``jpg:512:90``, ``raw:256``, ``proportion:400:90:0.5`` -> converter keyword arguments."""
    parts = text.split(":")
    mode = parts[0]
    if mode not in ("jpg", "raw", "proportion"):
        raise argparse.ArgumentTypeError(f"setting {text!r}: write mode must be jpg, raw or proportion")
    setting: Dict[str, object] = {"write_mode": mode, "max_side": int(parts[1]) if len(parts) > 1 and parts[1] else None}
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


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="JPEGs to draw (default 500)")
    parser.add_argument("--res", type=int, default=176, help="training crop side (default 176)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers / threads for every pipeline (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one (default 3)")
    parser.add_argument("--settings", type=parse_setting, nargs="+",
                        default=[parse_setting(s) for s in ("jpg:320:90", "jpg:256:90", "jpg:500:90", "raw:320")],
                        help="'.beton' settings write_mode:max_side[:quality[:compress_probability]] "
                             "(default: jpg:320:90 jpg:256:90 jpg:500:90 raw:320); the first is profiled")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/shufflenet-pl-bench"),
                        help="where the JPEGs and .beton files go (reused across runs)")
    args = parser.parse_args(argv)

    from shufflenet_pl.data import quiet_numba  # noqa: F401
    from shufflenet_pl.data.convert import convert_split

    print(f"machine: {os.cpu_count()} CPUs; {args.images} JPEGs, crop {args.res}, batch {args.batch}, "
          f"{args.workers} workers, {args.epochs} timed epochs after 1 warm-up", flush=True)
    split = make_imagenet_like_jpegs(args.work_dir / "jpeg", args.images)
    sources = source_jpegs(split)
    mean_kb = np.mean([len(d) for d, _, _ in sources]) / 1024
    mean_px = np.mean([h * w for _, h, w in sources])
    print(f"source JPEGs: mean {mean_kb:.0f} KB, {mean_px / 1e3:.0f} kpixels", flush=True)

    pipelines: Dict[str, EpochFn] = {"torchvision": torchvision_epoch(split, args.res, args.batch, args.workers),
                                      "decode source": decode_epoch(sources, args.workers)}
    storage: Dict[str, str] = {"torchvision": f"{mean_kb:.0f} KB/img (source JPEGs)"}
    names = []
    for setting in args.settings:
        name = setting_name(setting)
        beton = args.work_dir / (name.replace(" ", "_") + ".beton")
        convert_split(split, beton, num_workers=args.workers, progress=False, **setting)
        pipelines[name] = ffcv_epoch(beton, args.res, args.batch, args.workers)
        jpegs = stored_jpegs(beton)
        if jpegs:
            pipelines[f"decode {name}"] = decode_epoch(jpegs, args.workers)
        stored = sum(len(d) for d, _, _ in jpegs) + sum(
            h * w * 3 for h, w in stored_raw_sizes(beton))
        storage[name] = f"{stored / 1024 / args.images:.0f} KB/img"
        names.append(name)
    profiled = names[0]
    profiled_beton = args.work_dir / (profiled.replace(" ", "_") + ".beton")
    for stages in ("crop", "flip"):
        pipelines[f"profile {stages}"] = ffcv_epoch(profiled_beton, args.res, args.batch, args.workers, stages)

    warmup, rate = measure(pipelines, args.epochs)
    tv = rate["torchvision"]
    print()
    print("| pipeline | images/s | vs torchvision | decode ceiling (img/s) | vs ceiling | JIT/start-up (s) | stored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| torchvision ImageFolder + DataLoader (PIL) | {tv:.0f} | 1.00x | {rate['decode source']:.0f} | "
          f"{tv / rate['decode source']:.2f} | {warmup['torchvision']:.1f} | {storage['torchvision']} |")
    for name in names:
        ceiling = rate.get(f"decode {name}", math.nan)
        vs = f"{rate[name] / ceiling:.2f}" if math.isfinite(ceiling) else "n/a (raw)"
        ceiling_text = f"{ceiling:.0f}" if math.isfinite(ceiling) else "n/a"
        print(f"| ffcv {name} | {rate[name]:.0f} | {rate[name] / tv:.2f}x | {ceiling_text} | {vs} | "
              f"{warmup[name]:.1f} | {storage[name]} |")
    print()
    print(f"where the time goes, ffcv {profiled} (steady; per image per worker):")
    rows = [("decode only (libjpeg-turbo)", rate[f"decode {profiled}"]) if f"decode {profiled}" in rate else None,
            ("decode + RandomResizedCrop", rate["profile crop"]), ("  + flip", rate["profile flip"]),
            ("  + ToTensor + NCHW uint8 (full)", rate[profiled])]
    for label, value in filter(None, rows):
        print(f"  {label:<36}{value:8.0f} img/s  {1e3 * args.workers / value:6.2f} ms")
    print(f"  JIT warm-up of a loader: {warmup[profiled]:.1f} s (first epoch, before any batch)")


if __name__ == "__main__":
    main()
