"""Image files as the converter and the ImageFolder datamodule read them: decoded to upright 8-bit RGB
(:func:`open_rgb`, :func:`load_rgb`), checked in worker processes that die with their parent
(:func:`check_images`), or, for a JPEG that needs no re-encoding, kept as its own bytes
(:class:`StoredJPEG`, :class:`PassThrough`, :func:`read_for_writing`).
"""

import ctypes
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

from .progress import Progress

__all__ = [
    "PassThrough",
    "StoredJPEG",
    "check_images",
    "die_with_parent",
    "load_rgb",
    "open_rgb",
    "read_for_writing",
    "stored_jpeg",
    "unreadable_reason",
]

_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image scaled to 8 bits by its bit depth, not clipped; a
    floating-point image is refused by name."""
    if image.mode == "F":
        raise OSError("floating-point pixels: convert it to an 8- or 16-bit image first")
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise OSError(f"{image.mode} pixels outside 0-65535: convert it to an 8- or 16-bit image first")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def open_rgb(path: str) -> Image.Image:
    """Decode any PIL-readable image to an upright RGB PIL image: EXIF orientation is applied (a
    phone photo stored sideways comes out as shown), CMYK/grayscale/palette are converted, alpha is
    composited on white; a truncated or non-image file raises ``OSError``. The converter and the
    ImageFolder datamodule both decode through this, so both see the same pixels. 16-bit images are
    scaled to 8 bits (48-bit RGB PNGs PIL reads as 8-bit RGB already)."""
    with Image.open(path) as image:
        return _upright_rgb(image)


def _upright_rgb(image: Image.Image) -> Image.Image:
    image.load()  # full decode: truncated data fails here, not later in FFCV's writer
    upright = ImageOps.exif_transpose(image)  # a copy (or the image itself without an orientation tag)
    if upright.mode in _HIGH_BIT_DEPTH_MODES:
        upright = _to_8_bit(upright)
    if upright.mode in ("RGBA", "LA") or (upright.mode == "P" and "transparency" in upright.info):
        # Composite on white rather than dropping alpha (which leaves arbitrary colours).
        rgba = upright.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return upright.convert("RGB")  # a copy even in RGB mode: valid after the file is closed


def load_rgb(path: str) -> np.ndarray:
    """:func:`open_rgb` as an RGB uint8 array (HWC)."""
    return np.asarray(open_rgb(path), dtype=np.uint8)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: Optional[int] = None) -> None:
    """In a worker process: be killed when the parent dies, even by ``kill -9`` (Linux's
    ``PR_SET_PDEATHSIG``), so that no orphan goes on writing. ``parent_pid`` (the parent's pid as
    the parent saw it) catches a parent that died before this call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _die_with(parent_pid: int) -> None:
    die_with_parent(parent_pid)


