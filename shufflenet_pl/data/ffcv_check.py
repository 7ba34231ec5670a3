"""``python -m shufflenet_pl.data.ffcv_check``: does the installed ffcv run here? ``setup.sh`` runs it
after installing, so that a broken build stops the setup instead of the first epoch.

It imports ffcv (and so OpenCV's Python module and numba), then decodes and crops a JPEG through
libffcv, the C extension built against this machine's libjpeg-turbo and OpenCV, and loads our decode
stage, which compiles its small libjpeg kernel (``jpeg_box.c``) on first use.
"""

import io
import sys

import numpy as np


def check() -> str:
    """Decode + crop one JPEG with libffcv; returns a one-line summary, raises on any failure."""
    from PIL import Image

    import ffcv
    from ffcv.libffcv import imdecode, resize_crop

    height, width = 48, 64
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="JPEG", quality=95)
    encoded = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    decoded = np.zeros((height, width, 3), dtype=np.uint8)
    status = imdecode(encoded, decoded, height, width, height, width, 0, 0, 1, 1, False, False)
    if status != 0 or np.abs(decoded.astype(int) - gradient).mean() > 3:
        raise RuntimeError(f"libffcv decoded a test JPEG wrongly (status {status})")
    cropped = np.zeros((16, 16, 3), dtype=np.uint8)
    resize_crop(decoded, 0, height, 0, height, cropped)
    if not 0 < cropped.mean() < 255:
        raise RuntimeError("libffcv's resize returned an empty image")
    from shufflenet_pl.data import ffcv_decode

    out = np.zeros((16, 16, 3), dtype=np.uint8)
    temp = np.empty(height * width * 3, dtype=np.uint8)
    status = ffcv_decode.decode_box(
        encoded,
        int(ffcv_decode._JPG),
        height,
        width,
        0,
        0,
        height,
        height,
        False,
        temp,
        out,
        ffcv_decode.DEFAULT_INTERPOLATION,
    )
    if status != 0 or not 0 < out.mean() < 255:
        raise RuntimeError(f"the decode stage's JPEG box kernel failed on a test JPEG (status {status})")
    return f"ffcv runs ({ffcv.__file__}): libffcv and our decode stage decoded and resized a JPEG"


def main() -> None:
    try:
        print(check())
    except Exception as err:  # noqa: BLE001 - report anything that prevents ffcv from running
        print(f"ffcv does not run here: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
