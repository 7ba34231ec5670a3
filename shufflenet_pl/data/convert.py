"""``shufflenet-pl convert``: an ImageFolder tree (ILSVRC layout) -> ``train.beton`` / ``val.beton``.

Every file is decoded once, in FFCV's writer processes: CMYK, grayscale, palette and RGBA JPEGs, and
PNGs named ``.JPEG``, are converted to RGB; a truncated or non-image file is marked and written as a
placeholder (FFCV's workers would otherwise die and its progress loop wait forever), and then either
left out and listed (``--on-error skip``: the good images are written again without it) or stops the
run with the full list and no output (``--on-error stop``, the default). JPEGs that fit
``--max-side`` and ``--quality`` are stored as their own bytes (pass-through). JPEG EXIF orientation
is applied (as the ImageFolder datamodule does: both decode to the pixels of :func:`open_rgb`). A
class folder without images is refused, naming it. The ``.beton`` is written under a temporary name
and renamed when complete, next to a sidecar ``<name>.beton.json`` (classes, settings, source
fingerprint, byte count, skipped files, chunk CRC-32s) that makes a re-run with the
same inputs and settings a no-op, tells the datamodule the class names, and lets it recognise a
truncated copy (:func:`check_beton_complete`) or a damaged one (:mod:`shufflenet_pl.data.beton_check`).
The writer's worker processes die with the converter (a ``kill -9`` leaves no orphan writing on),
and temporaries of a converter that died are removed by the next run.
"""

import argparse
import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import queue as queue_module
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np


from ..files import NoSpaceError, no_space_error
from .beton_check import region_checksums
from .beton_format import TruncatedBetonError, check_beton_complete
from .images import (
    PassThrough,
    StoredJPEG,
    check_images,
    die_with_parent,
    load_rgb,
    open_rgb,
    read_for_writing,
    stored_jpeg,
    unreadable_reason,
)
from ..errors import InputError
from .common import private_temporary_path, usable_cpus
from .progress import Progress

__all__ = [
    "ConversionResult",
    "PassThrough",
    "StoredJPEG",
    "check_images",
    "read_for_writing",
    "stored_jpeg",
    "EmptyClassFolderError",
    "TruncatedBetonError",
    "check_beton_complete",
    "check_class_folders",
    "convert_imagefolder",
    "convert_split",
    "convert_main",
    "die_with_parent",
    "load_rgb",
    "open_rgb",
    "private_temporary_path",
    "remove_stale_temporaries",
    "scan_imagefolder",
]

