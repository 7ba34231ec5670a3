"""W&B tracking: the offline-by-default decision, the launcher's job environment, the CLI wiring,
the run reader, plots and dashboards. The slow tests run the real CLI with no W&B credentials and
read the offline runs back from their ``.wandb`` files."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from jsonargparse import Namespace

from shufflenet_pl.tracking.reader import RunFiles

from conftest import REPO
from bench.test_throughput_monitor import offline_env

DEMO = str(REPO / "configs" / "experiment" / "demo.yaml")
WANDB_CLI = str(Path(sys.executable).with_name("wandb"))
HAS_GIT = shutil.which("git") is not None and (REPO / ".git").exists()  # a checkout, not a copied tree


@pytest.fixture
def no_wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without W&B credentials or settings."""
    for key in list(os.environ):
        if key.startswith(("WANDB_", "SLURM_")) or key == "SHUFFLENET_PL_JOB_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _cli(args: List[str], cwd: Path, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    # stdin is not a terminal, as in a batch job: wandb must neither prompt nor wait.
    return subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --- the mode decision ----------------------------------------------------------------------


def test_offline_without_credentials(no_wandb_env: None) -> None:
    from shufflenet_pl.tracking import find_wandb_credentials, resolve_wandb_mode

    assert find_wandb_credentials() is None
    mode, reason = resolve_wandb_mode()
    assert mode == "offline" and reason == "no W&B API key in WANDB_API_KEY or ~/.netrc"


