"""``shufflenet-pl prepare-imagenet``: sort ImageNet's official validation images (one flat folder)
into the ``val/<wnid>/`` layout that ``convert`` and the ImageFolder datamodule read.

Labels come from either
- the public copies' ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of the
  prediction string is the image's wnid), or
- the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line ``i`` holds the ILSVRC2012_ID, 1-1000,
  of ``ILSVRC2012_val_{i:08d}.JPEG``) together with the ID -> wnid mapping: the devkit's ``meta.mat``
  (read with scipy) or a text file with one wnid per line in ILSVRC2012_ID order.

Everything is checked before a file moves; the sorted tree is built under a temporary name and renamed
into place when complete, so an error or an interrupt never leaves a half-sorted folder.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

__all__ = ["PrepareError", "prepare_imagenet", "prepare_imagenet_main", "read_labels"]

WNID = re.compile(r"n\d{8}")
LINK_MODES = ("move", "hardlink", "symlink", "copy")


class PrepareError(ValueError):
    """The inputs do not match; the message names the file and what to do."""


def _preview(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_solution_csv(path: Path) -> Dict[str, str]:
    """``LOC_val_solution.csv`` -> {image stem: wnid}."""
    labels: Dict[str, str] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise PrepareError(f"{path}: expected the columns ImageId,PredictionString (LOC_val_solution.csv)")
        for line, row in enumerate(reader, start=2):
            image, tokens = row["ImageId"].strip(), (row["PredictionString"] or "").split()
            if not tokens or not WNID.fullmatch(tokens[0]):
                raise PrepareError(f"{path}:{line}: {image!r} has no wnid (n########) first in PredictionString")
            if image in labels:
                raise PrepareError(f"{path}:{line}: {image!r} is listed twice")
            labels[image] = tokens[0]
    return labels


def read_synsets(path: Path) -> Dict[int, str]:
    """ILSVRC2012_ID -> wnid, from the devkit's ``meta.mat`` or a text file (one wnid per line, ID order)."""
    if path.suffix == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError as err:
            raise PrepareError(
                f"{path}: reading meta.mat needs scipy (pip install scipy), "
                "or pass --meta a text file with one wnid per line in ILSVRC2012_ID order"
            ) from err
        try:
            synsets = loadmat(str(path), squeeze_me=True)["synsets"]
            mapping = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise PrepareError(
                f"{path}: not the devkit's meta.mat (no synsets with ILSVRC2012_ID, WNID, num_children): {err}"
            ) from err
    else:
        mapping = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                wnid = line.split()[0]
                if not WNID.fullmatch(wnid):
                    raise PrepareError(f"{path}:{number}: {wnid!r} is not a wnid (n########)")
                mapping[len(mapping) + 1] = wnid
    if not mapping:
        raise PrepareError(f"{path}: no classes found")
    return mapping


def read_ground_truth(path: Path, synsets: Dict[int, str]) -> Dict[str, str]:
    """The devkit's ground truth -> {image stem: wnid}."""
    labels: Dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            class_id = int(line)
        except ValueError:
            raise PrepareError(f"{path}:{number}: {line!r} is not a class id (one integer per line)") from None
        if class_id not in synsets:
            raise PrepareError(
                f"{path}:{number}: class id {class_id} is unknown to the synset mapping "
                f"({len(synsets)} classes); is --meta the file from the same devkit?"
            )
        labels[f"ILSVRC2012_val_{number:08d}"] = synsets[class_id]
    return labels


def read_labels(labels: Path, meta: Optional[Path] = None) -> Dict[str, str]:
    """{image stem: wnid} from a LOC_val_solution.csv, or a devkit ground truth and its ``meta``."""
    for path in (labels, meta):
        if path is not None and not path.is_file():
            raise PrepareError(f"{path}: no such file")
    if labels.suffix == ".csv":
        if meta is not None:
            raise PrepareError(f"{labels}: a LOC_val_solution.csv carries the wnids itself; leave out --meta")
        return read_solution_csv(labels)
    if meta is None:
        raise PrepareError(
            f"{labels}: a devkit ground-truth file holds class ids; pass --meta "
            "ILSVRC2012_devkit_t12/data/meta.mat (or a wnid list in ILSVRC2012_ID order)"
        )
    return read_ground_truth(labels, read_synsets(meta))


def _place(source: Path, target: Path, link: str) -> None:
    if link == "move":
        os.replace(source, target)
    elif link == "hardlink":
        os.link(source, target)
    elif link == "symlink":
        os.symlink(source.resolve(), target)
    else:
        shutil.copy2(source, target)


