"""The Lightning CLI end to end on real JPEGs (the built-in demo set) and their real ``.beton``, CPU only."""

import csv
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import REPO, run_cli

DEMO = str(REPO / "configs" / "experiment" / "demo.yaml")
# Seconds a CLI subprocess may take: these take 10-60 s on an idle 2-core machine, 3x that when it is
# shared (120 s failed under load); the bound only stops a hang.
CLI_TIMEOUT = 900


def _data_args(root: Path, res: int = 64, batch: int = 16) -> list:
    # The ImageFolder datamodule (demo.yaml's is FFCV's): these tests compare with torchvision's preprocessing.
    return [
        "--data",
        "shufflenet_pl.data.ImageFolderDataModule",
        "--data.init_args.root",
        str(root),
        "--data.init_args.demo",
        "false",
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.train_res",
        str(res),
        "--data.init_args.val_res",
        str(res),
        "--data.init_args.num_workers",
        "1",
    ]


def _csv_logger(save_dir: Path) -> list:
    return [
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(save_dir),
        "--trainer.logger.name",
        "run",
        "--trainer.enable_progress_bar",
        "false",
    ]


def _metrics(save_dir: Path) -> list:
    (path,) = glob.glob(str(save_dir / "run" / "version_*" / "metrics.csv"))
    return list(csv.DictReader(open(path)))


