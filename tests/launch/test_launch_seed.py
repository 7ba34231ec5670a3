"""``launch.py`` jobs are seeded: without ``seed_everything`` a job gets the fixed default seed,
recorded in its folder, and two jobs with the same seed train to bitwise the same weights (through
the FFCV datamodule, on the local executor). The job folder holds one config and one W&B run."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unseeded_config(demo_beton_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short epochs of ShuffleNet V2 0.5x on the demo .beton files, with no seed given."""
    config = {
        "model": {
            "model": {
                "class_path": "shufflenet_pl.models.ShuffleNetV2",
                "init_args": {"stages_repeats": [4, 8, 4], "stages_out_channels": [24, 48, 96, 192, 1024]},
            },
            "lr": 0.1,
            "schedule": "cosine",
        },
        "data": {
            "class_path": "shufflenet_pl.data.FFCVImageNetDataModule",
            "init_args": {
                "root": str(demo_beton_root),
                "batch_size": 40,
                "num_workers": 2,
                "train_res": 48,
                "val_res": 48,
            },
        },
        "trainer": {
            "max_epochs": 2,
            "log_every_n_steps": 1,
            "logger": {
                "class_path": "shufflenet_pl.tracking.OfflineFirstWandbLogger",
                "init_args": {"project": "shufflenet-pl-tests", "mode": "offline"},
            },
            "callbacks": [
                {
                    "class_path": "shufflenet_pl.callbacks.VerifiedModelCheckpoint",
                    "init_args": {"monitor": "val/acc1", "mode": "max", "save_last": True},
                }
            ],
        },
    }
    path = tmp_path_factory.mktemp("config") / "unseeded.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _job(config: Path, jobs: Path, *extra: str) -> Tuple[Path, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "WANDB_API_KEY"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--cluster", "local", "--cpu", "--jobs-dir", str(jobs)]
        + ["--config", str(config), *extra],
        cwd=jobs.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    (folder,) = [p for p in jobs.iterdir() if p.is_dir()]
    return folder, result.stdout + result.stderr


def _weights(folder: Path) -> Dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def two_jobs(unseeded_config: Path, tmp_path_factory: pytest.TempPathFactory):
    return [_job(unseeded_config, tmp_path_factory.mktemp(f"run{i}") / "jobs") for i in range(2)]


def test_jobs_without_a_seed_get_the_default_and_the_same_weights(two_jobs) -> None:
    from cluster.config import DEFAULT_SEED

    for folder, output in two_jobs:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["seed_everything"] == DEFAULT_SEED
        assert json.loads((folder / "launch.json").read_text())["seed"] == DEFAULT_SEED
        assert f"seed {DEFAULT_SEED}" in output
    (first, _), (second, _) = two_jobs
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise, not merely close
    assert (
        json.loads((first / "result.json").read_text())["metrics"]
        == json.loads((second / "result.json").read_text())["metrics"]
    )


def test_job_folder_holds_one_config_and_one_wandb_run(two_jobs) -> None:
    folder, _ = two_jobs[0]
    assert [p.relative_to(folder) for p in folder.rglob("config.yaml")] == [Path("config.yaml")]
    assert not (folder / "shufflenet-pl").exists()
    runs = [p for p in (folder / "wandb").iterdir() if p.is_dir() and p.name.startswith("offline-run-")]
    assert len(runs) == 1
    assert sorted(p.name for p in folder.rglob("wandb") if p.is_dir()) == ["wandb"]


def test_a_given_seed_is_kept_and_changes_the_weights(unseeded_config: Path, two_jobs, tmp_path: Path) -> None:
    folder, output = _job(unseeded_config, tmp_path / "jobs", "--seed_everything", "7")
    assert yaml.safe_load((folder / "config.yaml").read_text())["seed_everything"] == 7
    assert "seed 7" in output
    a, b = _weights(folder), _weights(two_jobs[0][0])
    assert any(not torch.equal(a[name], b[name]) for name in a)
