"""``shufflenet-pl convert`` on real odd files (CMYK, grayscale, PNG named .JPEG, RGBA, truncated),
written by FFCV and read back through FFCV."""

import io
import json
import os
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from shufflenet_pl.data.convert import UnreadableImagesError, convert_split, load_rgb  # noqa: E402


def _odd_imagefolder(root: Path) -> Dict[str, np.ndarray]:
    """Two classes of small images in every awkward form ImageNet has; returns the expected RGB
    pixels (as PIL decodes them) of each convertible file by relative path."""
    rng = np.random.default_rng(0)
    expected: Dict[str, np.ndarray] = {}

    def put(rel: str, image: Image.Image, fmt: str, **kwargs) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format=fmt, **kwargs)
        expected[rel] = load_rgb(str(path))

    for label in ("a_cls", "b_cls"):
        for i in range(3):
            put(f"{label}/rgb_{i}.JPEG", Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)), "JPEG")
    put("a_cls/cmyk.JPEG", Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("CMYK"), "JPEG")
    put("a_cls/gray.JPEG", Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8)), "JPEG")
    put("b_cls/png_named_jpeg.JPEG", Image.fromarray(rng.integers(0, 255, (25, 35, 3), dtype=np.uint8)), "PNG")
    rgba = Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), mode="RGBA")
    put("b_cls/rgba.png", rgba, "PNG")
    return expected


