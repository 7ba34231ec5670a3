"""Where a loader worker's time goes: our FFCV training decode stage, instrumented inside the loader.

An epoch runs in FFCV's ``Loader`` exactly as in training, with timestamps (the CPU's cycle counter)
taken by the compiled decode loop around every image and around each batch's parallel loop, and by
the iterator thread around each batch's pipeline and hand-over. Every worker-second of the epoch
(``workers`` x its wall time) then falls into one of:

    kernel      our box decode + resize + mirror of an image, on the CPU
    page read   touching the image's pages of the memory-mapped file before the kernel
    preempted   a worker's thread off the CPU in the middle of an image (other processes ran): the
                image's wall time minus the thread's CPU time
    barrier     inside a batch's parallel loop, a worker that has no image left while others decode
    serial      the iterator thread's own per-batch work (FFCV's stage calls, the label pipeline, the
                tensor views, Python): every other worker idles meanwhile
    hand-over   the iterator thread handing the batch to the consumer (queue put, and waiting while
                the queue is full)

and the consumer's wait for batches is reported beside them.

    python benchmarks/loader_profile.py BETON --workers 1 2 --json profile.json

Each worker count runs twice, with the stage's schedule (``largest_first``: one image at a time to a
free thread, largest stored image first) and with numba's default (``static``: one contiguous part of
the batch per thread), and prints their ratio. From the per-image CPU times it also computes the
barrier share each schedule would have at 2, 4, 8 and 15 workers, on these batches: a machine with
fewer cores still tells what a large node would lose at the barrier.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("kernel", "page_read", "preempted", "barrier", "serial", "hand_over")


def _instruments() -> Any:
    """The compiled helpers (built on first use: they import numba and the decode stage)."""
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def cycles(typingctx):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter"
            )
            return builder.call(function, [])

        return types.int64(), codegen

    @intrinsic
    def store(typingctx, address, index, value):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            pointer = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
            builder.store(args[2], builder.gep(pointer, [args[1]]))
            return context.get_dummy_value()

        return types.void(types.int64, types.int64, types.int64), codegen

    clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.uint64))

    @njit(nogil=True)
    def thread_cpu_ns() -> int:
        spec = np.empty(2, dtype=np.int64)
        clock_gettime(np.int32(3), np.uint64(spec.ctypes.data))  # CLOCK_THREAD_CPUTIME_ID
        return spec[0] * 1_000_000_000 + spec[1]

    @njit(nogil=True)
    def now() -> int:
        return cycles()

    return cycles, store, now, thread_cpu_ns


def _timed_decoder(res: int, samples: int, schedule: str) -> Any:
    """Our training decoder whose compiled loop also writes, per image, ``[start, pages read, end]``
    cycle stamps and the thread's CPU nanoseconds at start and end (row = sample index), and per batch
    ``[loop start, loop end]`` (row = its first sample). ``schedule``: ``largest_first`` (the stage's:
    one image at a time to a free thread, largest first) or ``static`` (numba's default: one
    contiguous part of the batch per thread, in batch order)."""
    from ffcv.pipeline.compiler import Compiler

    from shufflenet_pl.data import ffcv_decode as stage

    cycles, store, _, thread_cpu_ns = _instruments()

    class TimedDecoder(stage.SeededRandomResizedCropDecoder):
        def __init__(self) -> None:
            super().__init__((res, res), seed=0)
            self.image_stamps = np.zeros((samples, 5), dtype=np.int64)
            self.batch_stamps = np.zeros((samples, 2), dtype=np.int64)

        def generate_code(self):  # type: ignore[no-untyped-def]
            memory_read = self.memory_read
            my_range = Compiler.get_iterator()
            row = np.int64(self._row)
            scale_min, scale_max = np.float64(self.scale[0]), np.float64(self.scale[1])
            log_ratio_min, log_ratio_max = np.float64(np.log(self.ratio[0])), np.float64(np.log(self.ratio[1]))
            interpolation = np.int64(self.interpolation)
            kernel = stage._kernel_tree()["decode_random_crop"]
            images, batches = np.int64(self.image_stamps.ctypes.data), np.int64(self.batch_stamps.ctypes.data)
            load_run_value = stage._load_run_value
            get_chunksize, set_chunksize = stage._get_parallel_chunksize, stage._set_parallel_chunksize
            chunk = np.uintp(1 if schedule == "largest_first" else 0)
            largest_first = stage._kernel_tree()["largest_first"]
            dynamic = schedule == "largest_first"

            def decode(batch_indices, my_storage, metadata, storage_state):  # type: ignore[no-untyped-def]
                destination, temp_storage = my_storage
                seed, epoch = load_run_value(row, 0), load_run_value(row, 1)
                first = np.int64(batch_indices[0])
                store(batches, 2 * first, cycles())
                if dynamic:
                    order = largest_first(batch_indices, metadata)
                else:
                    order = np.arange(len(batch_indices))
                previous = get_chunksize()
                set_chunksize(chunk)
                for position in my_range(len(batch_indices)):
                    dst_ix = order[position]
                    source_ix = np.int64(batch_indices[dst_ix])
                    start = cycles()
                    cpu_start = thread_cpu_ns()
                    field = metadata[source_ix]
                    data = memory_read(field["data_ptr"], storage_state)
                    touched = np.uint8(0)
                    for offset in range(0, len(data), 4096):
                        touched ^= data[offset]
                    store(images, 5 * source_ix + 1, cycles() + np.int64(touched & 0))
                    kernel(
                        data,
                        np.int64(field["mode"]),
                        np.int64(field["height"]),
                        np.int64(field["width"]),
                        source_ix,
                        seed,
                        epoch,
                        scale_min,
                        scale_max,
                        log_ratio_min,
                        log_ratio_max,
                        temp_storage[dst_ix],
                        destination[dst_ix],
                        interpolation,
                    )
                    store(images, 5 * source_ix + 4, thread_cpu_ns())
                    store(images, 5 * source_ix, start)
                    store(images, 5 * source_ix + 2, cycles())
                    store(images, 5 * source_ix + 3, cpu_start)
                set_chunksize(previous)
                store(batches, 2 * first + 1, cycles())
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    return TimedDecoder()


SCHEDULES = ("static", "dynamic", "largest_first", "ideal")


def makespan(costs: np.ndarray, areas: np.ndarray, workers: int, schedule: str) -> float:
    """Wall time of one batch's parallel loop over images costing ``costs`` (stored sizes ``areas``)
    on ``workers`` threads: ``static``, numba's default (the loop cut into ``workers`` contiguous
    near-equal parts, one per thread); ``dynamic``, one image at a time to whichever thread is free,
    in batch order; ``largest_first``, the same, largest stored image first (the stage's schedule);
    ``ideal``, the same, costliest image first (knowing each cost in advance: a bound)."""
    if schedule == "static":
        return max(float(part.sum()) for part in np.array_split(costs, workers))
    if schedule == "largest_first":
        costs = costs[np.argsort(-areas, kind="stable")]
    elif schedule == "ideal":
        costs = np.sort(costs)[::-1]
    free = np.zeros(workers)
    for cost in costs:
        free[np.argmin(free)] += cost
    return float(free.max())


def barrier_shares(
    batches: Sequence[np.ndarray], areas: Sequence[np.ndarray], workers: Sequence[int]
) -> Dict[str, Dict[str, float]]:
    """Per worker count and schedule: the share of the parallel loops' worker-seconds spent idle at
    the batch barrier, if each image cost its measured CPU time (``batches``: per batch, its images'
    seconds; ``areas``: their stored sizes)."""
    out: Dict[str, Dict[str, float]] = {}
    busy = sum(float(c.sum()) for c in batches)
    for n in workers:
        out[str(n)] = {}
        for schedule in SCHEDULES:
            capacity = sum(n * makespan(c, a, n, schedule) for c, a in zip(batches, areas))
            out[str(n)][schedule] = max(0.0, 1 - busy / capacity)
    return out


def _cycles_per_second(now: Any) -> float:
    now()
    c0, t0 = now(), time.perf_counter()
    time.sleep(0.2)
    c1, t1 = now(), time.perf_counter()
    return (c1 - c0) / (t1 - t0)


def _stamped_epoch(loader: Any, now: Any) -> Tuple[int, float, np.ndarray, List[np.ndarray]]:
    """One epoch of ``loader``: images, the consumer's seconds waiting for batches, per batch the
    iterator thread's cycle stamps ``[pipeline enter, pipeline exit, handed over, first sample]``, and
    per batch its sample indices."""
    from ffcv.loader.epoch_iterator import EpochIterator

    from shufflenet_pl.data.ffcv_epoch import start_epoch

    pipeline: List[List[int]] = []
    members: List[np.ndarray] = []
    original_run_pipeline = EpochIterator.run_pipeline

    def stamped(put: Any) -> Any:
        def put_and_stamp(item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
            put(item, block, timeout)
            if item is not None:
                pipeline[-1][2] = now()

        put_and_stamp.stamped = True  # type: ignore[attr-defined]
        return put_and_stamp

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):  # type: ignore[no-untyped-def]
        if not hasattr(self.output_queue.put, "stamped"):  # the same queue object: the consumer waits on it
            self.output_queue.put = stamped(self.output_queue.put)
        pipeline.append([now(), 0, 0, int(batch_indices[0])])
        members.append(np.array(batch_indices, dtype=np.int64))
        result = original_run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event)
        pipeline[-1][1] = now()
        return result

    EpochIterator.run_pipeline = run_pipeline
    try:
        waited = 0.0
        count = 0
        iterator = start_epoch(loader)  # a failing loader thread raises here instead of hanging
        while True:
            asked = time.perf_counter()
            try:
                batch_images, _ = next(iterator)
            except StopIteration:
                break
            waited += time.perf_counter() - asked
            count += len(batch_images)
    finally:
        EpochIterator.run_pipeline = original_run_pipeline
    return count, waited, np.array(pipeline, dtype=np.int64), members


def profile_loader(
    beton: Path, res: int, batch: int, workers: int, epochs: int = 2, schedule: str = "largest_first"
) -> Dict[str, Any]:
    """Worker time of our training loader on ``beton`` split into :data:`PARTS` (ms per image per
    worker and share of the epoch's worker-seconds), over ``epochs`` epochs after a warm-up one."""
    from ffcv.reader import Reader
    from ffcv.transforms import ToTensor, ToTorchImage

    from shufflenet_pl.data import quiet_numba  # noqa: F401
    from benchmarks.data_throughput import train_loader
    from shufflenet_pl.data.jit_cache import pipeline_cache

    _, _, now, _ = _instruments()
    samples = int(Reader(str(beton)).num_samples)
    decoder = _timed_decoder(res, samples, schedule)
    with pipeline_cache():
        loader = train_loader(beton, [decoder, ToTensor(), ToTorchImage()], batch, workers)
    per_second = _cycles_per_second(now)
    parts = dict.fromkeys(PARTS, 0.0)
    consumer_wait = wall = 0.0
    batch_costs: List[np.ndarray] = []
    batch_areas: List[np.ndarray] = []
    fields = Reader(str(beton)).metadata["f0"]
    stored_areas = fields["height"].astype(np.int64) * fields["width"].astype(np.int64)
    images = 0
    for epoch in range(epochs + 1):
        decoder.epoch = epoch
        decoder.image_stamps[:] = 0  # drop_last leaves other images out in every epoch
        count, waited, stamps, members = _stamped_epoch(loader, now)
        if epoch == 0:
            continue  # JIT compilation and first page reads
        images += count
        consumer_wait += waited
        epoch_wall = (stamps[-1, 2] - stamps[0, 0]) / per_second
        wall += epoch_wall
        barrier = serial = hand_over = 0.0
        for enter, leave, handed, first in stamps:
            loop_start, loop_end = decoder.batch_stamps[first]
            serial += workers * ((loop_start - enter) + (leave - loop_end)) / per_second
            hand_over += workers * (handed - leave) / per_second
            barrier += workers * (loop_end - loop_start) / per_second
        for enter_next, handed in zip(stamps[1:, 0], stamps[:-1, 2]):
            serial += workers * (enter_next - handed) / per_second
        used = decoder.image_stamps[decoder.image_stamps[:, 2] > 0]
        page = float(np.sum(used[:, 1] - used[:, 0])) / per_second
        kernel = float(np.sum(used[:, 2] - used[:, 1])) / per_second
        preempted = max(0.0, page + kernel - float(np.sum(used[:, 4] - used[:, 3])) / 1e9)
        barrier -= page + kernel
        kernel -= preempted
        for name, value in zip(PARTS, (kernel, page, preempted, barrier, serial, hand_over)):
            parts[name] += value
        cpu_seconds = (decoder.image_stamps[:, 4] - decoder.image_stamps[:, 3]) / 1e9
        batch_costs += [cpu_seconds[m] for m in members]
        batch_areas += [stored_areas[m] for m in members]
    total = workers * wall
    return {
        "schedule": schedule,
        "workers": workers,
        "images": images,
        "images_per_s": images / wall,
        "ms_per_image_per_worker": {name: 1e3 * value / images for name, value in parts.items()},
        "share": {name: value / total for name, value in parts.items()},
        "consumer_wait_share": consumer_wait / wall,
        "simulated_barrier_share": barrier_shares(batch_costs, batch_areas, sorted({workers, 2, 4, 8, 15})),
    }


def print_profile(rows: Sequence[Dict[str, Any]]) -> None:
    print("| workers | schedule | img/s | " + " | ".join(f"{p} ms (share)" for p in PARTS) + " | consumer waits |")
    print("| ---: | --- | ---: | " + " | ".join("---:" for _ in PARTS) + " | ---: |")
    for row in rows:
        cells = [f"{row['ms_per_image_per_worker'][p]:.3f} ({100 * row['share'][p]:.0f} %)" for p in PARTS]
        print(
            f"| {row['workers']} | {row['schedule']} | {row['images_per_s']:.0f} | "
            + " | ".join(cells)
            + f" | {100 * row['consumer_wait_share']:.0f} % |"
        )


def print_simulation(row: Dict[str, Any]) -> None:
    print(
        f"barrier share by schedule if every image cost its CPU time measured at {row['workers']} worker(s) "
        "(the batches of these epochs):"
    )
    print("| workers | " + " | ".join(SCHEDULES) + " |")
    print("| ---: | " + " | ".join("---:" for _ in SCHEDULES) + " |")
    for n, shares in row["simulated_barrier_share"].items():
        print(f"| {n} | " + " | ".join(f"{100 * shares[s]:.1f} %" for s in SCHEDULES) + " |")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("beton", type=Path, help="a .beton written by shufflenet-pl convert")
    parser.add_argument("--res", type=int, default=176, help="training crop side (default 176)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up one (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows there as JSON")
    parser.add_argument(
        "--source", default="", help="what the images are, recorded in the JSON (e.g. '1,000 photographs')"
    )
    args = parser.parse_args(argv)
    rows = []
    for workers in args.workers:
        for schedule in ("static", "largest_first"):
            rows.append(profile_loader(args.beton, args.res, args.batch, workers, args.epochs, schedule))
    print_profile(rows)
    speedups = {}
    for workers in args.workers:
        rate = {r["schedule"]: r["images_per_s"] for r in rows if r["workers"] == workers}
        speedups[str(workers)] = rate["largest_first"] / rate["static"]
        print(f"{workers} worker(s): largest_first / static = {speedups[str(workers)]:.2f}x")
    print_simulation(rows[0])
    if args.json:
        report = {
            "beton": args.beton.name,
            "source": args.source,
            "images": int(rows[0]["images"] / args.epochs),
            "res": args.res,
            "batch": args.batch,
            "epochs": args.epochs,
            "cpus": os.cpu_count(),
            "largest_first_vs_static": speedups,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
