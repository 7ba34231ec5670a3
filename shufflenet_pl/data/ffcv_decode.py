"""Our image decode stage inside FFCV's ``Loader``: seeded RandomResizedCrop / center crop, only the
box decoded, at the smallest sufficient DCT scale, resized once into the batch, flipped in place.

FFCV keeps its file format, page reading, ordering and threads; only the image decoder operation is
ours (:class:`SeededRandomResizedCropDecoder` for training, :class:`CenterCropDecoder` for
validation, both subclasses of FFCV's ``ResizedCropRGBImageDecoder``). Per image:

1. **Box.** The RandomResizedCrop box follows ``torchvision.transforms.RandomResizedCrop.get_params``
   (area scale and log-aspect uniform, 10 tries, then the center fallback) and the flip is a coin,
   all drawn from a counter-based generator (splitmix64) keyed by ``(seed, epoch, sample index)``,
   never from a thread's random state: the same seed gives bitwise the same batches for any number
   of loader threads, and a run resumed mid-epoch draws what the uninterrupted run drew.
2. **Decode only the box, small.** libjpeg decodes the box alone (``jpeg_box.c``, compiled on first
   use: the rows above it are skipped without an IDCT, its columns are cropped to whole iMCUs, the rows
   below are never decoded) at the smallest DCT scale ``num/8``, ``num`` in 1, 2, 4, at which the box
   still spans at least the output (else at full scale): the IDCT itself does most of a large
   downscale. It uses the fast integer IDCT, as FFCV's own decode does, and one extra column on each
   side of the box, so the box's pixels are exactly those of a full decode.
3. **One resize** (OpenCV's ``cv::hal::resize``, :data:`DEFAULT_INTERPOLATION`) from the box
   straight into the batch's uint8 NHWC buffer; a flipped image is then mirrored in place in that
   buffer (no separate pass over the batch, no copy).

Raw (uncompressed) images take the same path without the decoder.

**Scheduling.** A batch's images run in one parallel loop over the loader's threads. numba's default
cuts that loop into one contiguous part per thread, and since images cost up to several times one
another (box areas differ ~12x), threads finished with their part wait for the slowest at every batch
end. The loop instead hands images out one at a time to whichever thread is free
(``set_parallel_chunksize(1)``), largest stored image first, so the batch ends with small images on
every thread. Which thread decodes an image never changes its pixels. ``benchmarks/loader_profile.py``
measures the idle share and simulates the schedules on the measured image costs.

Corrupt images are counted, not hidden: libjpeg warns about corrupt entropy-coded data (a bad Huffman
code, a marker in the middle of the data) and still returns pixels; the kernel returns status 1 then,
and each decoder counts those images, and the ones it could not decode at all, in a process-wide table
(:meth:`SeededRandomResizedCropDecoder.take_corrupt_counts`) that the datamodule reports per epoch.

Measured, and therefore not done: cropping and flipping inside libjpeg-turbo with its lossless
transform (``imdecode``'s crop and flip) re-reads and re-encodes the entropy-coded data, which costs
more than decoding the whole image at ImageNet sizes, even for small boxes; and the DCT scales 3/8,
5/8, 3/4 and 7/8 use generic IDCTs that are slower than a full-size decode. ``INTER_LINEAR`` rather
than ``INTER_AREA``: after the DCT scale the resize shrinks by less than 2x, where both stay far
above 30 dB PSNR against an antialiased reference (PIL), and ``INTER_AREA``'s fractional-scale path
costs several times more. ``benchmarks/partial_decode.py`` measures the box decode against a full one.

Every kernel is a module-level ``@njit(nogil=True, cache=True)`` function that takes all of its
parameters as arguments and calls C through named external symbols (not ctypes pointers), so
numba's on-disk cache serves them to a second process. The per-epoch values (seed, epoch) reach the
compiled code at run time through a process-wide table registered with the JIT linker under a fixed
symbol name: each decoder reads its own row, so no process-specific address is compiled into the
generated wrapper and the wrapper is cached too.
"""

import ctypes
import os
import types as pytypes
import weakref
from typing import Any, Callable, Dict, Tuple

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.pipeline.compiler import Compiler
import ffcv.libffcv  # noqa: F401  (loads libffcv and, through it, OpenCV and libturbojpeg)
import ffcv._libffcv

