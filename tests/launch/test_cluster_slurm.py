"""``launch.py`` on a real SLURM cluster (cluster/local/start.sh: munged, slurmctld and two slurmd on
this host) and on the local executor: 2-process DDP (gloo) jobs, requeues after every kind of fault
that resume exactly, what the launcher tells of each fault, and the same result from both executors.
Slow: they train for real (~7 min on 2 cores)."""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

EPOCHS = 3
GLOBAL_BATCH = 16


def _free_port_block(size: int) -> int:
    """A base port with ``size`` consecutive free ports (slurmctld, then one per slurmd)."""
    for base in range(23000, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


def _cluster(tmp_path_factory: pytest.TempPathFactory, *options: str) -> Iterator[Dict[str, str]]:
    """A 2-node SLURM cluster started by the project's own script with ``options``; stopped (by PID)
    afterwards, also when a test fails. Yields the environment in which its clients work, with the
    state folder as ``LOCAL_SLURM_DIR``."""
    if shutil.which("slurmctld") is None and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it needs root (bash setup.sh --dev installs it)")
    state = tmp_path_factory.mktemp("slurm")
    port = _free_port_block(3)
    start = subprocess.run(
        [
            "bash",
            str(REPO / "cluster/local/start.sh"),
            "--dir",
            str(state),
            "--nodes",
            "2",
            "--cpus",
            "2",
            "--port",
            str(port),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert {p.stem for p in (state / "run").glob("*.pid")} == {
            "munged",
            "slurmctld",
            "slurmd-node1",
            "slurmd-node2",
        }
        env = dict(os.environ)
        env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        env["PATH"] = f"{state / 'bin'}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["WANDB_MODE"] = "offline"
        env["WANDB_SILENT"] = "true"
        env["LOCAL_SLURM_DIR"] = str(state)
        yield env
    finally:
        daemons = {p.stem: int(p.read_text()) for p in (state / "run").glob("*.pid")}
        subprocess.run(["bash", str(REPO / "cluster/local/stop.sh"), "--dir", str(state)], timeout=300)
        still_running = [name for name, pid in daemons.items() if _running(pid)]
        assert not still_running, f"stop.sh left {still_running} running"


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """The cluster of most tests: SLURM's own SlurmdTimeout, so that a busy host never loses a node."""
    yield from _cluster(tmp_path_factory)


#: Seconds without an answer from a node's slurmd before SLURM marks the node DOWN, on the cluster of
#: the lost-node test.
SLURMD_TIMEOUT = 10


@pytest.fixture(scope="module")
def lossy_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """A cluster of its own that notices a dead node within seconds (a short SlurmdTimeout)."""
    yield from _cluster(tmp_path_factory, "--slurmd-timeout", str(SLURMD_TIMEOUT))


def _running(pid: int) -> bool:
    """A process that exists and is not a zombie (a stopped daemon can linger as one briefly)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture(scope="module")
def train_config(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run: ShuffleNet V2 0.5x on the 200 + 60 demo JPEGs at 64 px, 12 steps per epoch on 2
    processes, validation every epoch, W&B offline."""
    config = {
        "seed_everything": 0,
        "model": {
            "model": {
                "class_path": "shufflenet_pl.models.ShuffleNetV2",
                "init_args": {"stages_repeats": [4, 8, 4], "stages_out_channels": [24, 48, 96, 192, 1024]},
            },
            "lr": 0.02,
            "momentum": 0.9,
            "nesterov": True,
            "schedule": "cosine",
            "warmup_epochs": 0,
        },
        "data": {
            "class_path": "shufflenet_pl.data.ImageFolderDataModule",
            "init_args": {
                "root": str(demo_root),
                "demo": False,
                "batch_size": GLOBAL_BATCH,
                "num_workers": 0,
                "train_res": 64,
                "val_res": 64,
                "crop_scale": [0.5, 1.0],
            },
        },
        "trainer": {
            "max_epochs": EPOCHS,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "shufflenet_pl.tracking.OfflineFirstWandbLogger",
                "init_args": {"project": "shufflenet-pl-tests", "mode": "offline"},
            },
            "callbacks": [
                {
                    "class_path": "shufflenet_pl.callbacks.VerifiedModelCheckpoint",
                    "init_args": {
                        "monitor": "val/acc1",
                        "mode": "max",
                        "save_last": True,
                        "filename": "best-{epoch:03d}",
                    },
                }
            ],
        },
    }
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def ffcv_train_config(train_config: Path, demo_beton_root: Path) -> Path:
    """The same run with the FFCV datamodule on the demo set converted to .beton (the seeded
    decode stage: crops and flips keyed by seed, epoch and sample)."""
    config = yaml.safe_load(train_config.read_text())
    config["data"] = {
        "class_path": "shufflenet_pl.data.FFCVImageNetDataModule",
        "init_args": {
            "root": str(demo_beton_root),
            "demo": False,
            "batch_size": GLOBAL_BATCH,
            "num_workers": 1,
            "train_res": 64,
            "val_res": 64,
            "crop_scale": [0.5, 1.0],
        },
    }
    path = train_config.with_name("small_ffcv.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(args: List[str], env: Dict[str, str], cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _job_folder(jobs_dir: Path) -> Path:
    (folder,) = [p for p in jobs_dir.iterdir() if p.is_dir()]
    return folder


def _final_weights(folder: Path) -> Dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _train_rows(folder: Path) -> List[Tuple[str, List[Dict]]]:
    """(run id, rows with train/loss) of every W&B run folder of a job, in start order."""
    from shufflenet_pl.tracking.reader import find_run_files, read_run_files

    parts = sorted((read_run_files(p) for p in find_run_files(folder / "wandb")), key=lambda part: part.start_time)
    return [(part.run_id, [row for row in part.history if "train/loss" in row]) for part in parts]


def _losses_by_step(rows: List[Dict]) -> Dict[int, float]:
    steps = [int(row["trainer/global_step"]) for row in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {sorted(steps)}"
    return {int(row["trainer/global_step"]): row["train/loss"] for row in rows}


@pytest.fixture(scope="module")
def two_node_job(local_slurm: Dict[str, str], train_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    jobs = tmp_path_factory.mktemp("jobs-2x1")
    result = _launch(
        [
            "--preset",
            "local-slurm",
            "--nodes",
            "2",
            "--gpus",
            "1",
            "--wait",
            "--jobs-dir",
            str(jobs),
            "--job-name",
            "two-nodes",
            "--config",
            str(train_config),
        ],
        local_slurm,
        jobs,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    folder = _job_folder(jobs)
    assert "submitted job" in result.stdout and f"folder: {folder}" in result.stdout
    return folder


def _validation_args(folder: Path, processes: int, out: Path) -> List[str]:
    """``shufflenet-pl validate`` of a job's last.ckpt with ``processes`` CPU processes, logging to CSV."""
    return [
        "validate",
        "--config",
        str(folder / "config.yaml"),
        "--ckpt_path",
        str(folder / "checkpoints" / "last.ckpt"),
        "--trainer.num_nodes",
        "1",
        "--trainer.devices",
        str(processes),
        "--trainer.strategy",
        "ddp" if processes > 1 else "auto",
        "--trainer.plugins",
        "null",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(out),
        "--trainer.logger.name",
        "v",
        "--trainer.default_root_dir",
        str(out),
    ]


def _validation_metrics(out: Path) -> Dict[str, float]:
    (metrics,) = out.glob("v/version_*/metrics.csv")
    row = [r for r in csv.DictReader(metrics.open()) if r.get("val/acc1")][-1]
    return {key: float(row[key]) for key in ("val/acc1", "val/acc5", "val/loss")}


def _validate_in_one_process(folder: Path, out: Path) -> Dict[str, float]:
    from shufflenet_pl.cli import build_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_cli(_validation_args(folder, 1, out))
    finally:
        torch.set_num_threads(threads)
    return _validation_metrics(out)


def _validate_in_two_processes(folder: Path, out: Path) -> Dict[str, float]:
    """Lightning's own DDP launcher (gloo): both ranks load the same checkpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", *_validation_args(folder, 2, out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return _validation_metrics(out)


def test_slurm_job_runs_ddp_over_two_nodes(two_node_job: Path, tmp_path: Path) -> None:
    """Both ranks ran, one per node, in one world of 2; a checkpoint and the run files are in the
    job folder; validation covers the whole validation set, reduced over the ranks."""
    folder = two_node_job
    launch = json.loads((folder / "launch.json").read_text())
    assert (launch["executor"], launch["nodes"], launch["gpus_per_node"], launch["partition"]) == (
        "slurm",
        2,
        1,
        "debug",
    )
    job_id = launch["job_id"]
    for rank in (0, 1):
        log = (folder / "logs" / f"{job_id}_{rank}_log.err").read_text()
        assert f"rank {rank}/2 (node {rank}/2, local rank 0) on node{rank + 1}" in log, log[-2000:]
    result = json.loads((folder / "result.json").read_text())
    assert (result["world_size"], result["num_nodes"]) == (2, 2)
    steps_per_epoch = 200 // GLOBAL_BATCH  # 200 training images, 8 per process and step
    assert result["global_step"] == EPOCHS * steps_per_epoch
    assert (folder / "checkpoints" / "last.ckpt").is_file() and list((folder / "checkpoints").glob("best-*.ckpt"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert (config["trainer"]["num_nodes"], config["trainer"]["devices"], config["trainer"]["strategy"]) == (
        2,
        1,
        "ddp",
    )
    assert config["trainer"]["plugins"][0]["init_args"] == {"auto_requeue": False}
    runs = _train_rows(folder)
    assert [run_id for run_id, _ in runs] == [launch["wandb_run_id"]]

    # One process over all 60 validation images: what the job's ranks computed together. Exact
    # equality holds only with identical weights on every rank (second check): in the job, rank 1
    # validates with BatchNorm statistics updated by its own last training batch.
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    single = _validate_in_one_process(folder, tmp_path / "one")
    assert result["metrics"]["val/loss"] == pytest.approx(single["val/loss"], rel=0.02)
    assert _validate_in_two_processes(folder, tmp_path / "two") == pytest.approx(single, rel=1e-6, abs=1e-6)


def test_partition_refuses_gpus_it_cannot_give(local_slurm: Dict[str, str], train_config: Path, tmp_path: Path) -> None:
    result = _launch(
        [
            "--cluster",
            "slurm",
            "--nodes",
            "1",
            "--gpus",
            "2",
            "--jobs-dir",
            str(tmp_path),
            "--config",
            str(train_config),
        ],
        local_slurm,
        tmp_path,
    )
    assert result.returncode == 2
    assert "--gpus 2: partition 'debug' has 0 node(s) with 2 GPUs or more" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing submitted, no folder made


def test_dry_run_prints_the_array_script(local_slurm: Dict[str, str], train_config: Path, tmp_path: Path) -> None:
    result = _launch(
        [
            "--preset",
            "local-slurm",
            "--nodes",
            "2",
            "--gpus",
            "1",
            "--dry-run",
            "--jobs-dir",
            str(tmp_path),
            "--sweep",
            "model.lr=0.01,0.02",
            "--config",
            str(train_config),
        ],
        local_slurm,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=USR2@30",
        "#SBATCH --partition=debug",
        "srun --unbuffered",
    ):
        assert line in result.stdout, line
    assert "nothing was submitted" in result.stdout and not list(tmp_path.iterdir())


def test_sweep_is_one_job_array_with_a_folder_per_element(
    local_slurm: Dict[str, str], train_config: Path, tmp_path: Path
) -> None:
    result = _launch(
        [
            "--preset",
            "local-slurm",
            "--nodes",
            "1",
            "--gpus",
            "1",
            "--wait",
            "--jobs-dir",
            str(tmp_path),
            "--job-name",
            "sweep",
            "--sweep",
            "model.lr=0.01,0.03",
            "--config",
            str(train_config),
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "1",
        ],
        local_slurm,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    root = _job_folder(tmp_path)
    elements = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "logs")
    assert [p.name for p in elements] == ["00-lr=0.01", "01-lr=0.03"]
    array_ids = set()
    for index, (folder, lr) in enumerate(zip(elements, (0.01, 0.03))):
        launch = json.loads((folder / "launch.json").read_text())
        assert launch["array_index"] == index and launch["sweep"] == {"model.lr": str(lr)}
        array_ids.add(launch["job_id"].split("_")[0])
        assert launch["job_id"] == f"{launch['job_id'].split('_')[0]}_{index}"
        assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["lr"] == lr
        assert json.loads((folder / "result.json").read_text())["global_step"] == 2
        assert (folder / "logs" / f"{launch['job_id']}_0_log.err").is_file()  # logs/ -> ../logs/<array>_<index>
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert [run_id for run_id, _ in _train_rows(folder)] == [launch["wandb_run_id"]]
    assert len(array_ids) == 1  # one sbatch, one array


def test_failed_job_shows_the_failing_ranks_log(
    local_slurm: Dict[str, str], train_config: Path, tmp_path: Path
) -> None:
    result = _launch(
        [
            "--preset",
            "local-slurm",
            "--nodes",
            "2",
            "--gpus",
            "1",
            "--wait",
            "--jobs-dir",
            str(tmp_path),
            "--config",
            str(train_config),
            "--data.init_args.root",
            str(tmp_path / "no-dataset"),
        ],
        local_slurm,
        tmp_path,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    failed = re.search(r"failed; rank (\d): RuntimeError: shufflenet-pl fit stopped: error: data.root: ", result.stderr)
    assert failed, result.stderr[-3000:]
    assert "--- last lines of " in result.stderr and f"_{failed.group(1)}_log.err ---" in result.stderr
    assert f"data.root: {tmp_path / 'no-dataset' / 'train'} does not exist" in result.stderr  # the CLI's own message
    assert re.search(r"failing ranks: (0, 1|1, 0);", result.stderr)


def _task_pid(job_id: str, rank: int) -> int:
    """The process of ``rank`` in a job (submitit's task; not its loader workers or W&B's service)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_text()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        is_srun = cmdline.split("\0")[0].endswith("srun")  # the batch script's srun has rank 0's environment
        if (
            environ.get("SLURM_JOB_ID") == job_id
            and environ.get("SLURM_PROCID") == str(rank)
            and "submitit" in cmdline
            and not is_srun
        ):
            found[int(proc.name)] = parent
    roots = [pid for pid, parent in found.items() if parent not in found]
    assert len(roots) == 1, f"rank {rank} of job {job_id}: processes {found}"
    return roots[0]


def _recorded_job_id(jobs: Path) -> str:
    return json.loads((_job_folder(jobs) / "launch.json").read_text()).get("job_id") or "none"


def _log_text(folder: Path, job_id: str, rank: int = 0) -> str:
    path = folder / "logs" / f"{job_id}_{rank}_log.err"
    return path.read_text(errors="replace") if path.exists() else ""


def _timed_checkpoint_config(jobs: Path) -> Path:
    """A config with a timed checkpoint every 0.6 s (a kill redoes at most that much), so that saves
    land in the second epoch however fast this machine trains the three short epochs."""
    timed = jobs / "timed.yaml"
    callback = {"class_path": "shufflenet_pl.callbacks.TimedCheckpoint", "init_args": {"every_minutes": 0.01}}
    timed.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return timed


def _wait_for_timed_save_in_second_epoch(jobs: Path, launcher: subprocess.Popen, deadline: float) -> None:
    steps_per_epoch = 200 // GLOBAL_BATCH
    while not list(jobs.glob("*/launch.json")) or not any(
        int(step) > steps_per_epoch
        for step in re.findall(
            r"at global step (\d+) (?:in \S+ s )?\(every", _log_text(_job_folder(jobs), _recorded_job_id(jobs))
        )
    ):
        assert time.time() < deadline and launcher.poll() is None, "launcher ended before a timed save"
        time.sleep(0.2)


#: The faults every optimizer step must survive exactly once: SLURM's requeue signal (time limit,
#: preemption with a user signal), a plain SIGTERM (scancel, preemption) resumed with --resume, a
#: killed rank (a lost node) that the job requeues itself, from its last timed checkpoint, and its
#: node set DOWN by an admin, which SLURM requeues itself (the job runs again on the other node).
FAULTS = ["usr2", "sigterm", "kill9", "node-down"]
#: (fault, datamodule): every fault with ImageFolder; the USR2 requeue with FFCV too.
JOBS = [(fault, "imagefolder") for fault in FAULTS] + [("usr2", "ffcv")]


@pytest.fixture(scope="module", params=JOBS, ids=[f"{fault}-{data}" for fault, data in JOBS])
def requeued_job(
    request: pytest.FixtureRequest,
    local_slurm: Dict[str, str],
    train_config: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Tuple[str, Path, str, "_Output"]:
    """A 1 node x 2 process job interrupted in its second epoch by ``fault``, followed by the
    launcher through the requeue (or the ``--resume``) to the end; with the launcher's output. USR2
    is what SLURM sends at a time limit (``--signal=USR2@delay``) and at preemption with
    ``PreemptParameters=send_user_signal``."""
    fault, data = request.param
    if data == "ffcv":
        train_config = request.getfixturevalue("ffcv_train_config")
    jobs = tmp_path_factory.mktemp(f"jobs-{fault}-{data}")
    extra: List[str] = []
    if fault == "sigterm":  # loader worker processes, which SLURM's SIGTERM reaches too
        extra = ["--data.init_args.num_workers", "1"]
    if fault == "kill9":
        extra = ["--config", str(_timed_checkpoint_config(jobs))]
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "--preset",
            "local-slurm",
            "--nodes",
            "1",
            "--gpus",
            "2",
            "--wait",
            "--jobs-dir",
            str(jobs),
            "--job-name",
            fault,
            "--config",
            str(train_config),
            *extra,
        ],
        cwd=jobs,
        env=local_slurm,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = _Output(launcher)
    node = ""
    try:
        deadline = time.time() + 400
        if fault == "kill9":  # its config's callback list replaces the ModelCheckpoint: wait for a timed save
            _wait_for_timed_save_in_second_epoch(jobs, launcher, deadline)
        while time.time() < deadline and fault != "kill9" and not list(jobs.glob("*/checkpoints/best-epoch=000.ckpt")):
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.2)
        folder = _job_folder(jobs)
        job_id = json.loads((folder / "launch.json").read_text())["job_id"]
        assert job_id, "epoch 0 ended before the launcher recorded the job id"
        output.fault_at = time.time()
        if fault == "usr2":
            subprocess.run(["scancel", "--signal", "USR2", job_id], env=local_slurm, check=True, timeout=60)
        elif fault == "sigterm":
            subprocess.run(["scancel", job_id], env=local_slurm, check=True, timeout=60)
        elif fault == "node-down":
            node = _scontrol(local_slurm, "show", "job", "-o", job_id).split(" NodeList=")[1].split()[0]
            _scontrol(local_slurm, "update", f"nodename={node}", "state=down", "reason=maintenance test")
        else:
            os.kill(_task_pid(job_id, 1), signal.SIGKILL)
        launcher.wait(timeout=420)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if node:
            _scontrol(local_slurm, "update", f"nodename={node}", "state=resume")
    out, err = output.text()
    if fault == "sigterm":
        # A cancel is not requeued: the job saved, said how to continue, and ended.
        assert launcher.returncode == 1, out[-3000:] + err[-5000:]
        assert "stopped by SIGTERM at global step" in err and f"launch.py --resume {folder}" in err, err[-3000:]
        resumed = _launch(["--resume", str(folder), "--wait"], local_slurm, jobs)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
        assert f"resuming {folder}" in resumed.stdout
    else:
        assert launcher.returncode == 0, out[-3000:] + err[-5000:]
    return fault, folder, data, output


class _Output:
    """A launcher's stdout and stderr, each line with the time it came (read by two threads)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: Dict[str, List[Tuple[float, str]]] = {"out": [], "err": []}
        self.fault_at = 0.0
        self.readers = [
            threading.Thread(target=self._read, args=(stream, self.lines[name]), daemon=True)
            for name, stream in (("out", process.stdout), ("err", process.stderr))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: List[Tuple[float, str]]) -> None:
        for line in stream:
            lines.append((time.time(), line))

    def text(self) -> Tuple[str, str]:
        for reader in self.readers:
            reader.join(timeout=60)
        return "".join(line for _, line in self.lines["out"]), "".join(line for _, line in self.lines["err"])

    def launcher_lines(self, pattern: str) -> List[Tuple[float, str]]:
        """``(seconds after the fault, line)`` of the launcher's own lines that match ``pattern``."""
        return [
            (at - self.fault_at, line.strip())
            for at, line in self.lines["out"] + self.lines["err"]
            if line.startswith("[launch]") and re.search(pattern, line)
        ]


def _scontrol(env: Dict[str, str], *args: str) -> str:
    return subprocess.run(["scontrol", *args], env=env, check=True, capture_output=True, text=True, timeout=60).stdout


def test_requeued_job_resumes_exactly(requeued_job: Tuple[str, Path, str, _Output]) -> None:
    """The job checkpointed at a batch boundary, was requeued (or resumed), continued from last.ckpt
    and ended with the optimizer steps of an uninterrupted run: none lost, none repeated after the
    checkpoint it resumed from; one W&B run."""
    fault, folder, _, _ = requeued_job
    launch = json.loads((folder / "launch.json").read_text())
    attempts = launch["attempts"]
    assert len(attempts) == 2, attempts
    assert attempts[1]["resumed_from"] == str(folder / "checkpoints" / "last.ckpt")
    first_log = _log_text(folder, attempts[0]["job_id"])
    log = _log_text(folder, launch["job_id"])
    if fault == "sigterm":
        assert launch["previous_job_ids"] == [attempts[0]["job_id"]] and "resuming from" in log
    else:
        assert "restart 1: resuming from" in log
    steps_per_epoch = 200 // GLOBAL_BATCH
    total = EPOCHS * steps_per_epoch
    resumed_step = int(log.split("training from global step ")[-1].split()[0])
    if fault == "kill9":
        assert len(launch["failures"]) == 1 and launch["failures"][0]["seen_by_rank"] == 0
        before_kill = first_log.split("restart 1:")[0]  # a requeued job appends to the same log
        timed_saves = [
            int(m) for m in re.findall(r"last\.ckpt at global step (\d+) (?:in \S+ s )?\(every", before_kill)
        ]
        assert resumed_step == timed_saves[-1]  # the newest timed checkpoint before the kill
    else:
        saved_step = int(first_log.split("last.ckpt at global step ")[1].split()[0])
        assert resumed_step == saved_step
    assert steps_per_epoch < resumed_step < total  # interrupted in the middle of training, after epoch 0
    result = json.loads((folder / "result.json").read_text())
    assert result["global_step"] == total
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["lr_schedulers"][0]["last_epoch"] == total  # one LR step per optimizer step

    runs = _train_rows(folder)
    if fault in ("sigterm", "node-down"):  # the first attempt's rows may continue in a part of their own
        # (SLURM's SIGTERM stopped W&B's service)
        assert {run_id for run_id, _ in runs} == {launch["wandb_run_id"]} and len(runs) in (2, 3), runs
        runs = [(runs[0][0], [row for _, rows in runs[:-1] for row in rows]), runs[-1]]
    assert [run_id for run_id, _ in runs] == [launch["wandb_run_id"]] * 2  # one W&B run, two parts
    first, second = (_losses_by_step(rows) for _, rows in runs)
    assert min(second) == resumed_step  # the second part continues from the checkpoint (rows count from 0)
    assert sorted(set(first) | set(second)) == list(range(total))  # no step missing
    if fault == "kill9":  # steps after the checkpoint may be trained (and logged) again: at most 0.6 s of them
        assert max(first) >= resumed_step - 1
    else:
        assert max(first) < min(second)  # the second part continues, it does not redo steps
        assert len(first) + len(second) == total  # every optimizer step logged exactly once


def _local_job(local_slurm: Dict[str, str], train_config: Path, jobs: Path) -> Path:
    env = {k: v for k, v in local_slurm.items() if k != "SLURM_CONF"}
    result = _launch(
        [
            "--cluster",
            "local",
            "--gpus",
            "2",
            "--cpu",
            "--jobs-dir",
            str(jobs),
            "--job-name",
            "local",
            "--config",
            str(train_config),
        ],
        env,
        jobs,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "running job" in result.stdout and "finished:" in result.stdout
    return _job_folder(jobs)


@pytest.fixture(scope="module")
def local_job(local_slurm: Dict[str, str], train_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _local_job(local_slurm, train_config, tmp_path_factory.mktemp("jobs-local"))


@pytest.fixture(scope="module")
def local_ffcv_job(
    local_slurm: Dict[str, str], ffcv_train_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The FFCV run, uninterrupted, on the local executor."""
    return _local_job(local_slurm, ffcv_train_config, tmp_path_factory.mktemp("jobs-local-ffcv"))


def _assert_same_training(job: Path, reference: Path) -> None:
    """Same optimizer steps with the same logged losses, and the same final weights."""
    ((_, reference_rows),) = _train_rows(reference)
    expected = _losses_by_step(reference_rows)
    losses: Dict[int, float] = {}
    for _, rows in _train_rows(job):
        losses.update(_losses_by_step(rows))
    assert sorted(losses) == sorted(expected)
    for step, loss in expected.items():
        assert losses[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"{job.name}, step {step}"
    weights, expected_weights = _final_weights(job), _final_weights(reference)
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=f"{job.name}: {name}")


def test_local_executor_gives_the_same_result(local_job: Path, two_node_job: Path) -> None:
    """The local executor runs the same 2-process job as SLURM over two nodes: same steps, same
    logged losses, same final weights."""
    result = json.loads((local_job / "result.json").read_text())
    assert (result["world_size"], result["global_step"]) == (2, EPOCHS * (200 // GLOBAL_BATCH))
    _assert_same_training(two_node_job, local_job)


def test_requeued_job_trains_like_an_uninterrupted_one(
    requeued_job: Tuple[str, Path, str, _Output], request: pytest.FixtureRequest
) -> None:
    """After the requeue the run continues with the next batch of the same data order (and, with
    FFCV, the same seeded crops and flips): the losses of every step and the final weights equal
    those of the uninterrupted run with the same datamodule."""
    _, folder, data, _ = requeued_job
    _assert_same_training(folder, request.getfixturevalue("local_ffcv_job" if data == "ffcv" else "local_job"))


def test_failure_limit_stops_the_job_and_says_so(
    local_slurm: Dict[str, str], train_config: Path, tmp_path: Path
) -> None:
    """With --max-failures 0 a killed rank 0 is not requeued: the launcher names the rank and its
    node within seconds, says that the limit stopped the job and how to continue; launch.json records
    the refused failure."""
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "--preset",
            "local-slurm",
            "--nodes",
            "1",
            "--gpus",
            "2",
            "--wait",
            "--max-failures",
            "0",
            "--jobs-dir",
            str(tmp_path),
            "--config",
            str(train_config),
        ],
        cwd=tmp_path,
        env=local_slurm,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = _Output(launcher)
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("*/launch.json")) or "training from global step 0" not in _log_text(
            _job_folder(tmp_path), _recorded_job_id(tmp_path)
        ):
            assert time.time() < deadline and launcher.poll() is None, output.text()
            time.sleep(0.2)
        folder = _job_folder(tmp_path)
        job_id = _recorded_job_id(tmp_path)
        output.fault_at = time.time()
        os.kill(_task_pid(job_id, 0), signal.SIGKILL)
        launcher.wait(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    out, err = output.text()
    assert launcher.returncode == 1, out[-3000:] + err[-5000:]
    node = json.loads((folder / "launch.json").read_text())["attempts"][0]["hosts"][0]
    limit = "(--max-failures 0, 0 requeue(s) after a lost rank so far)"
    (told,) = output.launcher_lines(r"was lost.*not requeued")
    assert told[0] < 30 and told[1] == (
        f"[launch] job {job_id}: rank 0 on {node} was lost (killed by SIGKILL); not requeued: the failure limit "
        f"is reached {limit}"
    ), told
    assert (
        f"[launch] job {job_id} stopped: rank 0 on {node} was lost (killed by SIGKILL); the failure limit stopped "
        f"it {limit}; continue with: python launch.py --resume {folder}\n" in err
    ), err[-3000:]
    assert "Traceback" not in out
    (refused,) = json.loads((folder / "launch.json").read_text())["failures"]
    assert (refused["requeued"], refused["limit"], refused["seen_by_rank"]) == (False, 0, 1)


def test_launcher_tells_the_fault_in_one_line(requeued_job: Tuple[str, Path, str, _Output]) -> None:
    """Within 30 s of the fault, the launcher says in one line of its own what happened and what
    follows; the shutdown noise of the stopped attempt (srun's lines, tracebacks) stays in the logs."""
    fault, folder, _, output = requeued_job
    launch = json.loads((folder / "launch.json").read_text())
    job_id = launch["attempts"][0]["job_id"]
    node = launch["attempts"][0]["hosts"][0]
    out, err = output.text()
    if fault == "sigterm":  # a cancel is not requeued: the failure report says how to continue
        assert not output.launcher_lines("requeued")
        return
    told = output.launcher_lines(r"requeued|was lost")
    assert len(told) == 1 and 0 < told[0][0] < 30, told
    line = told[0][1]
    if fault == "usr2":
        saved_step = _log_text(folder, job_id).split("last.ckpt at global step ")[1].split()[0]
        assert line == (
            f"[launch] job {job_id} requeued (preemption signal SIGUSR2); it resumes from last.ckpt at "
            f"global step {saved_step}"
        )
    elif fault == "kill9":
        assert line.startswith(
            f"[launch] job {job_id}: rank 1 on {node} was lost (killed by SIGKILL); the job requeued itself "
            "(failure 1 of at most 3)"
        ), line
    else:
        assert line.startswith(f"[launch] job {job_id} requeued by SLURM: {node} is DOWN (maintenance test)"), line
        assert launch["attempts"][1]["hosts"] != [node]  # it ran again on the other node
    # what the stopping attempt wrote stays in its logs
    noise = ("got signal", "Caught signal", "Traceback", "srun: ", "slurmstepd", "Exited with exit code")
    for text in (*noise, "ConnectionResetError", "failed;"):
        assert text not in out + err, text


def test_ctrl_c_cancels_a_local_job_in_one_line(
    local_slurm: Dict[str, str], train_config: Path, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it) cancels a job on this
    machine with one line that says where its checkpoints are and how to continue; no traceback."""
    env = {k: v for k, v in local_slurm.items() if k != "SLURM_CONF"}
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "--cluster",
            "local",
            "--gpus",
            "2",
            "--cpu",
            "--jobs-dir",
            str(tmp_path),
            "--config",
            str(train_config),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("*/logs/*_0_log.err")) or "training from global step 0" not in (
            next(tmp_path.glob("*/logs/*_0_log.err")).read_text(errors="replace")
        ):
            assert time.time() < deadline and launcher.poll() is None, launcher.communicate()
            time.sleep(0.2)
        os.killpg(launcher.pid, signal.SIGINT)
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    folder = _job_folder(tmp_path)
    assert launcher.returncode == 130, out[-3000:] + err[-3000:]
    assert (
        f"[launch] cancelled; checkpoints so far are in {folder / 'checkpoints'}; continue with: "
        f"python launch.py --resume {folder}\n" in out
    ), out[-2000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err[-3000:]


def _node_script(env: Dict[str, str], action: str, node: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "cluster/local/node.sh"), "--dir", env["LOCAL_SLURM_DIR"], action, node],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_lost_node_is_waited_for_and_the_job_resumes_exactly(
    lossy_slurm: Dict[str, str], train_config: Path, two_node_job: Path, tmp_path: Path
) -> None:
    """rank 1's node dies (its slurmd, its job step and its task killed at once): within 30 s the
    launcher names the lost rank and node; while SLURM holds the job (COMPLETING until it marks the
    node DOWN, then PENDING without it) a line says that the job waits and for which node; once the
    node's slurmd runs again the job starts again and ends with the weights of the uninterrupted run,
    in one W&B run."""
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "--preset",
            "local-slurm",
            "--nodes",
            "2",
            "--gpus",
            "1",
            "--wait",
            "--jobs-dir",
            str(tmp_path),
            "--job-name",
            "lost-node",
            "--config",
            str(train_config),
            "--config",
            str(_timed_checkpoint_config(tmp_path)),
        ],
        cwd=tmp_path,
        env=lossy_slurm,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = _Output(launcher)
    node, node_back = "", False
    try:
        _wait_for_timed_save_in_second_epoch(tmp_path, launcher, time.time() + 300)
        folder = _job_folder(tmp_path)
        job_id = _recorded_job_id(tmp_path)
        node = re.findall(r"rank 1/2 \(node 1/2, local rank 0\) on ([^\s,:]+)", _log_text(folder, job_id, rank=1))[0]
        output.fault_at = time.time()
        _node_script(lossy_slurm, "kill", node)
        deadline = time.time() + 120
        while not output.launcher_lines(rf"waits .*{node}"):
            assert time.time() < deadline and launcher.poll() is None, output.text()
            time.sleep(0.5)
        while "waits to start again" not in "".join(line for _, line in output.launcher_lines("waits")):
            assert time.time() < deadline and launcher.poll() is None, output.text()
            time.sleep(0.5)
        _node_script(lossy_slurm, "start", node)
        node_back = True
        launcher.wait(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if node and not node_back:
            _node_script(lossy_slurm, "start", node)
    out, err = output.text()
    assert launcher.returncode == 0, out[-3000:] + err[-5000:]

    (lost,) = output.launcher_lines(r"was lost")
    assert lost[0] < 30 and re.match(
        rf"\[launch\] job {job_id}: rank 1 on {node} was lost \(.*\); the job requeued itself \(failure 1 of", lost[1]
    ), lost
    waits = output.launcher_lines(r"waits")
    assert all(node in line for _, line in waits), waits
    held = [at for at, line in waits if line.startswith(f"[launch] job {job_id} waits for {node}: {node} does not")]
    pending = [at for at, line in waits if line.startswith(f"[launch] job {job_id} waits to start again")]
    assert held and pending, waits  # while SLURM holds the stopped attempt, and while the job waits for the node
    assert lost[0] <= held[0] < pending[0] < SLURMD_TIMEOUT + 40, (lost, waits)  # no long silence
    assert "Traceback" not in out + err and "srun: " not in out + err

    launch = json.loads((folder / "launch.json").read_text())
    assert len(launch["attempts"]) == 2 and len(launch["failures"]) == 1, launch
    assert "restart 1: resuming from" in _log_text(folder, job_id)
    assert json.loads((folder / "result.json").read_text())["global_step"] == EPOCHS * (200 // GLOBAL_BATCH)
    assert {run_id for run_id, _ in _train_rows(folder)} == {launch["wandb_run_id"]}
    _assert_same_training(folder, two_node_job)
    weights, expected = _final_weights(folder), _final_weights(two_node_job)
    assert all(torch.equal(weights[name], tensor) for name, tensor in expected.items())  # bitwise
