"""``shufflenet-pl bench-train``: the step timer's arithmetic, its refusals, the verdicts, and one quick
real run on the CPU (real demo JPEGs, a real .beton, real fits) whose numbers must be sane."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.train_throughput import CANDIDATES, Run, main, verdicts
from conftest import REPO


def test_run_measures_the_steady_state_and_the_time_between_steps() -> None:
    synced = []
    run = Run(warmup=2, steps=2, batch_size=10, synchronize=lambda: synced.append(len(run.ends)))
    # Hand-set clock: steps take 1 s, the loader makes the last one wait 1 s before it starts.
    run.starts, run.ends = [0.0, 1.0, 2.0, 4.0], [1.0, 2.0, 3.0, 5.0]
    result = run.result()
    assert result["images_per_s"] == pytest.approx(20 / 3.0)  # 2 steps of 10 images in 3 s after warm-up
    assert result["between_steps_share"] == pytest.approx(1 / 3.0)  # the wait from 3.0 to 4.0
    run.ends.pop()
    with pytest.raises(RuntimeError, match="3 of 4 steps"):
        run.result()


def test_run_synchronizes_only_at_the_window_ends() -> None:
    synced = []
    run = Run(warmup=2, steps=3, batch_size=1, synchronize=lambda: synced.append(len(run.ends)))
    for _ in range(5):
        run.step_start()
        run.step_end()
    assert synced == [1, 4]


def test_verdicts_name_the_loader_bottleneck() -> None:
    def cand(rate: float, wait: float) -> dict:
        return {"images_per_s": rate, "between_steps_share": wait}

    report = {
        "device_type": "cuda",
        "candidates": {
            "fit_ffcv": cand(500.0, 0.5),
            "fit_imagefolder": cand(95.0, 0.0),
            "model_only": cand(100.0, 0.0),
            "bare_loop": cand(101.0, 0.0),
            "reference_loop": cand(250.0, 0.4),
        },
    }
    text = "\n".join(verdicts(report))
    assert "0.99x the bare loop (goal >= 0.95x: met)" in text
    assert "2.00x torchvision's reference loop (goal >= 1.5x: met)" in text
    assert "loader keeps up in fit, ImageFolder" in text
    report["candidates"]["fit_ffcv"] = cand(40.0, 0.5)
    text = "\n".join(verdicts(report))
    assert (
        "The loader is the bottleneck of fit, FFCV datamodule: it reaches 40% of the model-only rate (60% lost)" in text
    )
    assert "waits for data 50%" in text and "goal >= 1.5x: not met" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "cpu", "--steps", "1"], "--steps must be >= 2"),
        (["--device", "cpu", "--compile", "--compile-mode", "reduce-overhead"], "needs --device cuda"),
        (["--device", "cpu", "--images-per-class", "1", "--batch-size", "16"], "fewer than one batch"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(argv: list, message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_quick_cpu_run_gives_sane_numbers(tmp_path: Path) -> None:
    out = tmp_path / "train_throughput.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shufflenet_pl.cli",
            "bench-train",
            "--device",
            "cpu",
            "--quick",
            "--rounds",
            "1",
            "--data-root",
            str(tmp_path / "data"),
            "--json",
            str(out),
            "--no-progress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchvision reference loop" in result.stdout and "goal >= 0.95x" in result.stdout
    report = json.loads(out.read_text())
    for key in (
        "fit_images_per_s",
        "fit_imagefolder_images_per_s",
        "model_only_images_per_s",
        "bare_loop_images_per_s",
        "reference_loop_images_per_s",
    ):
        assert math.isfinite(report[key]) and report[key] > 0, key
    assert set(report["candidates"]) == set(CANDIDATES)
    for name, candidate in report["candidates"].items():
        assert 0.0 <= candidate["between_steps_share"] <= 1.0, name
    assert 0.0 <= report["data_wait_share"] <= 1.0
    assert "gpu_busy_share" not in report  # CUDA only
