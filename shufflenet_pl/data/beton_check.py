"""Damaged ``.beton`` files found: chunk checksums recorded by the converter, verified while training and by
``shufflenet-pl check``.

The converter records a CRC-32 of every :data:`CHUNK_BYTES` chunk of the finished file in its sidecar
``<name>.beton.json`` (``chunk_bytes``, ``chunk_crc32``): one streaming pass before the file is renamed into
place. A damaged chunk (a bit flip on disk, a bad copy) is mapped to the images that have bytes in it through
FFCV's allocation table (``ffcv.types.ALLOC_TABLE_TYPE``; metadata rows count for their image; the header,
the field descriptors and the allocation table count for every image).

While training, :class:`BackgroundCheck` verifies a file's chunks in a daemon thread (under DDP each rank a
disjoint share), paced to :data:`CPU_SHARE` of the loader's decoding threads, and prints one line if any
chunk is damaged. ``shufflenet-pl check`` (:func:`check_main`) verifies on demand, optionally decoding every
image. A file whose sidecar records no checksums (written by an older converter) is not an error: a note says
how to enable the check. Nothing here imports FFCV or numba at module import.
"""

import argparse
import json
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "CPU_SHARE",
    "BackgroundCheck",
    "ChunkReport",
    "check_chunks",
    "check_main",
    "chunk_checksums",
    "corrupt_images",
    "damage_line",
    "damaged_chunks",
    "images_in_chunks",
    "recorded_checksums",
]

#: Bytes per checksummed chunk (a 60 GB ImageNet ``train.beton``: ~15,000 checksums, ~200 KB of sidecar).
CHUNK_BYTES = 4 << 20
#: Time share of one CPU the background check may take per loader decoding thread; CRC-32 runs at
#: ~2 GB/s, so a share of 1.5 % keeps pace with a loader that reads ~30 MB/s per thread (JPEG ImageNet).
CPU_SHARE = 0.015
FIX = "convert it again (shufflenet-pl convert ... --force) or copy it again"


def _sidecar(beton: Path) -> Path:
    return beton.with_name(beton.name + ".json")


