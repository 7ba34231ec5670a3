"""Damaged ``.beton`` files found: chunk checksums recorded by the converter, verified while training and by
``shufflenet-pl check``.

The converter records CRC-32s of the finished file in its sidecar ``<name>.beton.json``
(:data:`REGIONS_KEY`), one streaming pass before the file is renamed into place. The checksums follow the
file's structure (:func:`beton_layout`): the header and field descriptors, the metadata rows, the data pages
and FFCV's allocation table are each checksummed on their own, in :data:`CHUNK_BYTES` chunks from the part's
start, so that no chunk mixes the index with image data (the zeros before the first page, which FFCV
never reads, are left out). A damaged data chunk (a bit flip on disk, a bad
copy) maps to exactly the images with data bytes in it (through the allocation table,
``ffcv.types.ALLOC_TABLE_TYPE``); a damaged chunk of the index says the index is damaged. An older sidecar's
fixed chunks of the whole file (``chunk_bytes``, ``chunk_crc32``) are still verified, mapped the same way
through the file's own header.

While training, :class:`BackgroundCheck` verifies a file's chunks in a daemon thread (under DDP each rank a
disjoint share, gathered on rank 0, which prints one line for the file), paced to :data:`CPU_SHARE` of the
CPU time the rest of the process spends. ``shufflenet-pl check`` (:func:`check_main`) verifies on demand, optionally
decoding every image. A file whose sidecar records no checksums is not an error: a note says how to enable
the check. Nothing here imports FFCV, numba or torch at module import.
"""

import argparse
import json
import os
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "CPU_SHARE",
    "FREE_CPU_SECONDS",
    "INDEX_PARTS",
    "REGIONS_KEY",
    "BackgroundCheck",
    "ChunkReport",
    "Damage",
    "Region",
    "beton_layout",
    "check_chunks",
    "check_group",
    "check_main",
    "chunk_table",
    "corrupt_images",
    "damage_line",
    "damage_of",
    "damaged_chunks",
    "recorded_regions",
    "region_checksums",
    "report_of",
]

#: Bytes per checksummed chunk (a 60 GB ImageNet ``train.beton``: ~15,000 checksums, ~200 KB of sidecar).
CHUNK_BYTES = 4 << 20
#: CPU time the background check may take, as a share of the CPU time the rest of the process spends
#: meanwhile (loader threads, training step). Reading and CRC-32 run at ~3 GB/s: verifying JPEG ImageNet
#: (~60 GB) takes ~20 CPU seconds, ~0.5 % of what one epoch's decoding takes, so at 0.6 % the check
#: ends within the first epoch (each DDP rank checks its share: sooner) and costs the loader under 2 %
#: (``benchmarks/data_throughput.py --check-cost``).
CPU_SHARE = 0.006
#: CPU seconds the check takes before its pace starts: a file of up to ~150 MB is verified at once.
FREE_CPU_SECONDS = 0.05
#: Sidecar key of the checksummed regions (:func:`region_checksums`).
REGIONS_KEY = "checksum_regions"
FIX = "convert it again (shufflenet-pl convert ... --force) or copy it again"


def _sidecar(beton: Path) -> Path:
    return beton.with_name(beton.name + ".json")


#: The parts of a ``.beton`` in file order; all but ``data`` are its index.
INDEX_PARTS = {"header": "header and field descriptors", "metadata": "metadata rows", "alloc_table": "allocation table"}


@dataclass(frozen=True)
class Region:
    """A byte range ``[start, end)`` of a file checksummed in chunks of ``chunk_bytes`` (the last one
    shorter). ``kind``: a key of :data:`INDEX_PARTS`, ``data`` (the data pages), or ``file`` (an older
    sidecar's fixed chunks of the whole file)."""

    kind: str
    start: int
    end: int
    chunk_bytes: int
    crc32: Tuple[int, ...]

    def spans(self) -> List[Tuple[int, int]]:
        return [
            (first, min(self.end, first + self.chunk_bytes)) for first in range(self.start, self.end, self.chunk_bytes)
        ]