from shufflenet_pl.data import jpeg_box

__all__ = [
    "CenterCropDecoder",
    "DEFAULT_INTERPOLATION",
    "INTER_AREA",
    "INTER_LINEAR",
    "SeededRandomResizedCropDecoder",
    "center_crop_box",
    "decode_plan",
    "decoded_box",
    "random_crop_box",
    "random_draws",
]

INTER_LINEAR = 1
INTER_AREA = 3
#: The resize's interpolation (see the module docstring for why): INTER_LINEAR.
DEFAULT_INTERPOLATION = INTER_LINEAR

_JPG = int(IMAGE_MODES["jpg"])
_RAW = int(IMAGE_MODES["raw"])


# --- C functions by symbol name (cacheable: no process-specific addresses in the compiled code) ---
def _load_symbols() -> None:
    llvm.load_library_permanently(ffcv._libffcv.__file__)
    # OpenCV's imgproc is a dependency of libffcv; make its symbols visible to the JIT linker too.
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libopencv_imgproc" in path and os.path.isfile(path):
                llvm.load_library_permanently(path)
                break


_load_symbols()
# cv::hal::resize(int, const uchar*, size_t, int, int, uchar*, size_t, int, int, double, double, int)
_HAL_RESIZE = "_ZN2cv3hal6resizeEiPKhmiiPhmiiddi"
if not ctypes.CDLL(ffcv._libffcv.__file__)[_HAL_RESIZE]:  # pragma: no cover - raises AttributeError itself
    raise ImportError("OpenCV's cv::hal::resize is not reachable from ffcv's libffcv")

# Pointers travel as 64-bit integers (same registers in the C ABI).
_c_resize = types.ExternalFunction(
    _HAL_RESIZE,
    types.void(
        types.int32,
        types.uint64,
        types.uint64,
        types.int32,
        types.int32,
        types.uint64,
        types.uint64,
        types.int32,
        types.int32,
        types.float64,
        types.float64,
        types.int32,
    ),
)
_CV_8UC3 = 16

# numba's chunk size of the next parallel loop started by this thread (0: one part per thread; n: n
# iterations at a time to whichever thread is free). By symbol, with the signatures numba's own parallel
# loops declare in the same module; registered when numba's threads start.
numba.get_parallel_chunksize()  # starts them, registering the symbols before any code is linked


@intrinsic
def _get_parallel_chunksize(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(cgutils.intp_t, []), "get_parallel_chunksize"
        )
        return builder.call(function, [])

    return types.uintp(), codegen


@intrinsic
def _set_parallel_chunksize(typingctx, size):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [cgutils.intp_t]), "set_parallel_chunksize"
        )
        builder.call(function, [args[0]])
        return context.get_dummy_value()

    return types.void(types.uintp), codegen


jpeg_box.load()
_c_jpeg_box = types.ExternalFunction(
    jpeg_box.SYMBOL,
    types.int64(
        types.uint64,
        types.uint64,
        types.int64,
        types.int64,
        types.int64,
        types.int64,
        types.int64,
        types.uint64,
        types.int64,
        types.uint64,
    ),
)


# Per-epoch values of every seeded decoder of this process, one row [seed, epoch] each. The compiled
# code reaches the table by symbol name (resolved when the code is linked, also code loaded from the
# disk cache) and a decoder by its row number, a small integer that is the same in every process.
_RUN_VALUES_SYMBOL = "shufflenet_pl_decode_run_values"
_RUN_VALUES = np.zeros((256, 2), dtype=np.int64)
llvm.add_symbol(_RUN_VALUES_SYMBOL, _RUN_VALUES.ctypes.data)
_free_rows = list(range(len(_RUN_VALUES)))


# Images each decoder of this process found corrupt since it was last asked, one row [warned, failed] each
# (the same row number as in the table above): libjpeg decoded them with warnings (corrupt entropy-coded
# data), or could not decode them (left black). Written by the loader thread after each batch.
_DECODE_COUNTS_SYMBOL = "shufflenet_pl_decode_counts"
_DECODE_COUNTS = np.zeros((len(_RUN_VALUES), 2), dtype=np.int64)
llvm.add_symbol(_DECODE_COUNTS_SYMBOL, _DECODE_COUNTS.ctypes.data)