WriteMode = Literal["jpg", "raw", "proportion"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_FORMAT_VERSION = 1
_MAX_LISTED_FILES = 200_000


@dataclass
class ConversionResult:
    """What ``convert_split`` did: the output, images written, files skipped (path, reason)."""

    beton: Path
    written: int
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    reused: bool = False
    passed_through: int = 0  # JPEGs stored as their own bytes


class UnreadableImagesError(RuntimeError):
    """Some source files cannot be decoded (``on_error="stop"``)."""


class EmptyClassFolderError(InputError):
    """A class folder holds no image files (it would add a class that nothing teaches)."""


def _has_image(folder: Path) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(file.lower().endswith(IMAGE_EXTENSIONS) for file in files):
            return True
    return False


def check_class_folders(split_dir: Path, classes: Sequence[str]) -> None:
    """Refuse a split in which an existing class folder holds no image file.

    Both the converter and the ImageFolder datamodule call this, so that an empty folder is one
    named error everywhere (not a silent extra class, not torchvision's traceback).

    Raises:
        EmptyClassFolderError: naming the empty folders.
    """
    empty = [name for name in classes if (split_dir / name).is_dir() and not _has_image(split_dir / name)]
    if empty:
        listed = ", ".join(str(split_dir / name) for name in empty[:5]) + (
            f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        )
        raise EmptyClassFolderError(
            f"{len(empty)} class folder(s) hold no image ({', '.join(IMAGE_EXTENSIONS)}): {listed}; "
            f"remove them or add images (an empty folder would still be a class)"
        )


def scan_imagefolder(
    split_dir: Path, classes: Optional[Sequence[str]] = None
) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Classes (sorted folder names, or ``classes``) and ``(path, label)`` pairs in sorted order."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir} does not exist; expected an ImageFolder split (one folder per class)")
    found = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    if not found:
        raise FileNotFoundError(f"{split_dir} has no class folders")
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise ValueError(
            f"{split_dir} has class folders that the training split lacks: {sorted(set(found) - set(classes))[:5]}"
        )
    check_class_folders(split_dir, classes)
    samples: List[Tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for root, _, files in sorted(os.walk(folder, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(root, file), label))
    return list(classes), samples


# PIL's single-channel modes wider than 8 bits: ``convert("RGB")`` clips them (a 16-bit photo turns white).
def _pass_through_field(image_field: Any) -> Any:
    """``field`` (an FFCV ``RGBImageField``, kept as that type: the ``.beton`` header records it) also
    accepting :class:`StoredJPEG` values, written as JPEG entries of their own bytes."""
    from ffcv.fields.rgb_image import IMAGE_MODES

    encode = image_field.encode

    def encode_stored(destination: Any, image: Any, malloc: Any) -> None:
        if not isinstance(image, StoredJPEG):
            return encode(destination, image, malloc)
        destination["mode"] = IMAGE_MODES["jpg"]
        destination["height"], destination["width"] = image.height, image.width
        destination["data_ptr"], storage = malloc(image.data.nbytes)
        storage[:] = image.data

    image_field.encode = encode_stored
    return image_field


class _Source:
    """Indexable ``(rgb_array, label)`` for FFCV's writer; also fixes the per-image randomness of
    ``write_mode=proportion`` (FFCV draws it from numpy's global RNG) so that re-runs are identical.

    With ``failed`` (one shared byte per sample, visible across the writer's forked processes), a file
    that cannot be decoded is marked there and written as a placeholder: finding bad files happens in
    the pass that writes, so every good image is decoded once. The converter then drops the output and
    lists or leaves out the marked files."""

    def __init__(
        self,
        samples: Sequence[Tuple[str, int]],
        seed: int,
        failed: Optional[Any] = None,
        pass_through: Optional[PassThrough] = None,
        passed: Optional[Any] = None,
    ) -> None:
        self.samples = list(samples)
        self.seed = seed
        self.failed = failed
        self.pass_through = pass_through
        self.passed = passed
        self.parent_pid = os.getpid()
        self._guarded_pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple["np.ndarray | StoredJPEG", int]:
        if (
            self._guarded_pid != os.getpid() and os.getpid() != self.parent_pid
        ):  # first sample in an FFCV writer process
            die_with_parent(self.parent_pid)
            self._guarded_pid = os.getpid()
        path, label = self.samples[index]
        np.random.seed((self.seed * 1_000_003 + index) % 2**32)
        try:
            image = read_for_writing(path, self.pass_through)
        except Exception:  # noqa: BLE001 - any failure to decode is reported per file afterwards
            if self.failed is None:
                raise
            self.failed[index] = 1
            return _PLACEHOLDER, label
        if isinstance(image, StoredJPEG) and self.passed is not None:
            self.passed[index] = 1
        return image, label


_PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)