def beton_layout(beton: Path) -> List[Tuple[str, int, int]]:
    """``(kind, start, end)`` of the parts of ``beton``, read from its header: the header and field
    descriptors, the metadata rows, the data pages (from FFCV's first page), the allocation table."""
    from ffcv.types import FieldDescType, HeaderType, get_handlers, get_metadata_type

    header = np.fromfile(beton, dtype=HeaderType, count=1)[0]
    num_samples, num_fields = int(header["num_samples"]), int(header["num_fields"])
    page_size, table_ptr = int(header["page_size"]), int(header["alloc_table_ptr"])
    size = beton.stat().st_size
    metadata_start = HeaderType.itemsize + num_fields * FieldDescType.itemsize
    fields = np.fromfile(beton, dtype=FieldDescType, count=num_fields, offset=HeaderType.itemsize)
    metadata_end = metadata_start + num_samples * get_metadata_type(get_handlers(fields)).itemsize
    pages_start = min(table_ptr, -(-metadata_end // page_size) * page_size)  # FFCV's first page, page-aligned
    if not metadata_start <= metadata_end <= pages_start <= table_ptr <= size:
        raise ValueError(f"{beton}: its header describes no valid layout")
    # Between the last metadata row and the first page lie zeros that FFCV never reads (up to a page).
    parts = [("header", 0, metadata_start), ("metadata", metadata_start, metadata_end)]
    return parts + [("data", pages_start, table_ptr), ("alloc_table", table_ptr, size)]


def _crc32_of(handle: BinaryIO, first: int, last: int, view: memoryview) -> Optional[int]:
    """CRC-32 of bytes ``[first, last)`` of ``handle``; ``None`` where the file ends before ``last``."""
    handle.seek(first)
    crc, left = 0, last - first
    while left > 0:
        count = handle.readinto(view[: min(left, len(view))])
        if not count:
            return None
        crc, left = zlib.crc32(view[:count], crc), left - count
    return crc


def region_checksums(beton: Path, chunk_bytes: int = CHUNK_BYTES) -> Dict[str, Any]:
    """The sidecar key :data:`REGIONS_KEY` for ``beton``: each part of :func:`beton_layout` checksummed
    on its own in chunks of ``chunk_bytes`` from its start (so that no chunk mixes the index with data
    pages), in one streaming read of the file."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    view = memoryview(bytearray(chunk_bytes))
    regions = []
    with open(beton, "rb", buffering=0) as handle:
        for kind, start, end in beton_layout(beton):
            region = Region(kind, start, end, chunk_bytes, ())
            sums = [f"{_crc32_of(handle, first, last, view):08x}" for first, last in region.spans()]
            regions.append({"kind": kind, "start": start, "end": end, "chunk_bytes": chunk_bytes, "crc32": sums})
    return {REGIONS_KEY: regions}


def recorded_regions(beton: Path) -> Optional[List[Region]]:
    """The checksummed regions the sidecar records; an older sidecar's fixed chunks (``chunk_bytes``,
    ``chunk_crc32``) as one ``file`` region; ``None`` where it records none."""
    sidecar = _sidecar(beton)
    if not sidecar.is_file():
        return None
    info = json.loads(sidecar.read_text())
    if REGIONS_KEY in info:
        return [
            Region(
                r["kind"], int(r["start"]), int(r["end"]), int(r["chunk_bytes"]), tuple(int(v, 16) for v in r["crc32"])
            )
            for r in info[REGIONS_KEY]
        ]
    if "chunk_crc32" in info and "chunk_bytes" in info:
        sums, chunk_bytes = tuple(int(v, 16) for v in info["chunk_crc32"]), int(info["chunk_bytes"])
        # The last fixed chunk ends where the file did (the byte count the sidecar records).
        end = int(info.get("bytes") or len(sums) * chunk_bytes)
        return [Region("file", 0, end, chunk_bytes, sums)]
    return None


def chunk_table(regions: Sequence[Region]) -> List[Tuple[int, int, int]]:
    """``(start, end, crc32)`` of every chunk of ``regions``, numbered in file order."""
    return [(first, last, crc) for region in regions for (first, last), crc in zip(region.spans(), region.crc32)]


def _paced(cpu_share: float, stop: Optional[threading.Event]) -> Callable[[], None]:
    """A pause after each piece of work that holds the calling thread's CPU time to ``cpu_share`` of the
    CPU time the rest of the process spends meanwhile (the loader's decoding threads, the training step),
    however many threads that is and however busy the machine, after its first :data:`FREE_CPU_SECONDS`
    (none at 1); it ends early when ``stop`` is set."""
    wait = (stop or threading.Event()).wait
    process_start, thread_start = time.process_time(), time.thread_time()

    def pause() -> None:
        while cpu_share < 1 and not (stop is not None and stop.is_set()):
            mine = time.thread_time() - thread_start
            others = time.process_time() - process_start - mine
            owed = (mine - FREE_CPU_SECONDS) / cpu_share - others  # CPU seconds the others spend first
            if owed <= 0:
                return
            wait(min(1.0, max(0.005, owed / (os.cpu_count() or 1))))

    return pause


def damaged_chunks(
    beton: Path,
    table: Sequence[Tuple[int, int, int]],
    chunks: Optional[Iterable[int]] = None,
    cpu_share: float = 1.0,
    stop: Optional[threading.Event] = None,
) -> List[int]:
    """Indices into ``table`` (:func:`chunk_table`) of the chunks of ``beton`` whose CRC-32 differs
    from the recorded one (a chunk past the end of the file counts as damaged).

    Args:
        beton: the file.
        table: ``(start, end, crc32)`` of each chunk.
        chunks: which chunks to verify (default: all).
        cpu_share: CPU time to take, as a share of the CPU time the rest of the process spends
            (sleeps between chunks); 1: as fast as it goes.
        stop: when set, verification ends early (with the chunks verified so far).
    """
    if not 0 < cpu_share <= 1:
        raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
    pause = _paced(cpu_share, stop)
    view = memoryview(bytearray(max((last - first for first, last, _ in table), default=1)))
    damaged: List[int] = []
    with open(beton, "rb", buffering=0) as handle:
        for index in range(len(table)) if chunks is None else chunks:
            if stop is not None and stop.is_set():
                break
            first, last, expected = table[index]
            if _crc32_of(handle, first, last, view) != expected:
                damaged.append(index)
            pause()
    return damaged


@dataclass(frozen=True)
class Damage:
    """What damaged byte spans of a ``.beton`` hit: the parts of its index (keys of
    :data:`INDEX_PARTS`) and the images with data bytes in them (``None`` where a damaged index leaves
    that unknown)."""

    index_parts: Tuple[str, ...]
    images: Optional[int]


def damage_of(beton: Path, spans: Sequence[Tuple[int, int]], regions: Sequence[Region]) -> Damage:
    """Map damaged byte ``spans`` of ``beton`` to its parts: the layout the sidecar's regions record
    (from the file's header for an older sidecar's fixed chunks), the images through FFCV's allocation
    table (``ffcv.types.ALLOC_TABLE_TYPE``: the images with data bytes in a span)."""
    from ffcv.types import ALLOC_TABLE_TYPE

    if not spans:
        return Damage((), 0)
    recorded = [(r.kind, r.start, r.end) for r in regions if r.kind != "file"]
    layout = recorded or beton_layout(beton)
    hit = lambda start, end: any(first < end and last > start for first, last in spans)  # noqa: E731
    index_parts = tuple(kind for kind, start, end in layout if kind != "data" and hit(start, end))
    if index_parts:
        return Damage(index_parts, None)
    ((_, data_start, data_end),) = [part for part in layout if part[0] == "data"]
    (table_start,) = [start for kind, start, _ in layout if kind == "alloc_table"]
    table = np.fromfile(beton, dtype=ALLOC_TABLE_TYPE, offset=table_start)
    starts = table["ptr"].astype(np.int64)
    ends = starts + table["size"].astype(np.int64)
    images = set()
    for first, last in spans:
        first, last = max(first, data_start), min(last, data_end)
        images.update(table["sample_id"][(starts < last) & (ends > first)].tolist())
    return Damage((), len(images))


@dataclass(frozen=True)
class ChunkReport:
    """What a chunk check found in one file."""

    beton: Path
    total: int  # chunks in the file
    checked: int  # chunks this check verified (a rank's share, or all ranks' together)
    damaged: List[int]  # indices into chunk_table(regions)
    damage: Damage


def report_of(beton: Path, regions: Sequence[Region], damaged: Sequence[int], checked: int) -> ChunkReport:
    """The report for chunks ``damaged`` of ``beton`` (out of ``checked`` verified)."""
    table = chunk_table(regions)
    spans = [table[i][:2] for i in sorted(set(damaged))]
    return ChunkReport(beton, len(table), checked, sorted(set(damaged)), damage_of(beton, spans, regions))


def check_chunks(
    beton: Path,
    rank: int = 0,
    world_size: int = 1,
    cpu_share: float = 1.0,
    stop: Optional[threading.Event] = None,
) -> Optional[ChunkReport]:
    """Verify the chunks ``i`` of ``beton`` with ``i % world_size == rank`` against its sidecar; ``None``
    where the sidecar records no checksums."""
    regions = recorded_regions(beton)
    if regions is None:
        return None
    table = chunk_table(regions)
    share = range(rank, len(table), world_size)
    return report_of(beton, regions, damaged_chunks(beton, table, share, cpu_share, stop), len(share))


def damage_line(report: ChunkReport, rank: Optional[int] = None) -> str:
    """``3 of 120 chunks damaged (41 images)``, or, where a chunk of the file's index is damaged,
    ``its index is damaged (allocation table): ...``; naming the rank's share when ``rank`` is given."""
    share = f", rank {rank}'s share of {report.checked}" if rank is not None else ""
    chunks = f"{len(report.damaged)} of {report.total} chunks damaged{share}"
    if report.damage.index_parts:
        parts = " and ".join(INDEX_PARTS[kind] for kind in report.damage.index_parts)
        return f"its index is damaged ({parts}), so no image can be trusted to be read right ({chunks})"
    return f"{chunks} ({report.damage.images} images)"


def no_checksums_note(beton: Path) -> str:
    return (
        f"note: {beton}: its sidecar records no chunk checksums (an older converter wrote it); convert it "
        f"again (--force) to have damaged data found"
    )


def check_group(world_size: int) -> Optional[Any]:
    """A gloo process group of its own for one :class:`BackgroundCheck`'s gather, or ``None`` outside an
    initialised ``torch.distributed`` run of two or more processes. Every rank creates it from its main
    thread in the same order; the check's gather on it then never meets the training's collectives."""
    if world_size < 2:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.new_group(backend="gloo")


class BackgroundCheck(threading.Thread):
    """A daemon thread that verifies this rank's share of ``beton``'s chunks while training runs and prints
    one line to ``out``: a warning if any chunk is damaged, a note if the file records no checksums, or
    why the check stopped if it failed. Silent on a good file. With a ``group`` (:func:`check_group`) the
    ranks gather their shares when all are done and rank 0 alone prints the line, for the whole file;
    without one each rank prints its own share's line.

    Args:
        beton: the file.
        rank: this process's global rank (verifies chunks ``i % world_size == rank``).
        world_size: number of processes.
        cpu_share: the check's CPU time as a share of the rest of the process's.
        out: where the line goes (default: ``sys.stderr`` at the time of printing).
        group: the process group the ranks gather their results on.
    """

    def __init__(
        self,
        beton: Path,
        rank: int = 0,
        world_size: int = 1,
        cpu_share: float = CPU_SHARE,
        out: Optional[TextIO] = None,
        group: Optional[Any] = None,
    ) -> None:
        super().__init__(name=f"chunk check {beton.name}", daemon=True)
        self.beton, self.rank, self.world_size = Path(beton), rank, world_size
        self.cpu_share = min(1.0, cpu_share)
        self.out, self.group = out, group
        self.stop_event = threading.Event()
        self.report: Optional[ChunkReport] = None  # this rank's share
        self.file_report: Optional[ChunkReport] = None  # all ranks' shares together (rank 0, with a group)
        self.line: Optional[str] = None

    def _print(self, line: str) -> None:
        self.line = line
        print(line, file=self.out or sys.stderr, flush=True)

    def _stopped_line(self, reason: str) -> str:
        return f"warning: {self.beton}: the chunk check stopped ({reason}); run shufflenet-pl check {self.beton}"

    def run(self) -> None:
        error: Optional[str] = None
        try:
            self.report = check_chunks(self.beton, self.rank, self.world_size, self.cpu_share, self.stop_event)
        except Exception as failure:  # noqa: BLE001 - reported as one line; training goes on
            error = f"{type(failure).__name__}: {failure}"
        if self.group is None:
            rank = self.rank if self.world_size > 1 else None
            if error is not None:
                self._print(self._stopped_line(error))
            elif self.report is None:
                if self.rank == 0:
                    self._print(no_checksums_note(self.beton))
            elif self.report.damaged:
                self._print(f"warning: {self.beton}: {damage_line(self.report, rank)}; {FIX}")
            return
        self._gather(error)

    def _gather(self, error: Optional[str]) -> None:
        """Every rank's share on rank 0 (each rank takes part, whatever it found), one line for the file."""
        import torch.distributed as dist

        mine = {"error": error, "checked": 0, "damaged": []}
        if self.report is not None:
            mine.update(checked=self.report.checked, damaged=self.report.damaged)
        elif error is None:
            mine["error"] = "no checksums"
        shares: List[Any] = [None] * self.world_size
        dist.all_gather_object(shares, mine, group=self.group)
        if self.rank != 0:
            return
        errors = [share["error"] for share in shares if share["error"] not in (None, "no checksums")]
        if errors:
            self._print(self._stopped_line(errors[0]))
        elif any(share["error"] == "no checksums" for share in shares):
            self._print(no_checksums_note(self.beton))
        else:
            regions = recorded_regions(self.beton) or []
            damaged = [index for share in shares for index in share["damaged"]]
            self.file_report = report_of(self.beton, regions, damaged, sum(share["checked"] for share in shares))
            if self.file_report.damaged:
                self._print(f"warning: {self.beton}: {damage_line(self.file_report)}; {FIX}")


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
    from .beton_format import TruncatedBetonError, check_beton_complete

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