def _take_row(owner: object) -> int:
    if not _free_rows:
        raise RuntimeError(f"more than {len(_RUN_VALUES)} FFCV decoders alive in one process")
    _free_rows.sort()  # the lowest free row first, so that rows (part of the cache key) repeat across runs
    row = _free_rows.pop(0)
    _DECODE_COUNTS[row] = 0
    weakref.finalize(owner, _free_rows.append, row)
    return row


@intrinsic
def _load_run_value(typingctx, row, column):  # type: ignore[no-untyped-def]
    """``_RUN_VALUES[row, column]``, read through the table's linker symbol at run time."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        table = builder.module.globals.get(_RUN_VALUES_SYMBOL)
        if table is None:
            table = ir.GlobalVariable(builder.module, ir.IntType(64), name=_RUN_VALUES_SYMBOL)
            table.linkage = "external"
        offset = builder.add(builder.mul(args[0], ir.Constant(ir.IntType(64), 2)), args[1])
        return builder.load(builder.gep(table, [offset]))

    return sig, codegen


@intrinsic
def _add_decode_count(typingctx, row, column, value):  # type: ignore[no-untyped-def]
    """``_DECODE_COUNTS[row, column] += value``, through the table's linker symbol."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        table = builder.module.globals.get(_DECODE_COUNTS_SYMBOL)
        if table is None:
            table = ir.GlobalVariable(builder.module, ir.IntType(64), name=_DECODE_COUNTS_SYMBOL)
            table.linkage = "external"
        offset = builder.add(builder.mul(args[0], ir.Constant(ir.IntType(64), 2)), args[1])
        pointer = builder.gep(table, [offset])
        builder.store(builder.add(builder.load(pointer), args[2]), pointer)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True)
def _count_statuses(row: int, statuses: np.ndarray) -> None:
    """Add a batch's corrupt images (status 1: decoded with libjpeg warnings; negative: not decoded) to
    row ``row`` of the decode counts."""
    warned = 0
    failed = 0
    for status in statuses:
        if status > 0:
            warned += 1
        elif status < 0:
            failed += 1
    if warned:
        _add_decode_count(row, 0, warned)
    if failed:
        _add_decode_count(row, 1, failed)