@pytest.mark.slow
def test_fit_lowers_the_loss_on_real_images(demo_root: Path, cli_env: dict, tmp_path: Path) -> None:
    """Fit a few steps on two fixed batches of demo JPEGs: the training loss must fall well below
    chance (ln 10 = 2.30)."""
    result = run_cli(
        [
            "fit",
            "--config",
            DEMO,
            *_data_args(demo_root),
            *_csv_logger(tmp_path),
            "--trainer.max_epochs",
            "15",
            "--trainer.overfit_batches",
            "2",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--model.lr",
            "0.05",
            "--model.warmup_epochs",
            "0",
            "--model.label_smoothing",
            "0",
            "--seed_everything",
            "0",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(r["train/loss"]) for r in _metrics(tmp_path) if r.get("train/loss")]
    assert len(losses) == 30
    assert losses[0] > 2.0  # starts at chance
    assert sum(losses[-10:]) / 10 < 0.5 * losses[0], losses


@pytest.mark.slow
def test_checkpoint_then_validate_gives_the_same_metrics(demo_root: Path, cli_env: dict, tmp_path: Path) -> None:
    fit = run_cli(
        [
            "fit",
            "--config",
            DEMO,
            *_data_args(demo_root),
            *_csv_logger(tmp_path / "fit"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "4",
            "--seed_everything",
            "0",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (log_dir,) = glob.glob(str(tmp_path / "fit" / "run" / "version_*"))
    fit_val = [r for r in _metrics(tmp_path / "fit") if r.get("val/acc1")][-1]
    ckpt = Path(log_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (Path(log_dir) / "config.yaml").is_file()

    validate = run_cli(
        [
            "validate",
            "--config",
            str(Path(log_dir) / "config.yaml"),
            *_csv_logger(tmp_path / "validate"),
            "--ckpt_path",
            str(ckpt),
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert validate.returncode == 0, validate.stderr[-3000:]
    val = _metrics(tmp_path / "validate")[-1]
    for key in ("val/acc1", "val/acc5", "val/loss"):
        assert float(val[key]) == pytest.approx(float(fit_val[key]), abs=1e-6), key

    test = run_cli(
        [
            "test",
            "--config",
            str(Path(log_dir) / "config.yaml"),
            *_csv_logger(tmp_path / "test"),
            "--ckpt_path",
            str(ckpt),
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    tested = _metrics(tmp_path / "test")[-1]
    for key in ("acc1", "acc5", "loss"):
        assert float(tested[f"test/{key}"]) == pytest.approx(float(fit_val[f"val/{key}"]), abs=1e-6), key


@pytest.mark.slow
def test_validate_with_imported_torchvision_weights(demo_root: Path, cli_env: dict, tmp_path: Path) -> None:
    """``validate --weights`` runs torchvision's network: its accuracy equals torchvision's model
    evaluated directly on the same preprocessed images."""
    from shufflenet_pl.data import ImageFolderDataModule
    from shufflenet_pl.data.imagefolder import normalize_on_device

    torch.manual_seed(1)
    theirs = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    # A few steps of training so that predictions are not all one class.
    data = ImageFolderDataModule(str(demo_root), batch_size=40, train_res=64, val_res=64, num_workers=0)
    data.setup("fit")
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    for images, targets in list(data.train_dataloader())[:3]:
        loss = torch.nn.functional.cross_entropy(theirs(normalize_on_device(images)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    theirs.eval()
    correct = total = 0
    with torch.no_grad():
        for images, targets in data.val_dataloader():
            correct += (theirs(normalize_on_device(images)).argmax(1) == targets).sum().item()
            total += len(targets)
    weights = tmp_path / "tv.pth"
    torch.save(theirs.state_dict(), weights)

    result = run_cli(
        ["validate", "--config", DEMO, *_data_args(demo_root), *_csv_logger(tmp_path), "--weights", str(weights)],
        cwd=tmp_path,
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(_metrics(tmp_path)[-1]["val/acc1"]) == pytest.approx(correct / total, abs=1e-6)


@pytest.mark.slow
def test_predict_writes_csv_with_paths_and_class_names(demo_root: Path, cli_env: dict, tmp_path: Path) -> None:
    result = run_cli(
        ["predict", "--config", DEMO, *_data_args(demo_root), *_csv_logger(tmp_path)], cwd=tmp_path, env=cli_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = glob.glob(str(tmp_path / "run" / "version_*" / "predictions.csv"))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 60  # every validation image once
    assert all(Path(r["path"]).is_file() for r in rows)
    classes = {p.name for p in (demo_root / "train").iterdir()}
    assert all(r["top1"] in classes and 0 <= float(r["top1_prob"]) <= 1 for r in rows)
    assert all(len(r["topk"].split()) == 5 for r in rows)


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.lr", "-1"], "model.lr=-1.0 is out of range"),
        (
            ["--data.init_args.root", "/no/such/imagenet", "--data.init_args.demo", "false"],
            "/no/such/imagenet/train does not exist",
        ),
        (["--data.init_args.val_crop_ratio", "1.5"], "data.val_crop_ratio must be in (0, 1]"),
    ],
)
def test_bad_config_values_name_the_key(override: list, message: str, cli_env: dict, tmp_path: Path) -> None:
    result = run_cli(["fit", "--config", DEMO, *override], cwd=tmp_path, env=cli_env, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _ffcv_args(root: Path, res: int = 64, batch: int = 16) -> list:
    # demo.yaml's own datamodule (FFCV), on the session's converted .beton files.
    return [
        "--data.init_args.root",
        str(root),
        "--data.init_args.demo",
        "false",
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.train_res",
        str(res),
        "--data.init_args.val_res",
        str(res),
        "--data.init_args.num_workers",
        "1",
    ]


@pytest.mark.slow
def test_ffcv_fit_then_validate_test_predict_with_default_flags(
    demo_beton_root: Path, demo_root: Path, cli_env: dict, tmp_path: Path
) -> None:
    """The README's sequence on FFCV data with the default flags (validate/test/predict run under
    ``torch.inference_mode``, which used to break FFCV's loader thread and hang): each command ends,
    and the checkpoint's metrics are the training run's."""
    fit = run_cli(
        [
            "fit",
            "--config",
            DEMO,
            *_ffcv_args(demo_beton_root),
            *_csv_logger(tmp_path / "fit"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "4",
            "--seed_everything",
            "0",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (log_dir,) = glob.glob(str(tmp_path / "fit" / "run" / "version_*"))
    fit_val = [r for r in _metrics(tmp_path / "fit") if r.get("val/acc1")][-1]
    config, ckpt = Path(log_dir) / "config.yaml", Path(log_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and config.is_file()

    for stage in ("validate", "test", "predict"):
        result = run_cli(
            [stage, "--config", str(config), *_csv_logger(tmp_path / stage), "--ckpt_path", str(ckpt)],
            cwd=tmp_path,
            env=cli_env,
        )
        assert result.returncode == 0, (stage, result.stderr[-3000:])
        assert "inference tensor" not in result.stderr
        if stage != "predict":
            metrics, prefix = _metrics(tmp_path / stage)[-1], {"validate": "val", "test": "test"}[stage]
            for key in ("acc1", "acc5", "loss"):
                assert float(metrics[f"{prefix}/{key}"]) == pytest.approx(float(fit_val[f"val/{key}"]), abs=1e-6), (
                    stage,
                    key,
                )
    (path,) = glob.glob(str(tmp_path / "predict" / "run" / "version_*" / "predictions.csv"))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 60 and all(Path(r["path"]).is_file() for r in rows)
    assert {Path(r["path"]).relative_to(demo_root / "val").parts[0] for r in rows} == {
        p.name for p in (demo_root / "val").iterdir()
    }


def _faulty_ffcv_args(root: Path, fault: str, fault_batch: int, marker: Path) -> list:
    """The FFCV datamodule with a real pipeline op that raises or stalls in FFCV's loader thread
    (tests/helpers/ffcv_faults.py)."""
    return [
        "--data",
        "helpers.ffcv_faults.FaultyFFCVDataModule",
        *_ffcv_args(root),
        "--data.init_args.fault",
        fault,
        "--data.init_args.fault_batch",
        str(fault_batch),
        "--data.init_args.marker",
        str(marker),
        "--no-wandb",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(marker.parent),
    ]


@pytest.fixture
def faults_env(cli_env: dict) -> dict:
    return {**cli_env, "PYTHONPATH": str(REPO / "tests") + os.pathsep + cli_env["PYTHONPATH"]}


@pytest.mark.slow
def test_ffcv_loader_thread_exception_ends_validate_with_it(
    demo_beton_root: Path, faults_env: dict, tmp_path: Path
) -> None:
    from helpers.ffcv_faults import FAULT_MESSAGE

    result = run_cli(
        ["validate", "--config", DEMO, *_faulty_ffcv_args(demo_beton_root, "raise", 1, tmp_path / "m")],
        cwd=tmp_path,
        env=faults_env,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"ValueError: {FAULT_MESSAGE} at batch 1" in result.stderr
    assert "raised in FFCV's loader thread reading" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, returncode", [(signal.SIGINT, 1), (signal.SIGTERM, 128 + signal.SIGTERM)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_ends_validate_waiting_for_a_stalled_ffcv_loader(
    demo_beton_root: Path, faults_env: dict, tmp_path: Path, signum: int, returncode: int
) -> None:
    """A loader thread that never delivers the first batch: Ctrl-C or SIGTERM ends the command within
    seconds (Lightning's SIGTERM handler only sets a flag; a blocked wait never read it)."""
    marker = tmp_path / "stalled"
    with open(tmp_path / "out.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shufflenet_pl.cli",
                "validate",
                "--config",
                DEMO,
                *_faulty_ffcv_args(demo_beton_root, "stall", 0, marker),
            ],
            cwd=tmp_path,
            env=faults_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + CLI_TIMEOUT
            while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert marker.exists(), (tmp_path / "out.log").read_text()[-3000:]
            process.send_signal(signum)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"validate still runs 60 s after {signal.Signals(signum).name}")
        finally:
            process.kill()
            process.wait()
    assert process.returncode == returncode, (tmp_path / "out.log").read_text()[-3000:]
