"""W&B's service dies on SIGTERM (SLURM sends it to every process of a job; wandb#9963) and loses
what it had not written: the logger starts a new one on the same run id and logs those rows again."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def _service_pids() -> list:
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children if "wandb-core" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]


def test_rows_survive_a_sigterm_to_the_wandb_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shufflenet_pl.tracking import OfflineFirstWandbLogger
    from shufflenet_pl.tracking.reader import find_run_files, read_run_files

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    logger = OfflineFirstWandbLogger(project="t", mode="offline", save_dir=str(tmp_path))
    run_id = logger.experiment.id
    for step in range(5):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0}, step=step)
    (service,) = _service_pids()
    os.kill(service, signal.SIGTERM)  # as scancel does, while the training process keeps going
    for _ in range(100):
        if not Path(f"/proc/{service}").exists() or "Z" in Path(f"/proc/{service}/stat").read_text().split(")")[1][:3]:
            break
        time.sleep(0.05)
    for step in range(5, 8):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0}, step=step)
    logger.experiment.finish()

    parts = [read_run_files(p) for p in find_run_files(tmp_path / "wandb")]
    assert {part.run_id for part in parts} == {run_id} and len(parts) == 2
    steps = sorted(int(row["trainer/global_step"]) for part in parts for row in part.history if "train/loss" in row)
    assert steps == list(range(8))  # each row once, none lost