# --- counter-based random numbers ------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(nogil=True, cache=True)
def _mix64(z: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a bijective avalanche of 64 bits."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True)
def _stream_key(seed: int, epoch: int, index: int) -> np.uint64:
    key = _mix64(np.uint64(seed) + _GOLDEN)
    key = _mix64(key ^ (np.uint64(epoch) + _GOLDEN * np.uint64(2)))
    return _mix64(key ^ (np.uint64(index) + _GOLDEN * np.uint64(3)))


@njit(nogil=True, cache=True)
def _uniform(key: np.uint64, counter: int) -> float:
    """The ``counter``-th uniform double in [0, 1) of stream ``key`` (53 random bits)."""
    bits = _mix64(key + _GOLDEN * np.uint64(counter + 1))
    return float(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def random_draws(seed: int, epoch: int, index: int, count: int) -> np.ndarray:
    """The first ``count`` uniforms of sample ``index``'s stream (for tests)."""
    key = _stream_key(seed, epoch, index)
    return np.array([_uniform(key, k) for k in range(count)])


# --- boxes -----------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def random_crop_box(
    height: int,
    width: int,
    scale_min: float,
    scale_max: float,
    log_ratio_min: float,
    log_ratio_max: float,
    seed: int,
    epoch: int,
    index: int,
) -> Tuple[int, int, int, int, bool]:
    """``(top, left, h, w, flip)`` of sample ``index`` in epoch ``epoch``: torchvision's
    ``RandomResizedCrop.get_params`` (10 tries of area scale and log-aspect, then the center
    fallback), plus a fair flip coin, from the counter-based stream of ``(seed, epoch, index)``."""
    key = _stream_key(seed, epoch, index)
    flip = _uniform(key, 0) < 0.5
    area = float(height) * float(width)
    for attempt in range(10):
        base = 1 + 4 * attempt
        target_area = area * (scale_min + (scale_max - scale_min) * _uniform(key, base))
        aspect = np.exp(log_ratio_min + (log_ratio_max - log_ratio_min) * _uniform(key, base + 1))
        w = int(np.rint(np.sqrt(target_area * aspect)))
        h = int(np.rint(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(_uniform(key, base + 2) * (height - h + 1))
            left = int(_uniform(key, base + 3) * (width - w + 1))
            return top, left, h, w, flip
    in_ratio = float(width) / float(height)
    ratio_min, ratio_max = np.exp(log_ratio_min), np.exp(log_ratio_max)
    if in_ratio < ratio_min:
        w = width
        h = int(np.rint(w / ratio_min))
    elif in_ratio > ratio_max:
        h = height
        w = int(np.rint(h * ratio_max))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w, flip


@njit(nogil=True, cache=True)
def center_crop_box(height: int, width: int, ratio: float) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the centered square of side ``int(ratio * min side)`` (FFCV's rule)."""
    side = max(1, int(ratio * min(height, width)))
    return (height - side) // 2, (width - side) // 2, side, side


# --- JPEG structure ---------------------------------------------------------------------------
#: DCT scales ``num/8`` tried, smallest first. libjpeg-turbo's IDCTs for 1/8, 1/4 and 1/2 are fast
#: (reduced IDCTs); 3/8, 5/8, 3/4 and 7/8 use slow generic ones that cost more than a full decode.
_DCT_SCALES = (1, 2, 4)


@njit(nogil=True, cache=True)
def decode_plan(
    height: int, width: int, top: int, left: int, h: int, w: int, out_h: int, out_w: int
) -> Tuple[int, int, int, int, int, int, int]:
    """How a JPEG box ``(top, left, h, w)`` becomes an ``out_h x out_w`` output.

    Returns ``(num, decoded_h, decoded_w, r0, r1, c0, c1)``: the image is decoded at DCT scale
    ``num/8`` (the smallest of :data:`_DCT_SCALES` at which the box still spans at least the output,
    else 8/8) to ``decoded_h x decoded_w`` pixels, and rows ``[r0, r1)`` and columns ``[c0, c1)`` of
    that decoded image (the box, rounded to the scaled grid) are resized into the output.
    """
    num = 8
    for candidate in _DCT_SCALES:
        if w * candidate >= out_w * 8 and h * candidate >= out_h * 8:
            num = candidate
            break
    decoded_h, decoded_w = (height * num + 7) // 8, (width * num + 7) // 8
    r0 = min(int(np.rint(top * num / 8.0)), decoded_h - 1)
    r1 = min(max(int(np.rint((top + h) * num / 8.0)), r0 + 1), decoded_h)
    c0 = min(int(np.rint(left * num / 8.0)), decoded_w - 1)
    c1 = min(max(int(np.rint((left + w) * num / 8.0)), c0 + 1), decoded_w)
    return num, decoded_h, decoded_w, r0, r1, c0, c1


def decoded_box(
    height: int, width: int, top: int, left: int, h: int, w: int, out_h: int, out_w: int
) -> Tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)``: the part of the image, in source pixels, that the output of a JPEG box
    covers after :func:`decode_plan` rounds it to the DCT-scaled grid (within half a scaled pixel of
    the box). A reference resize of exactly this box is what the stage's output approximates."""
    num, _, _, r0, r1, c0, c1 = decode_plan(height, width, top, left, h, w, out_h, out_w)
    step = 8.0 / num  # a scaled pixel covers step x step source pixels (the last one may be partial)
    return c0 * step, r0 * step, min(c1 * step, float(width)), min(r1 * step, float(height))


# --- pixels -----------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _resize_into(
    source: np.ndarray,
    source_offset: int,
    source_row_bytes: int,
    box_w: int,
    box_h: int,
    out: np.ndarray,
    interpolation: int,
) -> None:
    """One ``cv::hal::resize`` of a ``box_h x box_w`` RGB window (starting ``source_offset`` bytes into
    ``source``, rows ``source_row_bytes`` apart) into the contiguous ``(H, W, 3)`` ``out``."""
    out_h, out_w = out.shape[0], out.shape[1]
    _c_resize(
        _CV_8UC3,
        np.uint64(source.ctypes.data + source_offset),
        np.uint64(source_row_bytes),
        box_w,
        box_h,
        np.uint64(out.ctypes.data),
        np.uint64(out_w * 3),
        out_w,
        out_h,
        out_w / box_w,
        out_h / box_h,
        interpolation,
    )


@njit(nogil=True, cache=True)
def _mirror_rows(out: np.ndarray) -> None:
    """Mirror ``(H, W, 3)`` left-right in place (pixels swapped within each row, in cache)."""
    width = out.shape[1]
    for row in range(out.shape[0]):
        line = out[row]
        for col in range(width // 2):
            other = width - 1 - col
            for channel in range(3):
                value = line[col, channel]
                line[col, channel] = line[other, channel]
                line[other, channel] = value


@njit(nogil=True, cache=True)
def decode_jpeg_box(
    data: np.ndarray,
    height: int,
    width: int,
    top: int,
    left: int,
    h: int,
    w: int,
    out_h: int,
    out_w: int,
    temp: np.ndarray,
) -> Tuple[int, int, int, int, int]:
    """Decode the part of a JPEG that box ``(top, left, h, w)`` needs for an ``out_h x out_w`` output
    (:func:`decode_plan`'s DCT scale and rounded box) into ``temp``, and nothing else: rows above the
    box are skipped, columns cropped to whole iMCUs, rows below never decoded (``jpeg_box.c``).
    Returns ``(status, offset, row_bytes, box_w, box_h)``: the kernel's status (0 = success, 1 = decoded
    with libjpeg warnings: corrupt data, negative = not decoded), where the
    decoded box's first pixel and its rows are in ``temp``, and its size in decoded pixels."""
    num, _, decoded_w, r0, r1, c0, c1 = decode_plan(height, width, top, left, h, w, out_h, out_w)
    # One more column on each side: the chroma upsampling of a cropped decode's edge columns differs
    # from a full decode's, so the box's own columns stay inside and equal a full decode's pixels.
    first, last = max(c0 - 1, 0), min(c1 + 1, decoded_w)
    x0_xw = np.zeros(2, dtype=np.int64)
    status = _c_jpeg_box(
        np.uint64(data.ctypes.data),
        np.uint64(data.size),
        num,
        r0,
        r1 - r0,
        first,
        last - first,
        np.uint64(temp.ctypes.data),
        temp.size,
        np.uint64(x0_xw.ctypes.data),
    )
    return status, (c0 - x0_xw[0]) * 3, x0_xw[1] * 3, c1 - c0, r1 - r0


@njit(nogil=True, cache=True)
def decode_box(
    data: np.ndarray,
    mode: int,
    height: int,
    width: int,
    top: int,
    left: int,
    h: int,
    w: int,
    flip: bool,
    temp: np.ndarray,
    out: np.ndarray,
    interpolation: int,
) -> int:
    """Decode box ``(top, left, h, w)`` of one stored image (JPEG or raw), mirrored if ``flip``, into
    ``out`` (contiguous uint8 ``(H, W, 3)``). ``temp`` holds the decoded box (``height * width * 3``
    bytes suffice). Returns the kernel's status: 0 = success, 1 = decoded but libjpeg warned (corrupt
    entropy-coded data: part of ``out`` is garbage), negative = not decoded (``out`` is black)."""
    out_h, out_w = out.shape[0], out.shape[1]
    status = 0
    if mode == _RAW:
        _resize_into(data, (top * width + left) * 3, width * 3, w, h, out, interpolation)
    else:
        status, offset, row_bytes, box_w, box_h = decode_jpeg_box(
            data, height, width, top, left, h, w, out_h, out_w, temp
        )
        if status < 0:
            out[:] = 0
            return status
        _resize_into(temp, offset, row_bytes, box_w, box_h, out, interpolation)
    if flip:
        _mirror_rows(out)
    return status


@njit(nogil=True, cache=True)
def decode_random_crop(
    data: np.ndarray,
    mode: int,
    height: int,
    width: int,
    index: int,
    seed: int,
    epoch: int,
    scale_min: float,
    scale_max: float,
    log_ratio_min: float,
    log_ratio_max: float,
    temp: np.ndarray,
    out: np.ndarray,
    interpolation: int,
) -> int:
    """Training: sample ``index``'s seeded box and flip (:func:`random_crop_box`), decoded into ``out``."""
    top, left, h, w, flip = random_crop_box(
        height, width, scale_min, scale_max, log_ratio_min, log_ratio_max, seed, epoch, index
    )
    return decode_box(data, mode, height, width, top, left, h, w, flip, temp, out, interpolation)


@njit(nogil=True, cache=True)
def decode_center_crop(
    data: np.ndarray,
    mode: int,
    height: int,
    width: int,
    ratio: float,
    temp: np.ndarray,
    out: np.ndarray,
    interpolation: int,
) -> int:
    """Validation: the center crop (:func:`center_crop_box`), decoded into ``out``."""
    top, left, h, w = center_crop_box(height, width, ratio)
    return decode_box(data, mode, height, width, top, left, h, w, False, temp, out, interpolation)


@njit(nogil=True, cache=True)
def largest_first(batch_indices: np.ndarray, metadata: np.ndarray) -> np.ndarray:
    """Positions ``0..len(batch_indices)-1`` of a batch, its largest stored images (height x width)
    first; ties keep batch order. The order in which the parallel loop hands images out."""
    areas = np.empty(len(batch_indices), dtype=np.int64)
    for position in range(len(batch_indices)):
        field = metadata[batch_indices[position]]
        areas[position] = -np.int64(field["height"]) * np.int64(field["width"])
    return np.argsort(areas, kind="mergesort")


# --- FFCV operations --------------------------------------------------------------------------
_KERNELS = (
    "_mix64",
    "_stream_key",
    "_uniform",
    "random_crop_box",
    "center_crop_box",
    "decode_plan",
    "_resize_into",
    "_mirror_rows",
    "_count_statuses",
    "largest_first",
    "decode_jpeg_box",
    "decode_box",
    "decode_random_crop",
    "decode_center_crop",
)


def _kernel_tree() -> Dict[str, Any]:
    """A fresh set of dispatchers of the kernels, calling each other within the set, for one
    generated wrapper. The code and the on-disk cache entries are those of the module-level kernels
    (a new dispatcher loads them from numba's cache instead of compiling).

    Why not the module-level dispatchers themselves: numba 0.68 fails with a ``KeyError`` in a
    dispatcher's overload table when the same nested dispatchers are typed again inside a second
    FFCV pipeline of the same process (e.g. loaders with 1 and with 2 workers, as the tests make).
    """
    namespace = dict(globals())
    for name in _KERNELS:
        function = globals()[name].py_func
        copy = pytypes.FunctionType(
            function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
        )
        copy.__qualname__, copy.__module__ = function.__qualname__, function.__module__
        namespace[name] = njit(nogil=True, cache=True)(copy)
    return namespace


def _check_interpolation(interpolation: int) -> int:
    if interpolation not in (INTER_LINEAR, INTER_AREA):
        raise ValueError(
            f"interpolation must be INTER_LINEAR ({INTER_LINEAR}) or INTER_AREA ({INTER_AREA}), got {interpolation!r}"
        )
    return int(interpolation)


class _CorruptCounts:
    """The corrupt-image counts of a decoder (its row of the decode counts)."""

    _row: int

    def take_corrupt_counts(self) -> Tuple[int, int]:
        """``(warned, failed)``: images decoded with libjpeg warnings (corrupt data) and images not
        decoded (left black) since the last call; the counts restart at zero."""
        warned, failed = (int(value) for value in _DECODE_COUNTS[self._row])
        _DECODE_COUNTS[self._row] = 0
        return warned, failed


class SeededRandomResizedCropDecoder(_CorruptCounts, ResizedCropRGBImageDecoder):
    """Training decoder: seeded RandomResizedCrop + horizontal flip, decoded as the module says.

    Args:
        output_size: ``(height, width)`` of the output; may change between epochs (progressive resizing).
        scale: area range of the box, as torchvision's ``RandomResizedCrop``.
        ratio: aspect-ratio range of the box (sampled uniformly in log space).
        seed: seed of the boxes and flips.
        interpolation: :data:`INTER_LINEAR` (default) or :data:`INTER_AREA`.

    Set :attr:`epoch` before each epoch's ``iter(loader)``; no recompilation happens. Corrupt images
    are counted (:meth:`take_corrupt_counts`).
    """

    def __init__(
        self,
        output_size: Tuple[int, int],
        scale: Tuple[float, float] = (0.08, 1.0),
        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
        seed: int = 0,
        interpolation: int = DEFAULT_INTERPOLATION,
    ) -> None:
        super().__init__(output_size)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = _check_interpolation(interpolation)
        # Read by the compiled code at every batch: [seed, epoch].
        self._row = _take_row(self)
        self._run_values = _RUN_VALUES[self._row]
        self._run_values[:] = 0
        self.seed = seed

    @property
    def seed(self) -> int:
        return int(self._run_values[0])

    @seed.setter
    def seed(self, value: int) -> None:
        self._run_values[0] = value

    @property
    def epoch(self) -> int:
        return int(self._run_values[1])

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._run_values[1] = value

    @property
    def get_crop_generator(self) -> Callable:  # abstract in FFCV; our code does not use it
        return random_crop_box

    def generate_code(self) -> Callable:
        memory_read = self.memory_read
        my_range = Compiler.get_iterator()
        row = np.int64(self._row)
        # Plain typed values (numba would treat closure ints as literals and specialise on them).
        scale_min, scale_max = np.float64(self.scale[0]), np.float64(self.scale[1])
        log_ratio_min, log_ratio_max = np.float64(np.log(self.ratio[0])), np.float64(np.log(self.ratio[1]))
        interpolation = np.int64(self.interpolation)
        tree = _kernel_tree()
        kernel, count_statuses = tree["decode_random_crop"], tree["_count_statuses"]
        schedule = tree["largest_first"]

        def decode(batch_indices, my_storage, metadata, storage_state):  # type: ignore[no-untyped-def]
            destination, temp_storage = my_storage
            seed, epoch = _load_run_value(row, 0), _load_run_value(row, 1)
            statuses = np.zeros(len(batch_indices), dtype=np.int64)
            order = schedule(batch_indices, metadata)
            previous = _get_parallel_chunksize()
            _set_parallel_chunksize(np.uintp(1))
            for position in my_range(len(batch_indices)):
                dst_ix = order[position]
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                data = memory_read(field["data_ptr"], storage_state)
                statuses[dst_ix] = kernel(
                    data,
                    np.int64(field["mode"]),
                    np.int64(field["height"]),
                    np.int64(field["width"]),
                    np.int64(source_ix),
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
            _set_parallel_chunksize(previous)
            count_statuses(row, statuses)
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


class CenterCropDecoder(_CorruptCounts, ResizedCropRGBImageDecoder):
    """Validation decoder: the center crop of side ``ratio * min side``, decoded as the module says.

    Args:
        output_size: ``(height, width)`` of the output.
        ratio: crop side / short image side (224/256 in the usual recipe).
        interpolation: :data:`INTER_LINEAR` (default) or :data:`INTER_AREA`.
    """

    def __init__(
        self, output_size: Tuple[int, int], ratio: float = 224 / 256, interpolation: int = DEFAULT_INTERPOLATION
    ) -> None:
        super().__init__(output_size)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)
        self.scale = None
        self.interpolation = _check_interpolation(interpolation)
        self._row = _take_row(self)  # its row of the decode counts

    @property
    def get_crop_generator(self) -> Callable:
        return center_crop_box

    def generate_code(self) -> Callable:
        memory_read = self.memory_read
        my_range = Compiler.get_iterator()
        ratio, interpolation = np.float64(self.ratio), np.int64(self.interpolation)
        row = np.int64(self._row)
        tree = _kernel_tree()
        kernel, count_statuses = tree["decode_center_crop"], tree["_count_statuses"]
        schedule = tree["largest_first"]

        def decode(batch_indices, my_storage, metadata, storage_state):  # type: ignore[no-untyped-def]
            destination, temp_storage = my_storage
            statuses = np.zeros(len(batch_indices), dtype=np.int64)
            order = schedule(batch_indices, metadata)
            previous = _get_parallel_chunksize()
            _set_parallel_chunksize(np.uintp(1))
            for position in my_range(len(batch_indices)):
                dst_ix = order[position]
                field = metadata[batch_indices[dst_ix]]
                data = memory_read(field["data_ptr"], storage_state)
                statuses[dst_ix] = kernel(
                    data,
                    np.int64(field["mode"]),
                    np.int64(field["height"]),
                    np.int64(field["width"]),
                    ratio,
                    temp_storage[dst_ix],
                    destination[dst_ix],
                    interpolation,
                )
            _set_parallel_chunksize(previous)
            count_statuses(row, statuses)
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode
