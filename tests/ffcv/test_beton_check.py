"""Damaged data found: chunk checksums recorded by the converter, ``shufflenet-pl check``, the datamodule's
background check and the decode stage's count of corrupt JPEGs, on real .beton files."""

import json
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.beton_damage import copy_beton, damage_index, damage_jpegs  # noqa: E402

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


def test_converter_records_checksums_of_each_part_of_the_file(demo_beton_root: Path) -> None:
    from ffcv.types import HeaderType

    beton = demo_beton_root / "train.beton"
    info = json.loads(beton.with_name("train.beton.json").read_text())
    data = beton.read_bytes()
    header = np.frombuffer(data, dtype=HeaderType, count=1)[0]
    regions = info[beton_check.REGIONS_KEY]
    assert [r["kind"] for r in regions] == ["header", "metadata", "data", "alloc_table"]
    assert regions[0]["start"] == 0 and regions[-1]["end"] == len(data)
    header_part, metadata, data_pages, table = regions
    assert header_part["end"] == metadata["start"] and data_pages["end"] == table["start"]
    assert set(data[metadata["end"] : data_pages["start"]]) <= {0}  # only the zeros before the first page
    assert data_pages["start"] % int(header["page_size"]) == 0  # chunks start at FFCV's first page
    assert data_pages["end"] == int(header["alloc_table_ptr"])
    for region in regions:
        size, start, end = region["chunk_bytes"], region["start"], region["end"]
        assert size == beton_check.CHUNK_BYTES
        expected = [f"{zlib.crc32(data[i : min(end, i + size)]):08x}" for i in range(start, end, size)]
        assert region["crc32"] == expected, region["kind"]


def _fine_sidecar(beton: Path, chunk_bytes: int = 512) -> None:
    """Record ``beton``'s checksums in ``chunk_bytes`` chunks (a demo image's JPEG holds several)."""
    sidecar = beton.with_name(beton.name + ".json")
    info = json.loads(sidecar.read_text())
    info.update(beton_check.region_checksums(beton, chunk_bytes))
    sidecar.write_text(json.dumps(info))


def test_damaged_data_chunks_map_to_exactly_the_damaged_images(demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "train.beton", tmp_path)
    _fine_sidecar(beton)
    assert beton_check.check_chunks(beton).damaged == []
    damage_jpegs(beton, DAMAGED, span=8)
    report = beton_check.check_chunks(beton)
    assert report.damage == beton_check.Damage((), len(DAMAGED)) and len(report.damaged) == len(DAMAGED)
    line = beton_check.damage_line(report)
    assert line == f"{len(DAMAGED)} of {report.total} chunks damaged ({len(DAMAGED)} images)", line


@pytest.mark.parametrize("part", ["header", "metadata", "alloc_table"])
def test_damage_in_the_index_says_the_index_is_damaged(part: str, demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "train.beton", tmp_path)
    _fine_sidecar(beton)
    damage_index(beton, part)
    report = beton_check.check_chunks(beton)
    assert report.damage == beton_check.Damage((part,), None) and len(report.damaged) == 1
    line = beton_check.damage_line(report)
    assert line.startswith(f"its index is damaged ({beton_check.INDEX_PARTS[part]}), so no image"), line


def _old_sidecar(beton: Path, chunk_bytes: int) -> None:
    """The sidecar an older converter wrote: fixed chunks of the whole file, no regions."""
    sidecar = beton.with_name(beton.name + ".json")
    info = json.loads(sidecar.read_text())
    del info[beton_check.REGIONS_KEY]
    data = beton.read_bytes()
    info["chunk_bytes"] = chunk_bytes
    info["chunk_crc32"] = [f"{zlib.crc32(data[i : i + chunk_bytes]):08x}" for i in range(0, len(data), chunk_bytes)]
    sidecar.write_text(json.dumps(info))


def test_an_older_sidecars_fixed_chunks_are_still_verified(demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "train.beton", tmp_path / "data")
    _old_sidecar(beton, 512)
    assert beton_check.check_chunks(beton).damaged == []
    damage_jpegs(beton, DAMAGED, span=8)
    assert beton_check.check_chunks(beton).damage == beton_check.Damage((), len(DAMAGED))
    damage_index(beton, "alloc_table")
    assert beton_check.check_chunks(beton).damage.index_parts == ("alloc_table",)
    header = copy_beton(demo_beton_root / "train.beton", tmp_path / "header")
    _old_sidecar(header, beton_check.CHUNK_BYTES)  # its first chunk holds the header and the metadata rows
    damage_index(header, "header")
    assert beton_check.check_chunks(header).damage == beton_check.Damage(("header", "metadata"), None)


def test_the_check_takes_its_share_of_the_process_cpu_time(demo_beton_root: Path) -> None:
    beton = demo_beton_root / "train.beton"
    table = beton_check.chunk_table(beton_check.recorded_regions(beton)) * 60  # ~0.6 s at full speed
    stop, spent = threading.Event(), {}

    def check() -> None:
        start = time.thread_time()
        beton_check.damaged_chunks(beton, table, cpu_share=0.05, stop=stop)
        spent["check"] = time.thread_time() - start

    thread = threading.Thread(target=check)
    process_start = time.process_time()
    thread.start()
    busy = time.thread_time()
    while time.thread_time() - busy < 1.0:  # one CPU second of other work in the process
        sum(range(1000))
    stop.set()
    thread.join(10)
    others = time.process_time() - process_start - spent["check"]
    assert 0 < spent["check"] <= 0.05 * others + beton_check.FREE_CPU_SECONDS + 0.02, (spent, others)


def test_check_tool_passes_a_good_file_and_names_a_damaged_one(
    demo_beton_root: Path, damaged_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = _check([demo_beton_root / "train.beton", "--decode"], capsys)
    assert code == 0 and "good" in out, out
    code, out = _check([damaged_root / "train.beton"], capsys)
    assert code == 1 and out.startswith(f"{damaged_root / 'train.beton'}: damaged: ") and " chunks damaged" in out, out
    assert int(out.split(" chunks damaged (")[1].split()[0]) >= len(DAMAGED)
    code, out = _check([demo_beton_root / "val.beton", damaged_root / "train.beton", "--decode"], capsys)
    assert code == 1 and "JPEG images corrupt" in out and out.count("\n") == 2, out
    code, out = _check([tmp_path / "missing.beton"], capsys)
    assert code == 2 and out.startswith(f"error: {tmp_path / 'missing.beton'}: no such file"), out


def test_a_file_without_checksums_gets_one_note(demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "val.beton", tmp_path)
    sidecar = beton.with_name("val.beton.json")
    info = json.loads(sidecar.read_text())
    del info[beton_check.REGIONS_KEY]
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
    chunk = [line for line in lines if " chunks damaged (" in line]
    assert len(chunk) == 1 and chunk[0].startswith(f"warning: {beton}: ") and chunk[0].endswith(beton_check.FIX), err
    assert int(chunk[0].split(" chunks damaged (")[1].split()[0]) >= len(DAMAGED)
    decode = [line for line in lines if "corrupt images decoded this epoch" in line]
    assert len(decode) == 1 and decode[0].startswith(f"warning: {beton}: "), err
    assert 1 <= int(decode[0].split(": ")[2].split()[0]) <= len(DAMAGED)
