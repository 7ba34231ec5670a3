"""A GPU job whose torch cannot use the GPUs stops with one line: the driver's CUDA version against
torch's, and the ``setup.sh --torch-cuda`` build that fits (shufflenet_pl/cuda_driver.py)."""

import json
from pathlib import Path

import pytest

from shufflenet_pl.cuda_driver import driver_cuda_version, gpu_problem


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