def unreadable_reason(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as an RGB image (``None``: it can)."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link (to {os.readlink(path)}); fix or remove the link"
    try:
        array = load_rgb(path)
    except Exception as err:  # noqa: BLE001 - any failure to decode is reported per file
        return f"{type(err).__name__}: {err}"
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        return f"unexpected decoded shape {array.shape}"
    return None


def check_images(paths: Sequence[str], num_workers: int, desc: str, progress: "bool | Progress") -> List[Optional[str]]:
    """Why each file cannot be decoded (``None``: it can), counted into ``progress`` (a display, or
    whether to show one named ``desc``)."""
    display = progress if isinstance(progress, Progress) else Progress(desc, enabled=progress)
    display.phase("check", len(paths))
    results: List[Optional[str]] = []
    if num_workers <= 1:
        checked: Iterable[Optional[str]] = map(unreadable_reason, paths)
        for reason in checked:
            results.append(reason)
            display.update()
    else:
        with ProcessPoolExecutor(num_workers, initializer=_die_with, initargs=(os.getpid(),)) as pool:
            for reason in pool.map(unreadable_reason, paths, chunksize=64):
                results.append(reason)
                display.update()
    display.close()
    if display is not progress:
        display.finish()
    return results


@dataclass(frozen=True)
class StoredJPEG:
    """A JPEG file's own bytes, stored in the ``.beton`` as they are (no decode, no re-encode, no loss)."""

    data: np.ndarray  # uint8, the whole file
    height: int
    width: int


_COMMON_LUMA_SAMPLING = {(1, 1), (2, 1), (1, 2), (2, 2)}

# The IJG quantization tables (JPEG Annex K) that libjpeg scales by quality: luminance, chrominance.
_IJG_BASE = (
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38,
)


def _ijg_table(quality: int, table: int) -> List[int]:
    """libjpeg's ``jpeg_set_quality`` table (as OpenCV's encoder writes it) at ``quality``."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (value * scale + 50) // 100)) for value in _IJG_BASE[table]]


def _not_finer_than(image: Image.Image, quality: int) -> bool:
    """Whether a JPEG's quantization is at least as coarse, table by table (summed), as a re-encode at
    ``quality`` would be: its bytes are then no more costly to decode than the re-encoded ones."""
    tables = getattr(image, "quantization", None) or {}
    if len(tables) < 2:
        return False
    luma, chroma = tables[0], tables[1]
    return sum(luma) >= sum(_ijg_table(quality, 0)) and sum(chroma) >= sum(_ijg_table(quality, 1))


@dataclass(frozen=True)
class PassThrough:
    """Which JPEGs are stored as their own bytes: those that fit ``max_side`` and are not finer than
    ``quality`` (the quality others are re-encoded at)."""

    max_side: int
    quality: int


def _storable(image: Image.Image, rule: PassThrough) -> bool:
    """Whether an opened (not yet decoded) image may be stored as its own bytes (see :func:`stored_jpeg`)."""
    if image.format != "JPEG" or image.mode != "RGB" or max(image.size) > rule.max_side:
        return False
    if image.info.get("progressive") or image.info.get("progression"):
        return False
    if not _upright_without_rotation(image):  # EXIF orientation: stored sideways
        return False
    luma, *chroma = [(h, v) for _, h, v, _ in getattr(image, "layer", [])] or [(0, 0)]
    sampling = luma in _COMMON_LUMA_SAMPLING and chroma == [(1, 1), (1, 1)]  # 4:4:4, 4:2:2, 4:4:0, 4:2:0
    return sampling and _not_finer_than(image, rule.quality)


def _file_jpeg(path: str, image: Image.Image) -> Optional[StoredJPEG]:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < 4 or data[-2] != 0xFF or data[-1] != 0xD9:  # no end-of-image marker: truncated
        return None
    width, height = image.size
    return StoredJPEG(data, height, width)


def stored_jpeg(path: str, rule: PassThrough) -> Optional[StoredJPEG]:
    """``path``'s bytes if they can be stored as they are: a complete baseline (non-progressive) JPEG
    with three YCbCr components in a common chroma sampling, upright (no EXIF rotation), whose longer
    side is at most ``rule.max_side`` and whose quantization is not finer than ``rule.quality`` (a
    finer one decodes more slowly than its re-encode would). Every other file (CMYK, grayscale,
    progressive, too large, a PNG named .jpg, a truncated file) returns ``None`` and is decoded and
    re-encoded. Only the header is parsed."""
    try:
        with Image.open(path) as image:
            return _file_jpeg(path, image) if _storable(image, rule) else None
    except (OSError, ValueError, SyntaxError):
        return None


def _upright_without_rotation(image: Image.Image) -> bool:
    return "exif" not in image.info or image.getexif().get(0x0112, 1) == 1


def _decode_jpeg(path: str, image: Image.Image) -> Optional[np.ndarray]:
    """The RGB pixels of an opened (header only) upright three-component JPEG, decoded by OpenCV's
    libjpeg-turbo: the same pixels as PIL's decode at about half its cost. ``None`` for anything else,
    and for a file without its end-of-image marker (OpenCV fills a truncated image in where PIL
    refuses it), which PIL then decodes or rejects as before."""
    if image.format != "JPEG" or image.mode != "RGB" or not _upright_without_rotation(image):
        return None
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    if data.size < 4 or data[-2] != 0xFF or data[-1] != 0xD9:
        return None
    pixels = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.shape[:2] != image.size[::-1]:
        return None
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def read_for_writing(path: str, pass_through: Optional[PassThrough]) -> "np.ndarray | StoredJPEG":
    """What the writer stores for ``path``: its own bytes where :func:`stored_jpeg` allows it (with
    ``pass_through``), else its upright RGB pixels (the pixels :func:`open_rgb` gives); the file
    is opened once either way."""
    with Image.open(path) as image:
        if pass_through is not None and _storable(image, pass_through):
            stored = _file_jpeg(path, image)
            if stored is not None:
                return stored
        pixels = _decode_jpeg(path, image)
        return pixels if pixels is not None else np.asarray(_upright_rgb(image), dtype=np.uint8)
