"""Damaged data found: chunk checksums recorded by the converter, ``shufflenet-pl check``, the datamodule's
background check and the decode stage's count of corrupt JPEGs, on real .beton files."""

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.beton_damage import copy_beton, damage_jpegs  # noqa: E402

from shufflenet_pl.cli import main as cli_main  # noqa: E402
from shufflenet_pl.data import beton_check  # noqa: E402

DAMAGED = [3, 50, 120]


@pytest.fixture(scope="module")
def damaged_root(demo_beton_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo .beton files, train.beton with random bytes over three images' JPEG data."""
    root = tmp_path_factory.mktemp("damaged")
    for split in ("train", "val"):
        copy_beton(demo_beton_root / f"{split}.beton", root)
    damage_jpegs(root / "train.beton", DAMAGED)
    return root


def _check(args: list, capsys: pytest.CaptureFixture) -> tuple:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["check", *map(str, args)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_converter_records_chunk_checksums(demo_beton_root: Path) -> None:
    beton = demo_beton_root / "train.beton"
    info = json.loads(beton.with_name("train.beton.json").read_text())
    data = beton.read_bytes()
    size = info["chunk_bytes"]
    expected = [f"{zlib.crc32(data[i : i + size]):08x}" for i in range(0, len(data), size)]
    assert size == beton_check.CHUNK_BYTES and info["chunk_crc32"] == expected


def test_damaged_chunks_map_to_the_images_in_them(damaged_root: Path, demo_beton_root: Path) -> None:
    good, bad = demo_beton_root / "train.beton", damaged_root / "train.beton"
    chunk = 16 << 10
    sums = [int(v, 16) for v in beton_check.chunk_checksums(good, chunk)["chunk_crc32"]]
    damaged = beton_check.damaged_chunks(bad, chunk, sums)
    assert 1 <= len(damaged) <= 2 * len(DAMAGED)
    images = beton_check.images_in_chunks(bad, damaged, chunk)
    assert len(DAMAGED) <= images < 60  # the damaged images and their chunk neighbours, not all 200
    assert beton_check.damaged_chunks(good, chunk, sums) == []


def test_check_tool_passes_a_good_file_and_names_a_damaged_one(
    demo_beton_root: Path, damaged_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = _check([demo_beton_root / "train.beton", "--decode"], capsys)
    assert code == 0 and "good" in out, out
    code, out = _check([damaged_root / "train.beton"], capsys)
    assert code == 1 and out.startswith(f"{damaged_root / 'train.beton'}: damaged: ") and " chunks damaged" in out, out
    assert int(out.split("about ")[1].split()[0]) > 0
    code, out = _check([demo_beton_root / "val.beton", damaged_root / "train.beton", "--decode"], capsys)
    assert code == 1 and "JPEG images corrupt" in out and out.count("\n") == 2, out
    code, out = _check([tmp_path / "missing.beton"], capsys)
    assert code == 2 and out.startswith(f"error: {tmp_path / 'missing.beton'}: no such file"), out


def test_a_file_without_checksums_gets_one_note(demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "val.beton", tmp_path)
    sidecar = beton.with_name("val.beton.json")
    info = json.loads(sidecar.read_text())
    del info["chunk_crc32"]
    sidecar.write_text(json.dumps(info))
    check = beton_check.BackgroundCheck(beton)
    check.start()
    check.join(10)
    assert check.line is not None and check.line.startswith(f"note: {beton}") and "--force" in check.line


def test_decode_stage_reports_a_corrupt_jpeg(demo_beton_root: Path) -> None:
    from shufflenet_pl.data import ffcv_decode as fd
    from shufflenet_pl.data.beton_check import _jpeg_entries

    beton = demo_beton_root / "train.beton"
    ptr, size, height, width = _jpeg_entries(beton)[3]
    data = np.fromfile(beton, dtype=np.uint8)[ptr : ptr + size].copy()
    temp, out = np.zeros(height * width * 3, np.uint8), np.zeros((32, 32, 3), np.uint8)
    args = (int(fd._JPG), height, width, 0, 0, height, width, False, temp, out, fd.DEFAULT_INTERPOLATION)
    assert fd.decode_box(data, *args) == 0
    # Random bytes in the middle of the entropy-coded data (not every such run breaks a Huffman code: this one does).
    data[size // 2 - 32 : size // 2 + 32] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)
    assert fd.decode_box(data, *args) == 1  # decoded, but libjpeg warned: corrupt data


@pytest.mark.slow
@pytest.mark.parametrize("damaged", [True, False])
def test_training_on_a_damaged_file_warns_within_the_first_epoch(
    damaged: bool, damaged_root: Path, demo_beton_root: Path, capfd: pytest.CaptureFixture
) -> None:
    from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

    root = damaged_root if damaged else demo_beton_root
    data = FFCVImageNetDataModule(str(root), batch_size=20, num_workers=2, train_res=64, val_res=64, crop_scale=(1, 1))
    data.setup("fit")
    assert sum(len(labels) for _, labels in data.train_dataloader()) == 200
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    if not damaged:
        assert lines == [], err
        return
    beton = root / "train.beton"
    chunk = [line for line in lines if " chunks damaged (about " in line]
    assert len(chunk) == 1 and chunk[0].startswith(f"warning: {beton}: ") and chunk[0].endswith(beton_check.FIX), err
    assert int(chunk[0].split("about ")[1].split()[0]) > 0
    decode = [line for line in lines if "corrupt images decoded this epoch" in line]
    assert len(decode) == 1 and decode[0].startswith(f"warning: {beton}: "), err
    assert 1 <= int(decode[0].split(": ")[2].split()[0]) <= len(DAMAGED)
