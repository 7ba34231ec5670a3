"""The cluster layer without a cluster: resources, presets, sweeps, the job's config, the preemption
checkpoint on a real (single-process) Trainer. The real SLURM tests are in test_cluster_slurm.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

from cluster.job import TrainingJob
from cluster.resources import Resources, _gpus_of, list_presets, load_preset, parse_time
from cluster.args import label, parse_args, parse_sweeps, sweep_args
from cluster.config import DEFAULT_SEED, apply_job_settings
from cluster.errors import LaunchError


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),
        ("1:30", 2),
        ("02:00:00", 120),
        ("1-0", 1440),
        ("1-12:30", 2190),
        ("2-00:00:30", 2881),
    ],
)
def test_parse_time_understands_slurm_formats(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1h", "0", "1:2:3:4"])
def test_parse_time_refuses_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="--time"):
        parse_time(text)


def test_resources_check_the_types_a_preset_gives() -> None:
    with pytest.raises(ValueError, match="--nodes must be an integer, got '2'"):
        Resources(nodes="2")
    with pytest.raises(ValueError, match="--cpu must be true or false"):
        Resources(cpu="yes")
    with pytest.raises(ValueError, match="--setup must be a list of shell lines"):
        Resources(setup="module load cuda")


def test_resources_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="--nodes must be >= 1"):
        Resources(nodes=0)
    with pytest.raises(ValueError, match="--gpus must be >= 1"):
        Resources(gpus=0)
    with pytest.raises(ValueError, match="--job-name"):
        Resources(job_name="a b")


def test_trainer_settings_follow_the_allocation() -> None:
    """num_nodes/devices come from --nodes/--gpus; SLURM jobs get Lightning's SLURM environment
    with its own requeue off (submitit owns requeue)."""
    slurm = Resources(nodes=4, gpus=8).trainer_settings("slurm")
    assert (slurm["num_nodes"], slurm["devices"], slurm["accelerator"], slurm["strategy"]) == (4, 8, "gpu", "ddp")
    assert slurm["plugins"] == [
        {"class_path": "lightning.pytorch.plugins.environments.SLURMEnvironment", "init_args": {"auto_requeue": False}}
    ]
    local = Resources(gpus=2, cpu=True).trainer_settings("local")
    assert (local["accelerator"], local["strategy"]) == ("cpu", "ddp")
    assert local["plugins"][0]["class_path"].endswith("LightningEnvironment")
    single = Resources(cpu=True).trainer_settings("local")
    assert single["strategy"] == "auto" and "plugins" not in single


def test_slurm_parameters_ask_for_one_task_per_gpu() -> None:
    params = Resources(
        nodes=4,
        gpus=8,
        gpu_type="a100",
        cpus_per_task=10,
        partition="gpu",
        account="lab",
        time="2-00:00:00",
        exclusive=True,
        mail="me@lab.org",
    ).slurm_parameters(60)
    assert params["nodes"] == 4 and params["ntasks_per_node"] == 8 and params["gpus_per_node"] == "a100:8"
    assert params["time"] == 2880 and params["cpus_per_task"] == 10 and params["exclusive"] is True
    assert params["mail_user"] == "me@lab.org" and params["mail_type"] == "END,FAIL"
    cpu = Resources(nodes=2, gpus=1, cpu=True).slurm_parameters(60)
    assert "gpus_per_node" not in cpu and cpu["time"] == 60


def test_submitit_renders_the_sbatch_script() -> None:
    """The parameters are valid for submitit's sbatch writer (it checks them on update), and the dry
    run's adapter over submitit's private script writer still gives the script submitit submits."""
    import submitit

    from cluster.sbatch_script import sbatch_script

    executor = submitit.SlurmExecutor(folder="/tmp/x/logs")
    executor.update_parameters(**Resources(nodes=4, gpus=8, gpu_type="a100", signal_delay=90).slurm_parameters(60))
    script = sbatch_script(executor)
    assert script.startswith("#!/bin/bash") and "-m submitit.core._submit /tmp/x/logs" in script
    for line in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=a100:8", "--signal=USR2@90", "--time=60"):
        assert line in script, line


@pytest.mark.parametrize(
    "gres, kind, gpus",
    [
        ("gpu:a100:8(S:0-1)", None, 8),
        ("gpu:8", None, 8),
        ("gpu:a100:4,gpu:v100:2", "v100", 2),
        ("(null)", None, 0),
    ],
)
def test_gres_column(gres: str, kind: str, gpus: int) -> None:
    assert _gpus_of(gres, kind) == gpus


def test_every_preset_builds_resources() -> None:
    names = list_presets()
    assert "local-slurm" in names
    for name in names:
        values = load_preset(name)
        values.pop("cluster", None)
        Resources(**values)


def test_preset_with_unknown_key_names_the_file_and_key(tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text("partition: gpu\ngpu_per_node: 8\n")
    with pytest.raises(ValueError, match=r"mine.yaml: unknown key\(s\) gpu_per_node"):
        load_preset(str(preset))
    with pytest.raises(ValueError, match="no file"):
        load_preset("no-such-preset")


def test_command_line_beats_preset_and_the_rest_goes_to_the_cli() -> None:
    args, resources, training = parse_args(
        [
            "--preset",
            "local-slurm",
            "--nodes",
            "2",
            "--cpus-per-task",
            "2",
            "--config",
            "a.yaml",
            "--trainer.max_epochs",
            "3",
        ]
    )
    assert args.cluster == "slurm" and resources.partition == "debug" and resources.cpu
    assert resources.nodes == 2 and resources.cpus_per_task == 2
    assert training == ["--config", "a.yaml", "--trainer.max_epochs", "3"]


@pytest.mark.parametrize("flag", ["--trainer.devices", "--trainer.num_nodes=2", "--trainer.strategy"])
def test_trainer_size_flags_are_refused(flag: str) -> None:
    with pytest.raises(LaunchError, match="set by the launcher from --nodes/--gpus"):
        parse_args([flag, "2"] if "=" not in flag else [flag])


def test_sweep_grid() -> None:
    grid = parse_sweeps(["model.lr=0.1,0.2", "config=configs/model/x0_5.yaml,configs/model/x1_0.yaml"])
    assert len(grid) == 4
    assert sweep_args(grid[1]) == ["--model.lr", "0.1", "--config", "configs/model/x1_0.yaml"]
    assert label(grid[1]) == "lr=0.1-x1_0"
    assert parse_sweeps([]) == [[]]
    with pytest.raises(LaunchError, match="KEY=V1,V2"):
        parse_sweeps(["model.lr"])


def _resolved() -> dict:
    return {
        "seed_everything": True,
        "trainer": {
            "devices": 1,
            "accelerator": "auto",
            "logger": {"class_path": "x.WandbLogger", "init_args": {"save_dir": None}},
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": None, "save_last": None, "monitor": "val/acc1"},
                }
            ],
        },
    }


def test_job_config_puts_outputs_in_the_job_folder(tmp_path: Path) -> None:
    config = apply_job_settings(_resolved(), Resources(nodes=2, gpus=4), "slurm", tmp_path)
    trainer = config["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["default_root_dir"]) == (2, 4, str(tmp_path))
    checkpoint, timed, preemption = trainer["callbacks"]
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "checkpoints")
    assert timed["class_path"] == "shufflenet_pl.callbacks.TimedCheckpoint"
    assert timed["init_args"] == {"dirpath": str(tmp_path / "checkpoints")}  # the callback's adaptive default
    assert checkpoint["init_args"]["save_last"] is True and checkpoint["init_args"]["enable_version_counter"] is False
    assert preemption["class_path"] == "shufflenet_pl.callbacks.PreemptionCheckpoint"
    assert trainer["logger"]["init_args"]["save_dir"] == str(tmp_path)
    assert config["seed_everything"] == DEFAULT_SEED  # every rank, restart and run of the command: the same seed


def test_job_config_adds_a_checkpoint_callback_when_none(tmp_path: Path) -> None:
    config = apply_job_settings(
        {"seed_everything": 7, "trainer": {"callbacks": None}}, Resources(cpu=True), "local", tmp_path
    )
    classes = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert classes == [
        "shufflenet_pl.callbacks.VerifiedModelCheckpoint",
        "shufflenet_pl.callbacks.TimedCheckpoint",
        "shufflenet_pl.callbacks.PreemptionCheckpoint",
    ]
    assert config["seed_everything"] == 7


def test_resume_skips_a_torn_last_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    job = TrainingJob(str(tmp_path), "abc", "local")
    assert job.resume_checkpoint() is None
    torch.save({"x": 1}, tmp_path / "checkpoints" / "best-epoch=001.ckpt")
    data = (tmp_path / "checkpoints" / "best-epoch=001.ckpt").read_bytes()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])  # killed mid-write
    assert job.resume_checkpoint() == tmp_path / "checkpoints" / "best-epoch=001.ckpt"
    torch.save({"x": 2}, tmp_path / "checkpoints" / "last.ckpt")
    assert job.resume_checkpoint() == tmp_path / "checkpoints" / "last.ckpt"


def test_launcher_names_a_missing_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--cluster", "local", "--config", "nope.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--config nope.yaml: no such file" in result.stderr


def test_local_executor_refuses_several_nodes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--cluster", "local", "--nodes", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--nodes 2: the local executor runs on this machine only" in result.stderr


# --- the preemption checkpoint on a real Trainer ------------------------------------------------


class _SignalAtStep:
    """Sends this process the preemption signal while global step ``step`` is running."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR2)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads can make a step 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_fit(tmp_path: Path, callbacks: list, ckpt_path=None, extra: list = ()):
    import lightning as L
    from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from shufflenet_pl.callbacks import PreemptionCheckpoint
    from shufflenet_pl.models import shufflenet_v2_x0_5
    from shufflenet_pl.module import ImageClassifier

    L.seed_everything(0)
    data = TensorDataset(torch.randn(32, 3, 32, 32), torch.arange(32) % 4)
    model = ImageClassifier(shufflenet_v2_x0_5(num_classes=4), lr=0.05, schedule="linear")
    hooks = [LambdaCallback(on_train_batch_start=c) for c in callbacks]
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[
            ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, enable_version_counter=False),
            PreemptionCheckpoint(),
            *extra,
            *hooks,
        ],
    )
    trainer.fit(model, DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
    return trainer, model


def test_preemption_signal_saves_last_ckpt_at_a_batch_boundary(tmp_path: Path, one_thread: None) -> None:
    """USR2 during step 2 of 8: last.ckpt holds global step 3 (the step in flight completes), fit
    stops with Preempted, and resuming from it ends at the same 8 steps as an uninterrupted fit."""
    from cluster.requeue import PREEMPTION
    from shufflenet_pl.callbacks import Preempted

    before = signal.getsignal(signal.SIGUSR2)
    PREEMPTION.install()
    try:
        with pytest.raises(Preempted) as stop:
            _tiny_fit(tmp_path, [_SignalAtStep(2)])
    finally:
        PREEMPTION.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert stop.value.checkpoint == last and stop.value.global_step == 3
    saved = torch.load(last, weights_only=False, map_location="cpu")
    assert saved["global_step"] == 3 and saved["epoch"] == 0
    assert saved["lr_schedulers"][0]["last_epoch"] == 3  # the LR schedule is at the same step
    assert not (tmp_path / "checkpoints" / "last.ckpt.tmp").exists()

    resumed, _ = _tiny_fit(tmp_path, [], ckpt_path=str(last))
    assert resumed.global_step == 8
    assert resumed.lr_scheduler_configs[0].scheduler.last_epoch == 8


def test_unreachable_slurm_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # no sbatch here
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--cluster", "slurm"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "SLURM is not reachable" in result.stderr and "--cluster local" in result.stderr


def test_job_config_keeps_a_timed_checkpoint_of_the_trainer_config(tmp_path: Path) -> None:
    timed = {"class_path": "shufflenet_pl.callbacks.TimedCheckpoint", "init_args": {"every_minutes": 30}}
    config = apply_job_settings({"trainer": {"callbacks": [timed]}}, Resources(cpu=True), "local", tmp_path)
    (entry,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("TimedCheckpoint")]
    assert entry["init_args"] == {"every_minutes": 30, "dirpath": str(tmp_path / "checkpoints")}


# --- launcher checks before anything is made ---------------------------------------------------


def _launch_here(args: list, cwd: Path, env: dict = None) -> subprocess.CompletedProcess:
    # Generous bound: resolving a config imports Lightning, slow on a loaded machine.
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_batch_that_does_not_divide_is_refused_before_spawning(tmp_path: Path) -> None:
    result = _launch_here(
        ["--cluster", "local", "--cpu", "--gpus", "3", "--jobs-dir", "jobs", "--data.init_args.batch_size", "16"],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "launch.py: error: data.batch_size=16 (global) does not divide over 3 processes "
        "(1 node(s) x 3 device(s)); use a multiple of 3, e.g. 15"
    )
    assert not (tmp_path / "jobs").exists()


def test_one_batch_check_serves_the_datamodules_the_cli_and_the_launcher() -> None:
    from shufflenet_pl.data.common import per_device_batch_size
    from shufflenet_pl.errors import InputError

    from cluster.config import check_batch

    assert per_device_batch_size(96, 32, 4) == 3
    with pytest.raises(InputError) as plain:
        per_device_batch_size(100, 8)
    assert (
        str(plain.value)
        == "data.batch_size=100 (global) does not divide over 8 processes; use a multiple of 8, e.g. 96"
    )
    with pytest.raises(InputError, match=r"over 8 processes \(2 node\(s\) x 4 device\(s\)\); use a multiple of 8"):
        per_device_batch_size(100, 8, 2)
    with pytest.raises(InputError, match=r"over 8 processes \(2 node\(s\) x 4 device\(s\)\)"):
        check_batch({"data": {"init_args": {"batch_size": 100}}}, Resources(nodes=2, gpus=4))
    check_batch({"data": {"init_args": {"batch_size": 64}}}, Resources(nodes=2, gpus=4))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("trainer:\n  max_epochs: [1\n", "bad.yaml:3:1: not valid YAML"),
        ("trainer:\n  max_epochz: 1\n", "does not accept option 'max_epochz'"),
        ("trainer:\n  max_epochs: many\n", "max_epochs"),
    ],
)
def test_config_that_does_not_parse_leaves_no_job_folder(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    result = _launch_here(["--cluster", "local", "--cpu", "--jobs-dir", "jobs", "--config", "bad.yaml"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr and "<unicode string>" not in result.stderr
    assert not (tmp_path / "jobs").exists()


def test_dry_run_of_several_nodes_needs_no_slurm(tmp_path: Path) -> None:
    """The README's 32-GPU plan prints its sbatch script where SLURM is not installed, quickly, and
    warns that the demo's global batch leaves one image per GPU."""
    import time

    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # no sbatch, no sinfo
    started = time.monotonic()
    result = _launch_here(["--nodes", "4", "--gpus", "8", "--dry-run", "--jobs-dir", "jobs"], tmp_path, env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "#SBATCH --nodes=4" in result.stdout and "#SBATCH --gpus-per-node=8" in result.stdout
    assert "over 32 processes is 1 image(s) per process" in result.stdout
    assert "cpus-per-task: not set" in result.stdout
    assert not (tmp_path / "jobs").exists()
    assert elapsed < 120  # a config resolve; no waiting on an unreachable controller


def test_cpus_per_task_defaults_to_the_nodes_share() -> None:
    from cluster.submit import choose_cpus_per_task

    assert choose_cpus_per_task(Resources(gpus=8), 96).cpus_per_task == 12
    assert choose_cpus_per_task(Resources(gpus=8, cpus_per_task=4), 96).cpus_per_task == 4
    assert choose_cpus_per_task(Resources(gpus=8), None).cpus_per_task is None


def test_loader_workers_follow_slurm_cpus_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from shufflenet_pl.data.common import default_num_workers

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")
    assert default_num_workers() == 11  # one CPU for the main process
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")
    assert default_num_workers() == 63  # no cap: a 64-core node's loader uses its cores
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert default_num_workers() == 1


def test_usable_cpus_follow_the_affinity_outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    from shufflenet_pl.data.common import usable_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cpus() == len(allowed)


def test_resume_refuses_a_folder_that_is_no_job(tmp_path: Path) -> None:
    result = _launch_here(["--resume", str(tmp_path)], tmp_path)
    assert result.returncode == 2
    assert f"--resume {tmp_path}: not a job folder" in result.stderr


def test_lost_peer_errors_are_told_from_other_errors() -> None:
    from cluster.job import _is_lost_peer

    assert _is_lost_peer(
        RuntimeError(
            "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:4242: Connection reset by peer"
        )
    )
    assert not _is_lost_peer(RuntimeError("shufflenet-pl fit stopped with exit status 2"))
    assert not _is_lost_peer(ValueError("data.batch_size=16 (global) does not divide"))


def test_failure_report_names_the_killed_rank_first(tmp_path: Path) -> None:
    """srun's own line names the rank that was killed; the survivor's 'Connection reset by peer' is second."""
    from types import SimpleNamespace

    from submitit.core.utils import cloudpickle_dump

    from cluster.follow import raise_if_failed

    def paths(rank: int) -> SimpleNamespace:
        return SimpleNamespace(
            result_pickle=tmp_path / f"7_{rank}_result.pkl",
            stderr=tmp_path / f"7_{rank}_log.err",
            stdout=tmp_path / f"7_{rank}_log.out",
        )

    (tmp_path / "7_0_log.err").write_text(
        "Traceback ...\nRuntimeError: Connection reset by peer\nsrun: error: node2: task 1: Killed\n"
    )
    (tmp_path / "7_1_log.err").write_text("step 5\n")
    cloudpickle_dump(("error", "Traceback...\nRuntimeError: Connection reset by peer"), paths(0).result_pickle)
    job = SimpleNamespace(job_id="7", num_tasks=2, paths=paths(0), task=lambda rank: SimpleNamespace(paths=paths(rank)))
    with pytest.raises(LaunchError) as failure:
        raise_if_failed(job)
    assert str(failure.value).startswith("job 7 failed; rank 1: killed by SIGKILL on node2\n")
    assert "failing ranks: 1, 0;" in str(failure.value)


def test_sigterm_saves_last_ckpt_and_stops_without_requeue(tmp_path: Path, one_thread: None) -> None:
    """SIGTERM (scancel) during step 2: last.ckpt of step 3 as for USR2, but no requeue asked for."""
    from cluster.requeue import PREEMPTION
    from shufflenet_pl.callbacks import Preempted

    class _TermAtStep(_SignalAtStep):
        def __call__(self, trainer, *args) -> None:
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    PREEMPTION.install()
    try:
        with pytest.raises(Preempted) as stop:
            _tiny_fit(tmp_path, [_TermAtStep(2)])
        assert not PREEMPTION.requeue_requested
    finally:
        PREEMPTION.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before
    assert stop.value.global_step == 3
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["global_step"] == 3
    )


def test_timed_checkpoint_saves_mid_epoch_and_resumes_exactly(tmp_path: Path, one_thread: None) -> None:
    """With a tiny interval last.ckpt follows every step (atomically) with the optimizer and schedule
    state: a fit resumed from the step-5 checkpoint does the remaining 3 steps. (The loader position
    is the datamodules' part, checked on SLURM in test_cluster_slurm.py.)"""
    from shufflenet_pl.callbacks import TimedCheckpoint

    seen = []

    def record(trainer, *args) -> None:
        last = tmp_path / "a" / "checkpoints" / "last.ckpt"
        if last.exists():
            seen.append(torch.load(last, weights_only=False, map_location="cpu")["global_step"])
        if trainer.global_step == 5:
            (tmp_path / "a" / "checkpoints" / "last.ckpt").rename(tmp_path / "step5.ckpt")

    timed = TimedCheckpoint(every_minutes=1e-9)
    _tiny_fit(tmp_path / "a", [record], extra=[timed])
    assert seen[:4] == [1, 2, 3, 4] and not list((tmp_path / "a" / "checkpoints").glob("*.tmp"))
    saved = torch.load(tmp_path / "step5.ckpt", weights_only=False, map_location="cpu")
    assert saved["global_step"] == 5 and saved["lr_schedulers"][0]["last_epoch"] == 5
    resumed, _ = _tiny_fit(tmp_path / "c", [], ckpt_path=str(tmp_path / "step5.ckpt"))
    assert resumed.global_step == 8 and resumed.lr_scheduler_configs[0].scheduler.last_epoch == 8


def test_loader_workers_outlive_a_sigterm(demo_root: Path) -> None:
    """SLURM sends SIGTERM to every process of a job: the loader's worker processes keep serving the
    batches the main process needs until it has saved its checkpoint."""
    from torch.utils.data import DataLoader
    from torchvision import datasets

    from shufflenet_pl.data.common import ignore_sigterm

    loader = DataLoader(
        datasets.ImageFolder(str(demo_root / "train"), transform=lambda image: 0),
        batch_size=4,
        num_workers=1,
        worker_init_fn=ignore_sigterm,
    )
    batches = iter(loader)
    next(batches)
    (worker,) = [w.pid for w in batches._workers]
    os.kill(worker, signal.SIGTERM)
    assert sum(1 for _ in batches) == len(loader) - 1  # no "worker killed by signal: Terminated"


def test_a_job_pickled_before_max_failures_existed_still_has_it() -> None:
    import pickle

    job = TrainingJob("/tmp/job", "run-id", "slurm", max_failures=5)
    assert pickle.loads(pickle.dumps(job)).max_failures == 5
    del job.__dict__["max_failures"]  # what an earlier version pickled
    assert pickle.loads(pickle.dumps(job)).max_failures == 3


def test_follower_leaves_the_noise_of_a_stop_in_the_logs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """From a stop (a signal, a lost peer) to the job's next start, and srun's own lines always: in the
    log, not in the launcher's output."""
    from cluster.follow import _LogFollower

    log = tmp_path / "7_0_log.err"
    log.write_text(
        "[shufflenet-pl] job 7: rank 0/2 (node 0/1, local rank 0) on node1: starting from the beginning\n"
        "Epoch 0: loss 2.3\n"
        "[shufflenet-pl] got signal SIGUSR2: saving last.ckpt at the next batch end\n"
        "Traceback (most recent call last):\nConnectionResetError: [Errno 104] Connection reset by peer\n"
        "srun: error: node1: task 0: Exited with exit code 255\n"
        "[shufflenet-pl] job 7: rank 0/2 (node 0/1, local rank 0) on node1, restart 1: resuming from last.ckpt\n"
        "srun: error: node1: task 1: Killed\n"
        "Epoch 1: loss 2.1"
    )
    follower = _LogFollower([tmp_path / "7_0_log.out", log])
    follower.poll()
    shown = capsys.readouterr().err
    assert "Epoch 1" not in shown  # a line is printed once it is complete
    follower.poll(final=True)
    follower.poll()
    shown += capsys.readouterr().err
    assert "Epoch 0: loss 2.3\n" in shown and shown.endswith("restart 1: resuming from last.ckpt\nEpoch 1: loss 2.1\n")
    for noise in ("got signal", "Traceback", "ConnectionResetError", "srun:"):
        assert noise not in shown, noise


def test_the_lost_rank_is_the_one_killed_not_those_slurm_stopped_then() -> None:
    from cluster.follow import _lost_rank, _srun_entries

    srun = {}
    for line in ("srun: error: node1: task 1: Terminated", "srun: error: node2: tasks 0,2-3: Killed"):
        for rank, how, host in _srun_entries(line):
            srun[rank] = (how, host)
    assert _lost_rank(srun) == (0, "killed by SIGKILL", "node2")
    assert _lost_rank({1: ("killed by SIGTERM", "node1")}) is None  # SLURM's own stop names no one
