"""``shufflenet-pl convert`` on real odd files (CMYK, grayscale, PNG named .JPEG, RGBA, truncated),
written by FFCV and read back through FFCV."""

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from shufflenet_pl.data.convert import UnreadableImagesError, convert_split, load_rgb, read_for_writing  # noqa: E402


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


def test_images_to_re_encode_decode_to_the_pixels_open_rgb_gives(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    for name, kwargs in {"baseline": {}, "progressive": {"progressive": True}, "444": {"subsampling": 0}}.items():
        Image.fromarray(pixels).save(tmp_path / f"{name}.jpg", quality=85, **kwargs)
    sideways = Image.fromarray(pixels).getexif()
    sideways[0x0112] = 6  # stored rotated: shown 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "sideways.jpg", exif=sideways)
    _odd_imagefolder(tmp_path / "odd")
    files = sorted(tmp_path.glob("*.jpg")) + sorted((tmp_path / "odd").rglob("*.*"))
    for path in files:
        stored = read_for_writing(str(path), pass_through=None)
        assert np.array_equal(stored, load_rgb(str(path))), path.name
    assert read_for_writing(str(tmp_path / "sideways.jpg"), None).shape == (60, 40, 3)
    _truncate(tmp_path / "truncated.jpg")
    with pytest.raises(OSError):
        read_for_writing(str(tmp_path / "truncated.jpg"), pass_through=None)


@pytest.mark.slow
def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    import cv2

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), ramp)
    rgb = load_rgb(str(tmp_path / "gray16.png"))
    expected = ((ramp.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert (rgb == 255).mean() < 0.01  # clipping would make it white
    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(OSError, match="floating-point pixels"):
        load_rgb(str(tmp_path / "float.tif"))


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
    Image.fromarray(pixels).save(split / "a" / "finer.jpg", quality=95)  # finer than --quality 90
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
    for rel in ("a/finer.jpg", "a/progressive.jpg", "b/too_large.jpg", "b/gray.jpg", "b/cmyk.jpg", "b/png_named.jpg"):
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


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 MiB tmpfs (FFCV writes 8 MiB pages), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_convert_onto_a_full_disk_ends_with_one_line(small_disk: Path, cli_env: dict, tmp_path: Path) -> None:
    """A conversion that does not fit ends (no hang) with one line naming the disk and the file; no
    temporary file stays, and a good earlier file (rewritten with --force) is left as it was."""
    rng = np.random.default_rng(0)
    small, large = tmp_path / "small", tmp_path / "large"
    for root, count in ((small, 4), (large, 120)):
        for label in ("a", "b"):
            (root / "train" / label).mkdir(parents=True)
            for i in range(count):
                noise = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
                Image.fromarray(noise).save(root / "train" / label / f"{i}.jpg", quality=95)
    common = ["--splits", "train", "--workers", "2", "--max-side", "128", "--no-pass-through"]
    good = run_cli(["convert", str(small), str(small_disk), *common], cwd=tmp_path, env=cli_env, timeout=300)
    assert good.returncode == 0, good.stderr[-3000:]
    before = (small_disk / "train.beton").read_bytes()
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 4 * 2**20))  # 4 MiB left: less than one page

    for extra in ([], ["--force"]):
        out = small_disk if extra else small_disk / "new"
        full = run_cli(["convert", str(large), str(out), *common, *extra], cwd=tmp_path, env=cli_env, timeout=300)
        assert full.returncode != 0
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: no space left on {small_disk} writing {out / 'train.beton'}; "
            + ("the previous file is intact" if extra else "nothing was written")
        ], full.stderr[-3000:]
        assert "Traceback" not in full.stderr, full.stderr[-3000:]
        assert not [p.name for p in small_disk.rglob(".*tmp*")]
        assert not (out / "train.beton.json").exists() or extra
    assert (small_disk / "train.beton").read_bytes() == before
