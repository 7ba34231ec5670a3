"""What decoding only the crop saves: the decode stage's box decode (libjpeg's partial decode,
``shufflenet_pl/data/jpeg_box.c``) vs the full decode FFCV's stock pipeline does, on the JPEGs a
``.beton`` holds.

    python benchmarks/partial_decode.py /tmp/shufflenet-pl-bench/jpg_max_320_q90.beton \\
        --json benchmarks/results/cpu-2core/partial_decode.json

The boxes are the stage's own (seeded RandomResizedCrop, scale 0.08-1, ``--res`` output). Rows, one
thread, after a warm-up pass, interleaved, median over ``--rounds`` passes: FFCV's full decode
(``libffcv.imdecode``, TurboJPEG), the full image through the box kernel, and each crop box through it
(rows above skipped, columns cropped to whole iMCUs, rows below never decoded; at the DCT scale the
stage picks). Both use the same fast integer IDCT, so the pixels of a box are those of a full decode.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("beton", type=Path, help="a .beton of JPEGs (e.g. the one data_throughput.py writes)")
    parser.add_argument("--images", type=int, default=400, help="JPEGs to time (default 400)")
    parser.add_argument("--res", type=int, default=176, help="output side the boxes are decoded for (default 176)")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes per row, interleaved (default 5)")
    parser.add_argument("--json", type=Path, help="write the numbers there")
    args = parser.parse_args(argv)
    if not args.beton.is_file():
        parser.error(f"{args.beton} does not exist; run benchmarks/data_throughput.py first (it writes it)")
    if args.images < 1 or args.rounds < 1 or args.res < 1:
        parser.error("need --images, --rounds and --res >= 1")

    from ffcv.libffcv import imdecode

    from benchmarks.data_throughput import stored_jpegs
    from shufflenet_pl.data import ffcv_decode as fd

    jpegs = stored_jpegs(args.beton)[: args.images]
    if not jpegs:
        parser.error(f"{args.beton} holds no JPEG images")
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    boxes = [fd.random_crop_box(h, w, 0.08, 1.0, *log_ratio, 0, 0, i)[:4] for i, (_, h, w) in enumerate(jpegs)]
    temp = np.empty(max(h * w * 3 for _, h, w in jpegs), np.uint8)

    def full_ffcv() -> None:
        for data, h, w in jpegs:
            imdecode(data, temp, h, w, h, w, 0, 0, 1, 1, False, False)

    def box_kernel(whole: bool) -> Callable[[], None]:
        def run() -> None:
            for (data, h, w), box in zip(jpegs, boxes):
                # the whole image at full scale: an output as large as the image keeps the DCT scale at 8/8
                args_ = (0, 0, h, w, h, w) if whole else (*box, args.res, args.res)
                if fd.decode_jpeg_box(data, h, w, *args_, temp)[0] != 0:
                    raise RuntimeError("libjpeg could not decode an image of the .beton")

        return run

    rows: Dict[str, Callable[[], None]] = {
        "ffcv_full_decode": full_ffcv,
        "kernel_full_decode": box_kernel(True),
        "box_decode": box_kernel(False),
    }
    times: Dict[str, List[float]] = {name: [] for name in rows}
    for run in rows.values():
        run()  # warm-up: compilation, page cache
    for round_index in range(args.rounds):
        for name in list(rows) if round_index % 2 == 0 else list(rows)[::-1]:
            start = time.perf_counter()
            rows[name]()
            times[name].append((time.perf_counter() - start) / len(jpegs))
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    share = float(np.mean([bh * bw / (h * w) for (_, h, w), (_, _, bh, bw) in zip(jpegs, boxes)]))
    report = {
        "beton": args.beton.name,
        "images": len(jpegs),
        "res": args.res,
        "rounds": args.rounds,
        "mean_box_area_share": share,
        "ms_per_image": ms,
        "box_vs_full": ms["box_decode"] / ms["ffcv_full_decode"],
    }
    print(
        f"{len(jpegs)} JPEGs of {args.beton.name}; boxes cover {100 * share:.0f} % of the image on average; "
        f"median of {args.rounds} interleaved passes, one thread"
    )
    for name, value in ms.items():
        print(f"  {name:<20}{value:7.3f} ms/image   {value / ms['ffcv_full_decode']:5.2f}x FFCV's full decode")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