def chunk_checksums(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Dict[str, Any]:
    """The sidecar keys for ``path``: ``chunk_bytes`` and ``chunk_crc32`` (8 hex digits per chunk), in one
    streaming read of the file."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    sums: List[str] = []
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            sums.append(f"{zlib.crc32(view[:count]):08x}")
    return {"chunk_bytes": chunk_bytes, "chunk_crc32": sums}


def recorded_checksums(beton: Path) -> Optional[Tuple[int, List[int]]]:
    """``(chunk_bytes, crc32 per chunk)`` from the sidecar, or ``None`` where it records none."""
    sidecar = _sidecar(beton)
    if not sidecar.is_file():
        return None
    info = json.loads(sidecar.read_text())
    if "chunk_crc32" not in info or "chunk_bytes" not in info:
        return None
    return int(info["chunk_bytes"]), [int(value, 16) for value in info["chunk_crc32"]]


def _paced(cpu_share: float) -> Callable[[float], None]:
    """A pause after ``seconds`` of work that holds the work to ``cpu_share`` of the time (none at 1)."""

    def pause(seconds: float) -> None:
        if cpu_share < 1:
            time.sleep(seconds * (1 / cpu_share - 1))

    return pause


def damaged_chunks(
    beton: Path,
    chunk_bytes: int,
    expected: Sequence[int],
    chunks: Optional[Iterable[int]] = None,
    cpu_share: float = 1.0,
    stop: Optional[threading.Event] = None,
) -> List[int]:
    """Indices of the chunks of ``beton`` whose CRC-32 differs from ``expected`` (a chunk past the end of
    the file counts as damaged).

    Args:
        beton: the file.
        chunk_bytes: the chunk size the checksums were taken with.
        expected: the recorded CRC-32 of each chunk.
        chunks: which chunks to verify (default: all).
        cpu_share: time share of one CPU to take (sleeps between chunks); 1: as fast as it goes.
        stop: when set, verification ends early (with the chunks verified so far).
    """
    if not 0 < cpu_share <= 1:
        raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
    pause = _paced(cpu_share)
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    damaged: List[int] = []
    with open(beton, "rb", buffering=0) as handle:
        for index in range(len(expected)) if chunks is None else chunks:
            if stop is not None and stop.is_set():
                break
            start = time.perf_counter()
            handle.seek(index * chunk_bytes)
            count = handle.readinto(view)
            if count == 0 or zlib.crc32(view[:count]) != expected[index]:
                damaged.append(index)
            pause(time.perf_counter() - start)
    return damaged


def images_in_chunks(beton: Path, chunks: Sequence[int], chunk_bytes: int) -> int:
    """How many images have bytes in the chunks ``chunks`` of ``beton``: their data (FFCV's allocation
    table) or their metadata row; a chunk that holds part of the header, the field descriptors or the
    allocation table counts every image."""
    from ffcv.types import ALLOC_TABLE_TYPE, FieldDescType, HeaderType, get_handlers, get_metadata_type

    if not chunks:
        return 0
    header = np.fromfile(beton, dtype=HeaderType, count=1)[0]
    num_samples, num_fields = int(header["num_samples"]), int(header["num_fields"])
    table_ptr = int(header["alloc_table_ptr"])
    metadata_start = HeaderType.itemsize + num_fields * FieldDescType.itemsize
    ranges = [(i * chunk_bytes, (i + 1) * chunk_bytes) for i in chunks]
    if any(first < metadata_start or last > table_ptr for first, last in ranges):
        return num_samples
    fields = np.fromfile(beton, dtype=FieldDescType, count=num_fields, offset=HeaderType.itemsize)
    row_bytes = get_metadata_type(get_handlers(fields)).itemsize
    table = np.fromfile(beton, dtype=ALLOC_TABLE_TYPE, offset=table_ptr)
    starts = table["ptr"].astype(np.int64)
    ends = starts + table["size"].astype(np.int64)
    samples = table["sample_id"].astype(np.int64)
    hit = np.zeros(num_samples, dtype=bool)
    for first, last in ranges:
        hit[samples[(starts < last) & (ends > first)]] = True
        # Metadata rows (height, width, mode, data pointer, label) in the chunk.
        low = max(0, (first - metadata_start) // row_bytes)
        high = min(num_samples, -(-(last - metadata_start) // row_bytes))
        hit[low : max(low, high)] = True
    return int(hit.sum())


@dataclass(frozen=True)
class ChunkReport:
    """What a chunk check found in one file."""

    beton: Path
    total: int  # chunks in the file
    checked: int  # chunks this check verified (a rank's share)
    damaged: List[int]
    images: int  # images with bytes in the damaged chunks


def check_chunks(
    beton: Path,
    rank: int = 0,
    world_size: int = 1,
    cpu_share: float = 1.0,
    stop: Optional[threading.Event] = None,
) -> Optional[ChunkReport]:
    """Verify the chunks ``i`` of ``beton`` with ``i % world_size == rank`` against its sidecar; ``None``
    where the sidecar records no checksums."""
    recorded = recorded_checksums(beton)
    if recorded is None:
        return None
    chunk_bytes, expected = recorded
    share = range(rank, len(expected), world_size)
    damaged = damaged_chunks(beton, chunk_bytes, expected, share, cpu_share, stop)
    return ChunkReport(beton, len(expected), len(share), damaged, images_in_chunks(beton, damaged, chunk_bytes))


def damage_line(report: ChunkReport, rank: Optional[int] = None) -> str:
    """``3 of 120 chunks damaged (about 41 images)``, naming the rank's share when ``rank`` is given."""
    share = f", rank {rank}'s share of {report.checked}" if rank is not None else ""
    return f"{len(report.damaged)} of {report.total} chunks damaged{share} (about {report.images} images)"


def no_checksums_note(beton: Path) -> str:
    return (
        f"note: {beton}: its sidecar records no chunk checksums (an older converter wrote it); convert it "
        f"again (--force) to have damaged data found"
    )


class BackgroundCheck(threading.Thread):
    """A daemon thread that verifies this rank's share of ``beton``'s chunks while training runs and prints
    one line to ``out``: a warning if any chunk is damaged, a note if the file records no checksums (rank 0
    only), or why the check stopped if it failed. Silent on a good file.

    Args:
        beton: the file.
        rank: this process's global rank (verifies chunks ``i % world_size == rank``).
        world_size: number of processes.
        cpu_share: time share of one CPU the check may take.
        out: where the line goes (default: ``sys.stderr`` at the time of printing).
    """

    def __init__(
        self,
        beton: Path,
        rank: int = 0,
        world_size: int = 1,
        cpu_share: float = CPU_SHARE,
        out: Optional[TextIO] = None,
    ) -> None:
        super().__init__(name=f"chunk check {beton.name}", daemon=True)
        self.beton, self.rank, self.world_size = Path(beton), rank, world_size
        self.cpu_share = min(1.0, cpu_share)
        self.out = out
        self.stop_event = threading.Event()
        self.report: Optional[ChunkReport] = None
        self.line: Optional[str] = None

    def _print(self, line: str) -> None:
        self.line = line
        print(line, file=self.out or sys.stderr, flush=True)

    def run(self) -> None:
        try:
            self.report = check_chunks(self.beton, self.rank, self.world_size, self.cpu_share, self.stop_event)
        except Exception as error:  # noqa: BLE001 - reported as one line; training goes on
            self._print(
                f"warning: {self.beton}: the chunk check stopped ({type(error).__name__}: {error}); "
                f"run shufflenet-pl check {self.beton} to verify it"
            )
            return
        if self.report is None:
            if self.rank == 0:
                self._print(no_checksums_note(self.beton))
        elif self.report.damaged:
            rank = self.rank if self.world_size > 1 else None
            self._print(f"warning: {self.beton}: {damage_line(self.report, rank)}; {FIX}")


# --- shufflenet-pl check ---------------------------------------------------------------------
def _jpeg_entries(beton: Path) -> List[Tuple[int, int, int, int]]:
    """``(data_ptr, size, height, width)`` of every JPEG-compressed image of ``beton``."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    image_field = f"f{reader.field_names.index('image')}" if "image" in reader.field_names else "f0"
    sizes = {int(ptr): int(size) for ptr, size in zip(reader.alloc_table["ptr"], reader.alloc_table["size"])}
    return [
        (int(meta["data_ptr"]), sizes.get(int(meta["data_ptr"]), 0), int(meta["height"]), int(meta["width"]))
        for meta in reader.metadata[image_field]
        if int(meta["mode"]) == 0  # FFCV's IMAGE_MODES["jpg"]
    ]


def corrupt_images(beton: Path, workers: int = 1) -> Tuple[int, int, int]:
    """Decode every JPEG image of ``beton`` whole with the decode stage's libjpeg kernel; returns
    ``(decoded, with libjpeg warnings (corrupt data), failed)``."""
    import ctypes

    from . import jpeg_box

    kernel = getattr(ctypes.CDLL(str(jpeg_box.load())), jpeg_box.SYMBOL)
    kernel.restype = ctypes.c_int64
    pointer, integer = ctypes.c_void_p, ctypes.c_int64
    kernel.argtypes = [pointer, ctypes.c_uint64, *[integer] * 5, pointer, integer, pointer]
    data = np.memmap(beton, dtype=np.uint8, mode="r")
    entries = _jpeg_entries(beton)
    local = threading.local()

    def decode(entry: Tuple[int, int, int, int]) -> int:
        ptr, size, height, width = entry
        if ptr + size > len(data) or size == 0:
            return -2
        needed = height * width * 3
        if getattr(local, "out", None) is None or len(local.out) < needed:
            local.out, local.x0_xw = np.empty(needed, np.uint8), np.zeros(2, np.int64)
        source = data[ptr : ptr + size]
        return int(
            kernel(
                source.ctypes.data, size, 8, 0, height, 0, width, local.out.ctypes.data, needed, local.x0_xw.ctypes.data
            )
        )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        statuses = np.fromiter(pool.map(decode, entries, chunksize=64), dtype=np.int64, count=len(entries))
    return len(entries), int((statuses > 0).sum()), int((statuses < 0).sum())


def _check_file(beton: Path, decode: bool, workers: int) -> Tuple[bool, str]:
    """``(good, line)`` for one file."""
    from .convert import TruncatedBetonError, check_beton_complete

    try:
        check_beton_complete(beton)
    except TruncatedBetonError as error:
        return False, f"{beton}: damaged: {error}"
    report = check_chunks(beton)
    problems, facts = [], []
    if report is None:
        facts.append("no chunk checksums (an older converter wrote it; convert it again with --force to enable)")
    elif report.damaged:
        problems.append(damage_line(report))
    else:
        facts.append(f"{report.total} chunks verified")
    if decode:
        decoded, warned, failed = corrupt_images(beton, workers)
        if warned or failed:
            problems.append(f"{warned + failed} of {decoded} JPEG images corrupt ({failed} unreadable)")
        else:
            facts.append(f"{decoded} JPEG images decode cleanly")
    if problems:
        return False, f"{beton}: damaged: {'; '.join(problems)}; {FIX}"
    return True, f"{beton}: good: {', '.join(facts)}"


def check_main(argv: Optional[List[str]] = None) -> None:
    """Command line of ``shufflenet-pl check``: exit 0 when every file is good, 1 when any is damaged, 2 on
    bad input."""
    from .common import usable_cpus

    parser = argparse.ArgumentParser(
        prog="shufflenet-pl check",
        description="Verify .beton files written by shufflenet-pl convert: complete (the size its sidecar "
        "records, an allocation table), every chunk's checksum, and with --decode every JPEG image decodes "
        "without libjpeg reporting corrupt data. One line per file; exit 0: all good, 1: any damaged, 2: bad input.",
    )
    parser.add_argument("files", nargs="+", type=Path, help=".beton files")
    parser.add_argument("--decode", action="store_true", help="also decode every image (slower: a full decode)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: the usable CPUs)")
    args = parser.parse_args(argv)
    missing = [path for path in args.files if not path.is_file()]
    if missing:
        for path in missing:
            print(f"error: {path}: no such file; give a .beton written by shufflenet-pl convert", file=sys.stderr)
        sys.exit(2)
    if args.workers is not None and args.workers < 1:
        parser.exit(2, f"error: --workers must be >= 1, got {args.workers}\n")
    workers = args.workers or usable_cpus()
    all_good = True
    for path in args.files:
        try:
            good, line = _check_file(path, args.decode, workers)
        except (OSError, ValueError, AssertionError) as error:  # not an FFCV file at all
            good, line = False, f"{path}: damaged: cannot be read as a .beton ({error}); {FIX}"
        all_good &= good
        print(line)
    sys.exit(0 if all_good else 1)