def _temporary_owner(path: Path, name: str) -> Optional[Tuple[str, int]]:
    """``(host, pid)`` of a :func:`private_temporary_path` of ``name``, or ``None``."""
    prefix = f".{name}.tmp-"
    if not path.name.startswith(prefix):
        return None
    host, _, pid = path.name[len(prefix) :].rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> List[Path]:
    """Remove the temporaries of ``target`` (and of its sidecar) that a converter on this host left
    when it died (its pid no longer runs); returns them. Temporaries of a converter that still runs
    are left alone, and those of other hosts are reported on stderr (their process may still run)."""
    removed: List[Path] = []
    if not target.parent.is_dir():
        return removed
    host = socket.gethostname()
    for name in (target.name, target.name + ".json"):
        for path in sorted(target.parent.glob(f".{name}.tmp-*")):
            owner = _temporary_owner(path, name)
            if owner is None:
                continue
            if owner[0] != host:
                print(
                    f"warning: {path} was left by a converter on {owner[0]}; remove it if that one has ended",
                    file=sys.stderr,
                )
            elif not _alive(owner[1]):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


_EXIT_NO_SPACE = 28  # a writer process's exit status when its disk is full (errno ENOSPC)


@contextlib.contextmanager
def _ffcv_writer(display: Progress, beton: Path) -> Iterator[None]:
    """Run FFCV's writer with one progress display and no hang. FFCV draws its own tqdm bar (it takes
    no option to hide or redirect it): it counts into ``display`` instead. FFCV's main process waits for
    its writer processes by polling a counter, forever if one of them died (a full disk, a crash): the
    poll also checks the writer processes, and a dead one ends the conversion with one error."""
    import ffcv.writer

    started: List[multiprocessing.Process] = []
    original = (ffcv.writer.tqdm, ffcv.writer.sleep, ffcv.writer.Process, ffcv.writer.worker_job_indexed_dataset)
    original_job, original_sleep = original[3], original[1]

    class TrackedProcess(multiprocessing.Process):
        def start(self) -> None:
            super().start()
            started.append(self)

    def quiet_job(*args: Any) -> None:
        try:
            original_job(*args)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                os._exit(_EXIT_NO_SPACE)  # the main process reports it, once
            raise

    def watchful_sleep(seconds: float) -> None:
        original_sleep(seconds)
        dead = [p for p in started if p.exitcode not in (None, 0)]
        if not dead:
            return
        for process in started:
            if process.exitcode is None:
                process.kill()
            process.join()
        if any(p.exitcode == _EXIT_NO_SPACE for p in dead):
            raise no_space_error(beton, OSError(errno.ENOSPC, "no space left"))
        raise RuntimeError(f"an FFCV writer process died (exit status {dead[0].exitcode}) writing {beton}")

    main_pid = os.getpid()
    original_queue = ffcv.writer.Queue

    def watched_queue(*args: Any) -> Any:
        # The main process's wait for the writers' allocation lists, also watched.
        queue = original_queue(*args)
        plain_get = queue.get

        def get(block: bool = True, timeout: Optional[float] = None) -> Any:
            if os.getpid() != main_pid or not block or timeout is not None:
                return plain_get(block, timeout)
            while True:
                try:
                    return plain_get(True, 0.2)
                except queue_module.Empty:
                    watchful_sleep(0)

        queue.get = get
        return queue

    ffcv.writer.tqdm, ffcv.writer.sleep, ffcv.writer.Queue = display.as_tqdm, watchful_sleep, watched_queue
    ffcv.writer.Process, ffcv.writer.worker_job_indexed_dataset = TrackedProcess, quiet_job
    try:
        yield
    finally:
        ffcv.writer.tqdm, ffcv.writer.sleep, ffcv.writer.Process, ffcv.writer.worker_job_indexed_dataset = original
        ffcv.writer.Queue = original_queue