def _truncate(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _read_back(beton: Path) -> list:
    """Every (image HWC uint8, label) of a raw-mode .beton, in file order, through FFCV's reader."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.fromfile(beton, dtype=np.uint8)
    samples = []
    for image_meta, label in zip(reader.metadata["f0"], reader.metadata["f1"]):
        assert image_meta["mode"] == 1  # raw pixels
        height, width, start = int(image_meta["height"]), int(image_meta["width"]), int(image_meta["data_ptr"])
        samples.append((data[start : start + height * width * 3].reshape(height, width, 3), int(label)))
    return samples


def test_load_rgb_converts_the_odd_modes(tmp_path: Path) -> None:
    expected = _odd_imagefolder(tmp_path / "train")
    for rel, pixels in expected.items():
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, rel
    # RGBA is composited on white, not cropped to its first three channels
    rgba = np.asarray(Image.open(tmp_path / "train" / "b_cls" / "rgba.png"))
    alpha = rgba[..., 3:4].astype(float) / 255
    composite = np.round(rgba[..., :3] * alpha + 255 * (1 - alpha))
    assert np.abs(expected["b_cls/rgba.png"].astype(float) - composite).max() <= 1


@pytest.mark.slow
def test_convert_skip_stop_reuse_and_read_back(tmp_path: Path) -> None:
    split = tmp_path / "src" / "train"
    expected = _odd_imagefolder(split)
    _truncate(split / "a_cls" / "truncated.JPEG")
    (split / "b_cls" / "not_an_image.jpg").write_bytes(b"this is not a jpeg")
    beton = tmp_path / "out" / "train.beton"

    # stop (the default): a clear error that lists every bad file; nothing written under the final name
    with pytest.raises(UnreadableImagesError) as error:
        convert_split(split, beton, write_mode="raw", num_workers=2, progress=False)
    message = str(error.value)
    assert "2 of 12 files" in message and "truncated.JPEG" in message and "not_an_image.jpg" in message
    assert "--on-error skip" in message
    assert not beton.exists() and not list(beton.parent.glob("*.tmp*"))

    # skip: written without them, and they are reported (path + reason) in the result and the sidecar
    result = convert_split(split, beton, write_mode="raw", num_workers=2, on_error="skip", progress=False)
    assert result.written == 10 and not result.reused
    assert sorted(Path(p).name for p, _ in result.skipped) == ["not_an_image.jpg", "truncated.JPEG"]
    assert all(reason for _, reason in result.skipped)
    info = json.loads((tmp_path / "out" / "train.beton.json").read_text())
    assert info["classes"] == ["a_cls", "b_cls"] and info["num_images"] == 10 and len(info["skipped"]) == 2
    assert not list(beton.parent.glob(".*tmp*"))

    # the pixels and labels FFCV reads back are the decoded RGB source images, in the listed order
    samples = _read_back(beton)
    assert len(samples) == 10
    for (image, label), rel in zip(samples, info["files"]):
        assert label == ["a_cls", "b_cls"].index(rel.split("/")[0]), rel
        assert np.array_equal(image, expected[rel]), rel

    # re-running with the same inputs and settings reuses the file; other settings rewrite it
    mtime = beton.stat().st_mtime_ns
    again = convert_split(split, beton, write_mode="raw", num_workers=2, on_error="skip", progress=False)
    assert again.reused and beton.stat().st_mtime_ns == mtime
    jpeg = convert_split(
        split, beton, write_mode="jpg", max_side=32, jpeg_quality=80, num_workers=1, on_error="skip", progress=False
    )
    assert not jpeg.reused and beton.stat().st_size < os.path.getsize(beton) + 1
    assert json.loads((tmp_path / "out" / "train.beton.json").read_text())["settings"]["max_side"] == 32


@pytest.mark.slow
def test_high_bit_depth_images_are_scaled_or_refused_by_name(tmp_path: Path) -> None:
    split = tmp_path / "src" / "train"
    (split / "a_cls").mkdir(parents=True)
    (split / "b_cls").mkdir(parents=True)
    # a 16-bit grayscale photograph-like ramp: most values above 255, so clipping would make it white
    ramp = (np.arange(48 * 40, dtype=np.uint32).reshape(48, 40) * 34).astype(np.uint16)
    Image.fromarray(ramp).save(split / "a_cls" / "deep.png")
    assert Image.open(split / "a_cls" / "deep.png").mode == "I;16"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(split / "b_cls" / "plain.png")
    beton = tmp_path / "out" / "train.beton"

    convert_split(split, beton, write_mode="raw", num_workers=2, progress=False)
    info = json.loads((tmp_path / "out" / "train.beton.json").read_text())
    image, _ = _read_back(beton)[info["files"].index("a_cls/deep.png")]
    scaled = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(image, np.repeat(scaled[..., None], 3, axis=2))

    # 32-bit integer pixels carry no range: the file is refused by name with its mode
    Image.fromarray(ramp.astype(np.int32)).save(split / "b_cls" / "wide.tif")
    with pytest.raises(UnreadableImagesError) as error:
        convert_split(split, beton, write_mode="raw", num_workers=2, progress=False)
    assert "wide.tif" in str(error.value) and "PIL mode I" in str(error.value)


@pytest.mark.slow
def test_full_disk_ends_the_conversion_with_one_line(tmp_path: Path) -> None:
    """On a real 3 MiB tmpfs: the writer processes' full disk reaches the parent as the one-line
    error, promptly (FFCV's own parent waits forever for a writer that died), with no temporary file
    and no writer process left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    import multiprocessing
    import subprocess
    import time

    from shufflenet_pl.files import NoSpaceError

    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {done.stderr.decode().strip()}")
    try:
        split = tmp_path / "src" / "train"
        rng = np.random.default_rng(0)
        for i in range(40):  # 40 x 120 KiB of raw pixels: more than the disk holds
            (split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(split / f"c{i % 2}" / f"{i}.png")
        start = time.monotonic()
        with pytest.raises(NoSpaceError) as error:
            convert_split(split, disk / "train.beton", write_mode="raw", num_workers=2, progress=False)
        assert time.monotonic() - start < 120
        assert error.value.strerror == f"no space left on {disk} writing {disk / 'train.beton'}; nothing was written"
        assert list(disk.iterdir()) == []
        assert multiprocessing.active_children() == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _stored_entries(beton: Path) -> list:
    """``(mode, bytes)`` of every image entry of a ``.beton``, in file order, through FFCV's reader."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.fromfile(beton, dtype=np.uint8)
    sizes = {int(ptr): int(size) for _, ptr, size in reader.alloc_table}
    entries = []
    for image_meta in reader.metadata["f0"]:
        start = int(image_meta["data_ptr"])
        entries.append((int(image_meta["mode"]), data[start : start + sizes[start]].tobytes()))
    return entries


def test_jpegs_that_fit_are_stored_as_their_own_bytes(tmp_path: Path) -> None:
    split = tmp_path / "src" / "train"
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    (split / "a").mkdir(parents=True)
    (split / "b").mkdir(parents=True)
    Image.fromarray(pixels).save(split / "a" / "fits.jpg", quality=87)
    Image.fromarray(pixels).save(split / "a" / "progressive.jpg", quality=87, progressive=True)
    Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(split / "b" / "too_large.jpg")
    Image.fromarray(pixels[..., 0]).save(split / "b" / "gray.jpg")
    Image.fromarray(pixels).convert("CMYK").save(split / "b" / "cmyk.jpg")
    Image.fromarray(pixels).save(split / "b" / "png_named.jpg", format="PNG")
    beton = tmp_path / "train.beton"

    result = convert_split(split, beton, max_side=80, num_workers=2, progress=False)
    info = json.loads((tmp_path / "train.beton.json").read_text())
    assert result.passed_through == info["passed_through"] == 1
    entries = dict(zip(info["files"], _stored_entries(beton)))
    assert entries["a/fits.jpg"][1] == (split / "a" / "fits.jpg").read_bytes()  # no decode, no loss
    for rel in ("a/progressive.jpg", "b/too_large.jpg", "b/gray.jpg", "b/cmyk.jpg", "b/png_named.jpg"):
        assert entries[rel][1] != (split / rel).read_bytes(), rel  # decoded and re-encoded as before

    # The same inputs and settings give the same file; the flag turns pass-through off.
    again = tmp_path / "again.beton"
    convert_split(split, again, max_side=80, num_workers=2, progress=False)
    assert again.read_bytes() == beton.read_bytes()
    off = convert_split(split, tmp_path / "off.beton", max_side=80, num_workers=2, progress=False, pass_through=False)
    assert off.passed_through == 0
    assert all(stored != (split / "a" / "fits.jpg").read_bytes() for _, stored in _stored_entries(off.beton))


@pytest.mark.slow
def test_convert_command_line(demo_root: Path, cli_env: dict, tmp_path: Path) -> None:
    result = run_cli(
        ["convert", str(demo_root), str(tmp_path), "--workers", "2", "--limit", "50", "--quiet"],
        cwd=tmp_path,
        env=cli_env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train:" in result.stdout and "50 images" in result.stdout
    for split in ("train", "val"):
        info = json.loads((tmp_path / f"{split}.beton.json").read_text())
        assert info["num_images"] == 50 and len(info["classes"]) == 10
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr

    missing = run_cli(
        ["convert", str(tmp_path / "nope"), str(tmp_path / "out")], cwd=tmp_path, env=cli_env, timeout=300
    )
    assert missing.returncode == 2 and "nope/train does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
