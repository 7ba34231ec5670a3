"""Interleaved timing: candidates take turns (A B, B A, ...) and medians are compared, so that a
machine that drifts during a measurement slows every candidate alike. Used by ``shufflenet-pl analyze
model`` and by the scripts in ``benchmarks/``."""

import math
import statistics
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["CLOCKS", "median", "time_interleaved"]


CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def time_interleaved(
    candidates: Mapping[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    synchronize: Callable[[], None],
    min_sample_seconds: float = 0.0,
    clock: str = "wall",
    progress: Optional[Callable[[], None]] = None,
) -> Dict[str, List[float]]:
    """Seconds per call of each candidate, measured in alternation.

    Every round calls each candidate once, and the order reverses from one round to the next
    (A B, B A, A B, ...), so a machine that speeds up or slows down during the run (other jobs, clocks,
    heat) affects every candidate alike; compare their medians.

    Args:
        candidates: name -> a function that runs the work once.
        repeats: timed rounds (samples per candidate).
        warmup: untimed rounds first (allocator, thread pools, cuDNN autotuning, compilation).
        synchronize: waits for queued device work, so that a call's time includes its kernels.
        min_sample_seconds: a sample repeats a call that is faster than this until it lasts about
            this long and reports the time per call (for sub-millisecond work, where one call is
            mostly timer and launch noise).
        clock: ``"wall"`` (elapsed time) or ``"process"`` (CPU time of this process: on a CPU shared
            with other jobs and one torch thread, it leaves out the time the process waited for a core).
        progress: called after every timed sample (e.g. a progress bar's ``update``).
    """
    if repeats < 1 or warmup < 0 or min_sample_seconds < 0:
        raise ValueError(
            f"need repeats >= 1, warmup >= 0, min_sample_seconds >= 0; got {repeats}, {warmup}, {min_sample_seconds}"
        )
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    synchronize()
    calls = {name: 1 for name in names}
    if min_sample_seconds > 0:
        for name in names:
            start = now()
            candidates[name]()
            synchronize()
            calls[name] = max(1, math.ceil(min_sample_seconds / max(now() - start, 1e-9)))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            synchronize()
            start = now()
            for _ in range(calls[name]):
                candidates[name]()
            synchronize()
            samples[name].append((now() - start) / calls[name])
            if progress is not None:
                progress()
    return samples


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