def _fingerprint(samples: Sequence[Tuple[str, int]], root: Path) -> str:
    digest = hashlib.sha256()
    for path, label in samples:
        # A broken link counts by the link itself: it is then refused or skipped with the undecodable files.
        stat = os.stat(path) if os.path.exists(path) else os.lstat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _select(samples: List[Tuple[str, int]], limit: Optional[int], seed: int) -> List[Tuple[str, int]]:
    """``limit`` samples drawn at random (seeded), kept in folder order; all when ``None``."""
    if limit is None or limit >= len(samples):
        return samples
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def convert_split(
    split_dir: "str | Path",
    beton: "str | Path",
    write_mode: WriteMode = "jpg",
    max_side: Optional[int] = None,
    jpeg_quality: int = 90,
    compress_probability: float = 0.5,
    num_workers: int = 2,
    limit: Optional[int] = None,
    on_error: Literal["stop", "skip"] = "stop",
    classes: Optional[Sequence[str]] = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    pass_through: bool = True,
) -> ConversionResult:
    """Write one ImageFolder split to ``beton`` (and ``beton.json``); reuse an up-to-date one.

    Args:
        split_dir: ``<root>/train`` or ``<root>/val``: one folder per class.
        beton: output file.
        write_mode: ``jpg`` (JPEG-compressed: small, CPU-bound decode), ``raw`` (uint8 pixels:
            fastest to load, ~6-10x larger), or ``proportion`` (JPEG for a random
            ``compress_probability`` share of the images, raw for the rest).
        max_side: downscale images whose longer side exceeds this (None keeps the size).
        jpeg_quality: quality of the re-encoded JPEGs.
        compress_probability: JPEG share for ``proportion``.
        num_workers: processes for checking and writing.
        limit: convert only this many images (a seeded random subset), e.g. for a quick trial.
        on_error: what to do with files that cannot be decoded: ``stop`` (raise, listing them
            all) or ``skip`` (leave them out and list them in the result and the sidecar).
        classes: class order to use (the training split's, for validation).
        seed: seed of ``limit``'s subset and of ``proportion``'s choices.
        force: rewrite even when an up-to-date output exists.
        progress: show progress bars.
        pass_through: with ``write_mode="jpg"``, store JPEGs that already fit ``max_side`` (complete,
            baseline, YCbCr, upright, quantized no finer than ``jpeg_quality``) as their own bytes
            instead of decoding and re-encoding them.
    """
    split_dir, beton = Path(split_dir), Path(beton)
    if write_mode not in ("jpg", "raw", "proportion"):
        raise ValueError(f"write_mode must be jpg, raw or proportion, got {write_mode!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if not 0 <= compress_probability <= 1:
        raise ValueError(f"compress_probability must be in [0, 1], got {compress_probability}")
    if max_side is not None and max_side < 8:
        raise ValueError(f"max_side must be >= 8 pixels, got {max_side}")
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be stop or skip, got {on_error!r}")
    class_names, samples = scan_imagefolder(split_dir, classes)
    samples = _select(samples, limit, seed)
    if not samples:
        raise FileNotFoundError(f"{split_dir} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    settings: Dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "write_mode": write_mode,
        "max_side": max_side,
        "jpeg_quality": jpeg_quality,
        "compress_probability": compress_probability if write_mode == "proportion" else None,
        "limit": limit,
        "seed": seed,
        "on_error": on_error,
        "exif_transpose": True,  # files written before EXIF orientation was applied are rewritten
        "pass_through": pass_through and write_mode == "jpg",
    }
    fingerprint = _fingerprint(samples, split_dir)
    sidecar = beton.with_name(beton.name + ".json")
    for stale in remove_stale_temporaries(beton):
        print(f"removed {stale}, left by a converter that was killed", file=sys.stderr)
    if not force and sidecar.is_file() and beton.is_file():
        info = json.loads(sidecar.read_text())
        if (
            info.get("settings") == settings
            and info.get("source_fingerprint") == fingerprint
            and info.get("classes") == class_names
            and info.get("bytes") == beton.stat().st_size
        ):
            skipped_before = [tuple(s) for s in info.get("skipped", [])]
            return ConversionResult(
                beton, info["num_images"], skipped_before, reused=True, passed_through=info.get("passed_through", 0)
            )

    display = Progress(split_dir.name, enabled=progress)  # one bar for the split
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from . import quiet_numba  # noqa: F401

    beton.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_temporary_path(beton)
    image_field = RGBImageField(
        write_mode=write_mode,
        max_resolution=max_side,
        jpeg_quality=jpeg_quality,
        compress_probability=compress_probability,
    )
    pass_through = PassThrough(max_side or 2**31, jpeg_quality) if settings["pass_through"] else None
    if pass_through is not None:
        image_field = _pass_through_field(image_field)
    fields = {"image": image_field, "label": IntField()}
    passed_through = 0

    def write(chosen: Sequence[Tuple[str, int]], failed: Optional[Any]) -> None:
        nonlocal passed_through
        display.phase("write", len(chosen))
        passed = multiprocessing.RawArray("b", len(chosen))
        with _ffcv_writer(display, beton):
            DatasetWriter(str(tmp), fields, num_workers=max(1, num_workers)).from_indexed_dataset(
                _Source(chosen, seed, failed, pass_through, passed), chunksize=64
            )
        display.close()
        passed_through = sum(passed)

    try:
        if progress:
            print(f"writing {len(samples)} images of {split_dir} -> {beton}", file=sys.stderr)
        failed = multiprocessing.RawArray("b", len(samples))
        write(samples, failed)
        bad = [index for index in range(len(samples)) if failed[index]]
        skipped = [(samples[i][0], unreadable_reason(samples[i][0]) or "cannot be decoded") for i in bad]
        good = [sample for index, sample in enumerate(samples) if not failed[index]]
        if skipped and on_error == "stop":
            listing = "\n".join(f"  {path}: {reason}" for path, reason in skipped[:50])
            more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
            raise UnreadableImagesError(
                f"{len(skipped)} of {len(samples)} files in {split_dir} cannot be decoded:\n{listing}{more}\n"
                f"Fix or remove them, or pass --on-error skip to leave them out (they are then listed in "
                f"{sidecar.name})"
            )
        if not good:
            raise UnreadableImagesError(f"none of the {len(samples)} files in {split_dir} can be decoded")
        if skipped:  # rare: the output holds placeholders, so the good images are written again without them
            write(good, None)
        display.finish()
        info = {
            "classes": class_names,
            "num_images": len(good),
            "settings": settings,
            "source": str(split_dir.resolve()),
            "source_fingerprint": fingerprint,
            "bytes": tmp.stat().st_size,
            # Names in .beton order (for predictions); left out for huge splits (ImageNet train: ~50 MB).
            "files": [os.path.relpath(p, split_dir) for p, _ in good] if len(good) <= _MAX_LISTED_FILES else [],
            "skipped": [list(s) for s in skipped],
            "passed_through": passed_through,  # JPEGs stored as their own bytes
            **region_checksums(tmp),  # what the loader and `shufflenet-pl check` verify
        }
        tmp_sidecar = private_temporary_path(sidecar)
        tmp_sidecar.write_text(json.dumps(info, indent=1))
        sidecar.unlink(missing_ok=True)  # a crash between the two renames leaves no stale sidecar
        tmp.replace(beton)
        tmp_sidecar.replace(sidecar)
    except OSError as error:
        if error.errno == errno.ENOSPC and not isinstance(error, NoSpaceError):
            raise no_space_error(beton, error) from error
        raise
    finally:
        display.finish()
        tmp.unlink(missing_ok=True)
        private_temporary_path(sidecar).unlink(missing_ok=True)
    return ConversionResult(beton, len(good), skipped, passed_through=passed_through)


def convert_imagefolder(
    root: "str | Path", out_dir: "str | Path", splits: Sequence[str] = ("train", "val"), **kwargs: Any
) -> Dict[str, ConversionResult]:
    """Convert ``root/<split>`` to ``out_dir/<split>.beton`` for each split; the first split fixes
    the class order (keyword arguments as in :func:`convert_split`)."""
    root, out_dir = Path(root), Path(out_dir)
    results: Dict[str, ConversionResult] = {}
    classes: Optional[List[str]] = kwargs.pop("classes", None)
    for split in splits:
        results[split] = convert_split(root / split, out_dir / f"{split}.beton", classes=classes, **kwargs)
        if classes is None:
            classes = json.loads((out_dir / f"{split}.beton.json").read_text())["classes"]
    return results


def convert_main(argv: Optional[List[str]] = None) -> None:
    """Command line of ``shufflenet-pl convert``."""

    parser = argparse.ArgumentParser(
        prog="shufflenet-pl convert",
        description="Convert an ImageFolder tree (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG) to FFCV "
        "files OUT/train.beton and OUT/val.beton for shufflenet_pl.data.FFCVImageNetDataModule. Re-running with "
        "the same inputs and settings reuses the existing files.",
        epilog="ImageNet as FFCV's ResNet-50 example stores it: --max-side 500 --write-mode proportion "
        "--compress-probability 0.5 --quality 90. See the README's data throughput table for measured settings.",
    )
    parser.add_argument("root", type=Path, help="ImageFolder root holding the split folders")
    parser.add_argument("out", type=Path, help="output folder for <split>.beton (+ .beton.json)")
    parser.add_argument(
        "--splits", nargs="+", default=["train", "val"], help="split folders to convert (default: train val)"
    )
    parser.add_argument(
        "--write-mode",
        choices=["jpg", "raw", "proportion"],
        default="jpg",
        help="jpg: JPEG (small); raw: uint8 pixels (fastest to load, large); proportion: a mix (default: jpg)",
    )
    parser.add_argument(
        "--max-side", type=int, default=None, help="downscale images whose longer side is larger (default: keep)"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    parser.add_argument(
        "--compress-probability", type=float, default=0.5, help="JPEG share for --write-mode proportion"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="writer processes (default: every CPU this process may use: its affinity, or SLURM_CPUS_PER_TASK)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="convert only N images per split (seeded random subset)"
    )
    parser.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="undecodable files: stop listing them (default), or skip them and list them",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit and of proportion's choices")
    parser.add_argument("--force", action="store_true", help="rewrite even if the outputs are up to date")
    parser.add_argument(
        "--no-pass-through",
        action="store_true",
        help="decode and re-encode every image; by default a JPEG that already fits --max-side (complete, "
        "baseline, YCbCr, upright, not finer than --quality) is stored as its own bytes: no decode, no "
        "re-encode, no loss",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = usable_cpus()
    elif args.workers < 1:
        parser.exit(2, f"error: --workers must be >= 1, got {args.workers}\n")
    if not args.quiet:
        print(f"converting with {args.workers} worker processes", file=sys.stderr)
    try:
        results = convert_imagefolder(
            args.root,
            args.out,
            args.splits,
            write_mode=args.write_mode,
            max_side=args.max_side,
            jpeg_quality=args.quality,
            compress_probability=args.compress_probability,
            num_workers=args.workers,
            limit=args.limit,
            on_error=args.on_error,
            seed=args.seed,
            force=args.force,
            progress=not args.quiet,
            pass_through=not args.no_pass_through,
        )
    except (FileNotFoundError, ValueError, UnreadableImagesError) as err:  # EmptyClassFolderError is a ValueError
        parser.exit(2, f"error: {err}\n")
    except NoSpaceError as err:
        parser.exit(1, f"error: {err.strerror}\n")
    for split, result in results.items():
        size = result.beton.stat().st_size / 2**20
        state = "up to date" if result.reused else "written"
        stored = f" ({result.passed_through} stored as their own bytes)" if result.passed_through else ""
        print(f"{split}: {result.beton} {state}: {result.written} images{stored}, {size:.1f} MiB")
        for path, reason in result.skipped:
            print(f"  skipped {path}: {reason}")


if __name__ == "__main__":
    convert_main()