def prepare_imagenet(
    val_dir: Path,
    labels: Path,
    meta: Optional[Path] = None,
    out: Optional[Path] = None,
    link: str = "move",
    progress: bool = True,
) -> Dict[str, int]:
    """Sort the flat ``val_dir`` into ``<wnid>/`` folders (in place, or into ``out``); return images per class."""
    if link not in LINK_MODES:
        raise PrepareError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if not val_dir.is_dir():
        raise PrepareError(f"{val_dir}: no such folder (the flat folder of ILSVRC2012_val_*.JPEG)")
    entries = list(val_dir.iterdir())
    folders = [e.name for e in entries if e.is_dir()]
    if folders:
        raise PrepareError(
            f"{val_dir}: holds folders ({_preview(folders)}); it looks sorted already. "
            "Pass the flat folder of ILSVRC2012_val_*.JPEG"
        )
    images = {e.stem: e for e in entries if e.is_file() and not e.name.startswith(".")}
    wnids = read_labels(labels, meta)
    missing = [name for name in wnids if name not in images]
    if missing:
        raise PrepareError(
            f"{labels}: {len(missing)} of its {len(wnids)} images are not in {val_dir} "
            f"({_preview(missing)}); is the folder complete?"
        )
    unlabelled = [images[name].name for name in images if name not in wnids]
    if unlabelled:
        raise PrepareError(
            f"{val_dir}: {len(unlabelled)} of its {len(images)} files have no label in {labels} "
            f"({_preview(unlabelled)}); remove them or use the label file of this set"
        )
    in_place = out is None
    if in_place and link == "symlink":
        raise PrepareError("--link symlink in place would point into the flat folder it replaces; pass --out DIR")
    final = val_dir if in_place else out
    if not in_place and final.exists() and any(final.iterdir()):
        raise PrepareError(f"{final}: exists and is not empty; pass a new folder to --out")
    work = final.with_name(f".{final.name}.sorting-{os.getpid()}")
    flat = val_dir.with_name(f".{val_dir.name}.flat-{os.getpid()}")
    placed: List[tuple] = []
    counts: Dict[str, int] = {}
    try:
        work.mkdir(parents=True)
        for wnid in sorted(set(wnids.values())):
            (work / wnid).mkdir()
        for name in tqdm(sorted(wnids), desc=f"sorting {val_dir.name}", unit="img", disable=not progress):
            source, wnid = images[name], wnids[name]
            target = work / wnid / source.name
            _place(source, target, link)
            placed.append((source, target))
            counts[wnid] = counts.get(wnid, 0) + 1
        if in_place:
            os.replace(val_dir, flat)
            os.replace(work, val_dir)
            shutil.rmtree(flat)  # empty after a move; hardlinks or copies of the originals otherwise
        else:
            if final.exists():
                final.rmdir()
            os.replace(work, final)
    except BaseException:
        if in_place and flat.exists() and not val_dir.exists():
            os.replace(flat, val_dir)
        if link == "move":  # put every moved file back where it was
            for source, target in reversed(placed):
                if target.exists() and not source.exists():
                    os.replace(target, source)
        shutil.rmtree(work, ignore_errors=True)
        raise
    return counts


def prepare_imagenet_main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="shufflenet-pl prepare-imagenet",
        description="Sort ImageNet's official validation images (one flat folder of ILSVRC2012_val_*.JPEG)\n"
        "into val/<wnid>/ class folders, the layout `shufflenet-pl convert` and the ImageFolder\n"
        "datamodule read. Everything is checked first; the sorted tree replaces the flat folder\n"
        "only when complete.",
        epilog="examples:\n"
        "  shufflenet-pl prepare-imagenet /datasets/imagenet/val --labels LOC_val_solution.csv\n"
        "  shufflenet-pl prepare-imagenet /datasets/imagenet/val \\\n"
        "      --labels ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt \\\n"
        "      --meta ILSVRC2012_devkit_t12/data/meta.mat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("val_dir", type=Path, help="the flat folder of validation images")
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt",
    )
    parser.add_argument(
        "--meta",
        type=Path,
        help="with a devkit ground truth: the devkit's meta.mat (needs scipy), or a text file "
        "with one wnid per line in ILSVRC2012_ID order",
    )
    parser.add_argument(
        "--out", type=Path, help="write the sorted tree here and keep the flat folder (default: sort VAL_DIR in place)"
    )
    parser.add_argument(
        "--link",
        choices=LINK_MODES,
        default="move",
        help="how files get into the sorted tree (default move; symlink needs --out)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        counts = prepare_imagenet(args.val_dir, args.labels, args.meta, args.out, args.link, not args.no_progress)
    except (PrepareError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    total = sum(counts.values())
    print(
        f"{args.out or args.val_dir}: {total:,} images in {len(counts)} class folders "
        f"({min(counts.values())}-{max(counts.values())} per class)"
    )
