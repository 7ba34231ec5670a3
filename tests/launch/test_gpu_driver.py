"""A GPU job whose torch cannot use the GPUs stops with one line: the driver's CUDA version against
torch's, and the ``setup.sh --torch-cuda`` build that fits (shufflenet_pl/cuda_driver.py); so does a
direct ``shufflenet-pl fit --trainer.accelerator gpu``."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from conftest import REPO
from shufflenet_pl.cuda_driver import accelerator_problem, driver_cuda_version, gpu_problem


@pytest.mark.parametrize(
    "driver, fix",
    [((12, 4), "12.6"), ((12, 6), "12.6"), ((12, 9), "12.8"), ((12, 0), "12.6")],
)
def test_a_12x_driver_under_a_cuda_13_torch_names_both_versions_and_the_fitting_build(driver, fix) -> None:
    line = gpu_problem(driver, "13.0", "2.14.1", host="gpu07")
    assert "\n" not in line
    assert line.startswith(f"gpu07: the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than CUDA 13.0")
    assert line.endswith(f"bash setup.sh --torch-cuda {fix}")


def test_a_driver_too_old_for_every_build_says_to_upgrade_it() -> None:
    line = gpu_problem((11, 8), "12.8", "2.14.1")
    assert "supports CUDA 11.8, older than CUDA 12.8" in line
    assert line.endswith("upgrade the NVIDIA driver to >= 525 (CUDA 12) or >= 580 (CUDA 13)")


def test_other_reasons_get_their_own_line() -> None:
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in gpu_problem((13, 0), "13.0", "2.14.1", visible_devices="")
    assert "torch 2.14.1+cpu is a CPU-only build" in gpu_problem((13, 1), None, "2.14.1+cpu")
    assert gpu_problem((13, 1), None, "2.14.1+cpu").endswith("bash setup.sh --torch-cuda 13.0")
    assert "no NVIDIA driver here" in gpu_problem(None, "13.0", "2.14.1")
    # A driver new enough: the versions are not the reason, and the line does not blame them.
    same = gpu_problem((13, 0), "13.0", "2.14.1")
    assert "sees no GPU although the NVIDIA driver supports CUDA 13.0" in same and "setup.sh" not in same


def test_driver_version_is_none_or_a_version_here() -> None:
    version = driver_cuda_version()
    assert version is None or (version[0] >= 10 and 0 <= version[1] < 100)


@pytest.mark.slow
def test_gpu_job_without_a_usable_gpu_fails_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job itself, under submitit's local executor, on a node where torch sees no GPU: the
    launcher's failure line is the reason, before any training code runs."""
    import submitit

    from cluster.job import TrainingJob
    from cluster.errors import LaunchError
    from cluster.follow import raise_if_failed

    (tmp_path / "launch.json").write_text(json.dumps({"accelerator": "gpu"}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(tasks_per_node=1, timeout_min=2)
    job = executor.submit(TrainingJob(str(tmp_path), "run-id", "local"))
    job.wait()
    with pytest.raises(LaunchError) as failure:
        raise_if_failed(job)
    first = str(failure.value).splitlines()[0]
    assert first.startswith(f"job {job.job_id} failed; rank 0: RuntimeError: "), first
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU from this GPU job" in first
    assert not (tmp_path / "result.json").exists()


def test_only_an_accelerator_that_asks_for_cuda_is_checked() -> None:
    for accelerator in ("cpu", "auto", None, {"class_path": "lightning.pytorch.accelerators.CPUAccelerator"}):
        assert accelerator_problem(accelerator) is None
    assert "or run on the CPU (--trainer.accelerator cpu)" in gpu_problem(
        (13, 0), "13.0", "2.14.1", visible_devices="", cpu_run="run on the CPU (--trainer.accelerator cpu)"
    )


def _fit_on_the_gpu(folder: Path, env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", "fit", "--config", str(REPO / "configs/experiment/demo.yaml")]
        + ["--trainer.accelerator", "gpu", "--data.init_args.root", str(folder / "data")]
        + ["--trainer.default_root_dir", str(folder / "runs")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("reason", ["hidden", "this machine"])
def test_direct_fit_on_a_gpu_torch_cannot_use_stops_with_one_line(
    reason: str, tmp_path: Path, cli_env: Dict[str, str]
) -> None:
    """``CUDA_VISIBLE_DEVICES=''`` hides the GPUs on any machine; without it, a machine without a GPU
    (this test's other case skips on one with a GPU). The line names the setting and comes before the
    data, the model or the trainer exist: nothing is written."""
    env = dict(cli_env)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if reason == "hidden":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        import torch

        if torch.cuda.is_available():
            pytest.skip("torch can use a GPU here")
    result = _fit_on_the_gpu(tmp_path, env)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = errors[0]
    assert result.stderr.rstrip().splitlines()[-1] == line and line.startswith("error: trainer.accelerator=gpu: ")
    if reason == "hidden":
        assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in line, line
        assert line.endswith("unset it, or run on the CPU (--trainer.accelerator cpu)"), line
    else:  # which reason depends on the machine's driver and torch build; each names torch's version
        assert f"torch {torch.__version__}" in line, line
    assert sorted(os.listdir(tmp_path)) == [], "the run wrote files before stopping"