def test_online_with_a_netrc_entry_for_the_wandb_host(
    no_wandb_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shufflenet_pl.tracking import resolve_wandb_mode

    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode() == ("online", f"credentials from {netrc}")
    # A key for another server does not count for this one.
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode()[0] == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode() == ("online", "credentials from WANDB_API_KEY")


def test_explicit_mode_and_wandb_mode_win(no_wandb_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from shufflenet_pl.tracking import resolve_wandb_mode

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    assert resolve_wandb_mode() == ("offline", "WANDB_MODE")
    assert resolve_wandb_mode("disabled") == ("disabled", "trainer.logger.mode")
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'"):
        resolve_wandb_mode()
    with pytest.raises(ValueError, match="trainer.logger.mode='cloud'"):
        resolve_wandb_mode("cloud")


# --- the launcher's job environment -------------------------------------------------------


def test_logger_takes_run_id_folder_and_resources_from_the_job(
    no_wandb_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shufflenet_pl.tracking import OfflineFirstWandbLogger, run_context

    job = tmp_path / "job"
    job.mkdir()
    launch = {
        "nodes": 4,
        "gpus": 8,
        "partition": "gpu",
        "account": "vision",
        "job_id": "1234",
        "array_index": 2,
        "command": ["shufflenet-pl", "fit"],
    }
    (job / "launch.json").write_text(json.dumps(launch))
    for key, value in {
        "WANDB_RUN_ID": "job1234x2",
        "WANDB_RESUME": "allow",
        "WANDB_DIR": str(job),
        "SHUFFLENET_PL_JOB_DIR": str(job),
        "SLURM_JOB_ID": "1234",
        "SLURM_RESTART_COUNT": "1",
        "SLURM_JOB_PARTITION": "gpu",
        "SLURM_JOB_NUM_NODES": "4",
    }.items():
        monkeypatch.setenv(key, value)
    logger = OfflineFirstWandbLogger()
    assert logger.version == "job1234x2" and logger.save_dir == str(job)
    assert logger.mode == "offline" and logger.name == "shufflenet-pl"
    logger.apply_cli_defaults("runs/elsewhere", "fit")
    assert logger.save_dir == str(job)  # the job's folder wins over trainer.default_root_dir
    context = run_context()
    assert context["launch"] == {"job_dir": str(job), **launch}
    assert context["slurm"] == {"job_id": "1234", "restart_count": "1", "job_partition": "gpu", "job_num_nodes": "4"}
    if HAS_GIT:
        assert re.fullmatch(r"[0-9a-f]{40}", context["git"]["commit"])
    # Outside a job: a fresh id per run (chosen by wandb), the trainer's folder.
    for key in (
        "WANDB_RUN_ID",
        "WANDB_DIR",
        "SHUFFLENET_PL_JOB_DIR",
        "SLURM_JOB_ID",
        "SLURM_RESTART_COUNT",
        "SLURM_JOB_PARTITION",
        "SLURM_JOB_NUM_NODES",
    ):
        monkeypatch.delenv(key)
    logger = OfflineFirstWandbLogger(project="p", group="widths", tags=["x0_5"])
    logger.apply_cli_defaults("runs/demo", "validate")
    assert logger.version is None and logger.save_dir == "runs/demo"
    assert logger._wandb_init["job_type"] == "validate" and logger._wandb_init["group"] == "widths"
    assert "launch" not in run_context() and "slurm" not in run_context()


def test_unreadable_launch_json_warns_and_goes_on(
    no_wandb_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shufflenet_pl.tracking.wandb_logger import job_resources

    monkeypatch.setenv("SHUFFLENET_PL_JOB_DIR", str(tmp_path))
    (tmp_path / "launch.json").write_text("{not json")
    with pytest.warns(UserWarning, match="launch.json"):
        assert job_resources() == {"launch": {"job_dir": str(tmp_path)}}


def test_no_wandb_replaces_only_wandb_loggers() -> None:
    from shufflenet_pl.tracking.wandb_logger import remove_wandb_loggers

    wandb = Namespace(class_path="shufflenet_pl.tracking.OfflineFirstWandbLogger", init_args=Namespace(project="p"))
    tensorboard = Namespace(
        class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=Namespace(save_dir="tb")
    )
    trainer = Namespace(logger=wandb, default_root_dir="runs/demo")
    assert remove_wandb_loggers(trainer)
    assert trainer.logger.class_path == "lightning.pytorch.loggers.CSVLogger"
    assert trainer.logger.init_args.save_dir == "runs/demo"
    trainer = Namespace(logger=[wandb, tensorboard], default_root_dir="runs")
    assert remove_wandb_loggers(trainer) and trainer.logger is tensorboard
    trainer = Namespace(logger=False, default_root_dir="runs")
    assert not remove_wandb_loggers(trainer) and trainer.logger is False


@pytest.mark.slow
def test_cli_logs_to_wandb_by_default_and_to_csv_with_no_wandb(no_wandb_env: None) -> None:
    """What ``shufflenet-pl fit`` builds: W&B by default (offline here, in default_root_dir) and
    the throughput callback; a CSVLogger in the same folder with ``--no-wandb``."""
    from lightning.pytorch.loggers import CSVLogger

    from shufflenet_pl.callbacks import ImagesPerSecondMonitor
    from shufflenet_pl.cli import build_cli
    from shufflenet_pl.tracking import OfflineFirstWandbLogger

    base = ["--config", DEMO, "--data", "bench.test_throughput_monitor.SleepyDataModule"]
    cli = build_cli(base, run=False)
    (logger,) = cli.trainer.loggers
    assert isinstance(logger, OfflineFirstWandbLogger) and logger.mode == "offline" and logger.save_dir == "runs/demo"
    assert any(isinstance(cb, ImagesPerSecondMonitor) for cb in cli.trainer.callbacks)
    cli = build_cli([*base, "--no-wandb"], run=False)
    (logger,) = cli.trainer.loggers
    assert isinstance(logger, CSVLogger) and logger.save_dir == "runs/demo"


# --- reading runs back, merging a requeued job, plotting ---------------------------------


def _part(run_id: str, start: float, rows: List[dict], best: float) -> RunFiles:
    return RunFiles(
        path=Path(f"offline-run-{start:.0f}-{run_id}"),
        run_id=run_id,
        start_time=start,
        history=[{"_step": i, **row} for i, row in enumerate(rows)],
        summary={"val/acc1": {"max": best}},
        config={"slurm": {"restart_count": str(int(start))}},
    )


def test_merge_drops_the_steps_a_requeued_job_redid() -> None:
    from shufflenet_pl.tracking.reader import _merge

    first = _part(
        "abc",
        0,
        [
            {"trainer/global_step": 3, "trainer/images_seen": 64, "perf/images_per_sec": 10.0},
            {"trainer/global_step": 3, "val/acc1": 0.2},
            {
                "trainer/global_step": 7,
                "trainer/images_seen": 128,
                "perf/images_per_sec": 11.0,
            },  # lost: not checkpointed
        ],
        best=0.2,
    )
    second = _part(
        "abc",
        1,
        [
            {"trainer/global_step": 7, "trainer/images_seen": 128, "perf/images_per_sec": 12.0},  # redone from step 4
            {"trainer/global_step": 7, "val/acc1": 0.5},
            {"trainer/global_step": 11, "trainer/images_seen": 192, "perf/images_per_sec": 13.0},
        ],
        best=0.5,
    )
    run = _merge([second, first])  # any order in, start order out
    assert [part.start_time for part in run.parts] == [0, 1]
    assert run.values("perf/images_per_sec") == [10.0, 12.0, 13.0]
    assert run.best("val/acc1") == 0.5 and run.config["slurm"]["restart_count"] == "1"
    # Validation rows carry no images count in CSV files: interpolated over the global step.
    assert run.series("val/acc1") == ([64, 128], [0.2, 0.5])
    assert run.series("val/acc1", x="trainer/global_step") == ([3, 7], [0.2, 0.5])


def test_plot_draws_a_png_and_summarises(tmp_path: Path) -> None:
    from shufflenet_pl.tracking.plot import plot_run, run_summary
    from shufflenet_pl.tracking.reader import _merge

    rows = []
    for step in range(3, 40, 4):
        rows.append(
            {
                "trainer/global_step": step,
                "trainer/images_seen": 32 * (step + 1),
                "perf/images_per_sec": 100.0 + step,
                "perf/images_per_sec_per_device": 50.0 + step / 2,
                "perf/step_time_ms": 320.0,
                "perf/data_wait_share": 0.25,
                "perf/peak_host_memory_gb": 1.5,
                "train/loss": 2.0 - step / 40,
                "train/lr": 0.1,
            }
        )
        if step % 8 == 7:
            rows.append({"trainer/global_step": step, "val/acc1": step / 50, "val/acc5": step / 40})
    run = _merge([_part("xyz", 0, rows, best=max(r.get("val/acc1", 0) for r in rows))])
    output = plot_run(run, tmp_path / "curves.png")
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 30_000
    summary = run_summary(run)
    assert summary["best_val_acc1"] == pytest.approx(39 / 50)  # validation at steps 7, 15, ..., 39
    assert summary["median_step_time_ms"] == 320.0 and summary["images_seen"] == 1280
    assert summary["peak_host_memory_gb"] == 1.5


def test_plot_command_names_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from shufflenet_pl.tracking.plot import plot_main

    with pytest.raises(SystemExit) as exit_info:
        plot_main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path)])
    assert "no W&B run (run-*.wandb) or metrics.csv" in capsys.readouterr().err


# --- dashboards ------------------------------------------------------------------------------


def test_workspace_puts_accuracy_next_to_throughput_against_images_seen(
    no_wandb_env: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from shufflenet_pl.tracking.dashboard import LAYOUT, build_report, build_workspace, dashboard_main, workspace_spec

    workspace = build_workspace("my-team", "shufflenet-pl")
    first = workspace.sections[0]
    assert first.is_open and first.name == "Accuracy and throughput"
    assert first.panels[0].y == ["val/acc1", "val/acc5"] and first.panels[1].y == ["perf/images_per_sec"]
    assert first.panels[0].x == first.panels[1].x == "trainer/images_seen"
    spec = workspace_spec(workspace)
    panels = [p for s in spec["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]]
    assert len(panels) == sum(len(v) for v in LAYOUT.values())
    line = panels[0]
    assert line["viewType"] == "Run History Line Plot"
    assert line["config"]["xAxis"] == "trainer/images_seen" and line["config"]["metrics"] == ["val/acc1", "val/acc5"]
    # Every charted key is one that the module or the throughput callback logs.
    from shufflenet_pl.tracking import metrics as keys

    logged = {value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)}
    assert {y for specs in LAYOUT.values() for s in specs for y in [*s.y, s.x]} <= logged
    build_report("my-team", "shufflenet-pl")._to_model()  # builds offline
    # Without credentials the command builds and writes the spec, and saves nothing.
    dashboard_main(["--entity", "my-team", "--spec", str(tmp_path / "ws.json")])
    out = capsys.readouterr()
    assert "nothing saved" in out.err and "3 sections, 15 panels" in out.out
    assert json.loads((tmp_path / "ws.json").read_text())["entity"] == "my-team"


# --- real offline runs -------------------------------------------------------------------------


@pytest.mark.slow
def test_reader_reads_a_large_offline_run_and_a_truncated_one(tmp_path: Path, cli_env: dict) -> None:
    """3000 rows and a 50 kB config string (records spanning 32 KiB blocks), written by wandb
    itself offline; then the same file cut mid-record, as a live or killed run leaves it."""
    from shufflenet_pl.tracking.reader import load_run, read_run_files

    script = (
        "import wandb\n"
        f"run = wandb.init(project='p', dir={str(tmp_path)!r}, mode='offline', config={{'blob': 'x' * 50000}},"
        " settings=wandb.Settings(silent=True))\n"
        "run.define_metric('val/acc1', summary='max')\n"
        "for i in range(3000):\n"
        "    run.log({'trainer/global_step': i, 'train/loss': 1 / (i + 1), 'val/acc1': (i % 7) / 10})\n"
        "run.finish()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=offline_env(cli_env, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = load_run(tmp_path)
    assert len(run.history) == 3000 and run.parts[0].exit_code == 0
    assert [row["trainer/global_step"] for row in run.history] == list(range(3000))
    assert run.history[9]["train/loss"] == pytest.approx(0.1)
    assert run.best("val/acc1") == pytest.approx(0.6) and run.config["blob"] == "x" * 50000
    (wandb_file,) = run.parts[0].path.glob("run-*.wandb")
    cut = tmp_path / "cut" / "offline-run-20260101_000000-cut"
    cut.mkdir(parents=True)
    data = wandb_file.read_bytes()
    (cut / "run-cut.wandb").write_bytes(data[: int(len(data) * 0.6) + 3])
    partial = read_run_files(cut)
    assert 0 < len(partial.history) < 3000 and partial.exit_code is None
    assert partial.history == run.history[: len(partial.history)]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run-bad.wandb").write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        read_run_files(tmp_path / "bad")


def _fit_args(demo_root: Path, out: Path) -> List[str]:
    return [
        "fit",
        "--config",
        DEMO,
        "--data",
        "shufflenet_pl.data.ImageFolderDataModule",
        "--data.init_args.root",
        str(demo_root),
        "--data.init_args.demo",
        "false",
        "--data.init_args.batch_size",
        "16",
        "--data.init_args.train_res",
        "64",
        "--data.init_args.val_res",
        "64",
        "--data.init_args.num_workers",
        "1",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--seed_everything",
        "0",
    ]


@pytest.mark.slow
def test_fit_logs_offline_by_default_and_validate_reproduces_the_accuracy(
    demo_root: Path, cli_env: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """No API key, no WANDB_MODE, stdin not a terminal: ``fit`` with the demo config runs offline,
    and its ``.wandb`` file holds the config, the commit, accuracy equal to what ``validate`` of the
    checkpoint gives, and throughput consistent with the step time."""
    from shufflenet_pl.tracking.plot import plot_main
    from shufflenet_pl.tracking.reader import find_run_files, load_run, read_run_files

    env, out = offline_env(cli_env, tmp_path), tmp_path / "out"
    fit = _cli(_fit_args(demo_root, out), cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = load_run(out)
    assert f"W&B is offline (no W&B API key in WANDB_API_KEY or ~/.netrc): run {run.run_id}" in fit.stderr
    assert f"wandb sync {run.parts[0].path.resolve()}" in fit.stderr
    assert len(run.parts) == 1 and run.parts[0].job_type == "fit"
    logged = {key for row in run.history for key in row}
    assert {
        "train/loss",
        "train/lr",
        "val/loss",
        "val/acc1",
        "val/acc5",
        "epoch",
        "trainer/global_step",
        "trainer/images_seen",
        "perf/images_per_sec",
        "perf/images_per_sec_per_device",
        "perf/step_time_ms",
        "perf/data_wait_share",
        "perf/peak_host_memory_gb",
    } <= logged

    # Accuracy: one validation per epoch, in [0, 1]; the summary keeps the best.
    val_rows = [row for row in run.history if "val/acc1" in row]
    assert len(val_rows) == 2
    assert all(0 <= row["val/acc1"] <= row["val/acc5"] <= 1 for row in val_rows)
    assert run.summary["val/acc1"] == {"max": pytest.approx(max(row["val/acc1"] for row in val_rows))}
    assert run.parts[0].metric_definitions["val/acc1"]["step_metric"] == "trainer/images_seen"
    # Images seen: 4 steps x 16 per epoch; validation rows got it from W&B's step_sync.
    assert [row["trainer/images_seen"] for row in val_rows] == [64, 128]

    # Throughput: positive, and images/s = batch / step time.
    perf_rows = [row for row in run.history if "perf/step_time_ms" in row]
    assert [row["trainer/images_seen"] for row in perf_rows] == [32, 64, 96, 128]
    for row in perf_rows:
        assert row["perf/images_per_sec"] > 0 and 0 <= row["perf/data_wait_share"] <= 1
        assert row["perf/images_per_sec"] == pytest.approx(16_000 / row["perf/step_time_ms"], rel=1e-6)

    # Config: the resolved CLI config, the processes used, the commit, the module's hyperparameters.
    assert run.config["config"]["trainer"]["max_epochs"] == 2
    assert run.config["config"]["data"]["init_args"]["batch_size"] == 16
    assert run.config["runtime"]["world_size"] == 1 and run.config["lr"] == 0.2
    if HAS_GIT:
        assert re.fullmatch(r"[0-9a-f]{40}", run.config["git"]["commit"])
    run_dir = out / "shufflenet-pl" / run.run_id
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()

    # The best checkpoint, validated again, gives the accuracy that the run's summary calls best.
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    validate = _cli(
        ["validate", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(best)], cwd=tmp_path, env=env
    )
    assert validate.returncode == 0, validate.stderr[-3000:]
    (checked,) = [read_run_files(p) for p in find_run_files(out) if read_run_files(p).run_id != run.run_id]
    assert checked.job_type == "validate"  # a run of its own, with a fresh id
    (val_acc1,) = [row["val/acc1"] for row in checked.history if "val/acc1" in row]
    assert val_acc1 == pytest.approx(run.summary["val/acc1"]["max"], abs=1e-6)

    assert load_run(out).run_id == run.run_id  # by default the newest run that trained, not validate's
    plot_main([str(out), "-o", str(tmp_path / "curves.png")])
    printed = capsys.readouterr().out
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert float(re.search(r"best_val_acc1\s+(\S+)", printed).group(1)) == pytest.approx(
        max(row["val/acc1"] for row in val_rows), abs=1e-4
    )


@pytest.mark.slow
def test_requeued_job_is_one_run(cli_env: dict, tmp_path: Path) -> None:
    """A job as ``launch.py`` starts it, then its requeue resuming from ``last.ckpt``: one run id,
    two offline folders that ``wandb sync`` uploads in order, images seen continuing across."""
    from shufflenet_pl.tracking.reader import load_run

    job = tmp_path / "job"
    job.mkdir()
    launch = {
        "nodes": 1,
        "gpus": 0,
        "partition": "debug",
        "account": "vision",
        "job_id": "42",
        "array_index": None,
        "command": ["shufflenet-pl", "fit"],
    }
    (job / "launch.json").write_text(json.dumps(launch))
    env = offline_env(cli_env, tmp_path)
    env.update(
        {
            "WANDB_RUN_ID": "job42run",
            "WANDB_RESUME": "allow",
            "WANDB_DIR": str(job),
            "SHUFFLENET_PL_JOB_DIR": str(job),
            "SLURM_JOB_ID": "42",
            "SLURM_JOB_PARTITION": "debug",
            "SLURM_RESTART_COUNT": "0",
        }
    )
    args = [
        "fit",
        "--config",
        DEMO,
        "--model.model",
        "bench.test_throughput_monitor.SleepyNet",
        "--model.model.seconds_per_step",
        "0",
        "--data",
        "bench.test_throughput_monitor.SleepyDataModule",
        "--data.batch_size",
        "16",
        "--data.train_batches",
        "6",
        "--data.seconds_per_image",
        "0",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]
    first = _cli([*args, "--trainer.max_epochs", "1"], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = job / "shufflenet-pl" / "job42run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    env["SLURM_RESTART_COUNT"] = "1"
    second = _cli([*args, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint)], cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]

    folders = sorted((job / "wandb").glob("offline-run-*-job42run"))
    assert len(folders) == 2
    run = load_run(job)
    assert run.run_id == "job42run" and len(run.parts) == 2
    train_steps = [row["trainer/global_step"] for row in run.history if "train/loss" in row]
    assert train_steps == [1, 3, 5, 7, 9, 11]  # no step twice, none missing
    images = [row["trainer/images_seen"] for row in run.history if "perf/step_time_ms" in row]
    assert images == [32, 64, 96, 128, 160, 192]  # restored from the checkpoint, not restarted
    assert run.parts[0].config["slurm"]["restart_count"] == "0" and run.config["slurm"]["restart_count"] == "1"
    assert run.config["launch"] == {"job_dir": str(job), **launch} and run.config["slurm"]["job_id"] == "42"
    assert run.config["config"]["trainer"]["max_epochs"] == 2
    dry_run = subprocess.run(
        [WANDB_CLI, "sync", "--dry-run", str(job / "wandb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    listed = dry_run.stdout + dry_run.stderr
    assert "Would sync 2 run(s)" in listed, listed
    files = {os.path.realpath(line.split()[-1]) for line in listed.splitlines() if line.endswith(".wandb")}
    assert files == {os.path.realpath(folder / "run-job42run.wandb") for folder in folders}, listed
