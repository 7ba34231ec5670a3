"""benchmarks/data_throughput.py on a tiny run: it measures every pipeline (torchvision, FFCV stock,
ours, the decode ceiling) and writes the JSON that render_docs reads, with sane numbers. Not a timed
test: the numbers are only checked to be positive and consistent with each other."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

HEADLINE_KEYS = ("torchvision_images_per_s", "ffcv_images_per_s", "ours_images_per_s", "decode_ceiling_images_per_s")


@pytest.mark.slow
def test_data_benchmark_writes_the_json_render_docs_reads(tmp_path: Path, cli_env: dict) -> None:
    out = tmp_path / "data_throughput.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/data_throughput.py"),
            "--images",
            "24",
            "--batch",
            "8",
            "--epochs",
            "1",
            "--res",
            "64",
            "--workers",
            "1",
            "2",
            "--settings",
            "jpg:160:90",
            "raw:96",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        env=dict(cli_env, SHUFFLENET_PL_JIT_CACHE=str(tmp_path / "jit")),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in HEADLINE_KEYS:
        assert math.isfinite(report[key]) and report[key] > 0, key
    assert (report["setting"], report["workers"]) == ("jpg max 160 q90", 2)
    assert report["ours_vs_ffcv"] == pytest.approx(report["ours_images_per_s"] / report["ffcv_images_per_s"])
    assert report["ours_vs_ceiling"] == pytest.approx(
        report["ours_images_per_s"] / report["decode_ceiling_images_per_s"]
    )
    assert report["ours_vs_torchvision"] == pytest.approx(
        report["ours_images_per_s"] / report["torchvision_images_per_s"]
    )
    assert sorted(report["per_workers"]) == ["1", "2"]
    for rates in report["per_workers"].values():
        assert all(rates[key] > 0 for key in HEADLINE_KEYS)
    assert report["per_workers"]["2"]["ours_images_per_s"] == report["ours_images_per_s"]
    assert report["settings"]["raw max 96"]["ours_images_per_s"] > 0
    assert report["settings"]["raw max 96"]["decode_ceiling_images_per_s"] is None  # nothing to decode
    profile = report["ours_profile"]
    assert profile["decode_ms"] > 0 and profile["resize_ms"] > 0 and profile["loader_ms_per_image_per_worker"] > 0
    assert "ours jpg max 160 q90" in result.stdout and "x FFCV stock" in result.stdout

    from benchmarks.render_docs import TABLES

    (table,) = [t for t in TABLES if t.name == "cpu-data-throughput"]
    rendered = table.render(report)
    for label in ("our FFCV datamodule, images/s", "ours / decode ceiling", "ours / FFCV as shipped"):
        assert label in rendered


def test_scaling_efficiency_is_against_the_smallest_worker_count() -> None:
    from benchmarks.data_throughput import scaling

    def rates(ours: float, ffcv: float, decode: float) -> dict:
        return {"ours_images_per_s": ours, "ffcv_images_per_s": ffcv, "decode_ceiling_images_per_s": decode}

    table = scaling({"1": rates(100, 50, 200), "2": rates(180, 60, 400), "4": rates(200, 80, 0)}, [1, 2, 4])
    assert table["1"]["ours_efficiency"] == pytest.approx(1.0)
    assert table["2"]["ours_efficiency"] == pytest.approx(0.9)
    assert table["2"]["ffcv_efficiency"] == pytest.approx(0.6)
    assert table["2"]["ours_vs_decode"] == pytest.approx(0.45)
    assert table["4"]["ours_efficiency"] == pytest.approx(0.5)
    assert table["4"]["decode_efficiency"] is None and table["4"]["ours_vs_decode"] is None


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_source_that_is_not_an_image_folder_is_one_error_line(tmp_path: Path, cli_env: dict, make: str) -> None:
    source = tmp_path / "photos"
    if make == "empty":
        (source / "class0").mkdir(parents=True)
        (source / "class0" / "notes.txt").write_text("not an image")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/data_throughput.py"), "--source", str(source)],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --source {source}")
