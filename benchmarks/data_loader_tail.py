"""Where our FFCV stage's loader time goes after the decode: the tensor tail.

    python benchmarks/data_loader_tail.py /tmp/shufflenet-pl-bench/jpg_max_320_q90.beton --json out.json

Runs the datamodule's training decode stage (:class:`SeededRandomResizedCropDecoder`, 176 px) in
FFCV's Loader over one ``.beton`` (e.g. the one ``data_throughput.py`` writes into its work dir)
with four tails, interleaved, at 1 and 2 workers: the decoder's uint8 NHWC numpy batch alone; +
``ToTensor``; + ``ToTorchImage(channels_last=True)`` (a view: what the datamodule does on a GPU);
+ ``ToTorchImage(channels_last=False)`` (a contiguous NCHW copy, made serially in FFCV's iterator
thread: what ``data_throughput.py --layout contiguous`` asks of both FFCV pipelines). The ratio of
the last two is the cost of that copy.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tails() -> Dict[str, Callable[[], list]]:
    from ffcv.transforms import ToTensor, ToTorchImage

    return {
        "numpy_nhwc": lambda: [],
        "tensor_nhwc": lambda: [ToTensor()],
        "nchw_view": lambda: [ToTensor(), ToTorchImage(channels_last=True)],
        "nchw_copy": lambda: [ToTensor(), ToTorchImage(channels_last=False)],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("beton", type=Path, help="a .beton of JPEGs or raw images")
    parser.add_argument("--res", type=int, default=176)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the rates there")
    args = parser.parse_args(argv)
    if not args.beton.is_file():
        parser.error(f"{args.beton} does not exist; run benchmarks/data_throughput.py first (it writes it)")

    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor

    from shufflenet_pl.data.ffcv_decode import SeededRandomResizedCropDecoder

    report: Dict[str, Dict[str, float]] = {}
    for workers in args.workers:
        loaders = {}
        for name, tail in _tails().items():
            image = [SeededRandomResizedCropDecoder((args.res, args.res), seed=0), *tail()]
            loaders[name] = Loader(
                str(args.beton),
                batch_size=args.batch,
                num_workers=workers,
                order=OrderOption.SEQUENTIAL,
                drop_last=True,
                os_cache=True,
                pipelines={"image": image, "label": [IntDecoder(), ToTensor()]},
            )
        for loader in loaders.values():  # warm-up: JIT
            for _ in loader:
                pass
        rates: Dict[str, List[float]] = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                start, count = time.perf_counter(), 0
                for images, _ in loader:
                    count += len(images)
                rates[name].append(count / (time.perf_counter() - start))
        report[str(workers)] = {name: float(np.median(values)) for name, values in rates.items()}
        row = report[str(workers)]
        for name, rate in row.items():
            print(f"{workers} worker(s)  {name:12s} {rate:8.0f} img/s")
        print(f"{workers} worker(s)  NCHW copy / view: {row['nchw_copy'] / row['nchw_view']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "beton": args.beton.name,
                    "res": args.res,
                    "batch": args.batch,
                    "rounds": args.rounds,
                    "images_per_s": report,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
