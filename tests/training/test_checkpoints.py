"""Checkpoints under faults, on real files: a full disk (a real small tmpfs), flipped bytes, a torn file,
a damaged pickle, every checkpoint damaged, two trainers in one folder. Each fault ends in one named line;
no temporary file stays; every earlier good checkpoint still loads; a fallback trains to the same
weights, bit for bit, as an uninterrupted run."""

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
import torch

from shufflenet_pl.checkpoints import (
    NoGoodCheckpoint,
    checksum_path,
    choose_checkpoint,
    verify_checkpoint,
)
from shufflenet_pl.files import NoSpaceError
from shufflenet_pl.joblock import LOCK_NAME, FolderInUse, FolderLock, lock_holder


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: bitwise comparisons and a shared 2-core machine both want it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Take all of ``disk``'s free space but ``leave`` bytes."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, max(1, free - leave))
    finally:
        os.close(fd)
    return filler


def temporaries(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


class Crash(RuntimeError):
    """Stands for the process dying at the start of an epoch."""


def _crash_at(epoch: int):
    from lightning.pytorch.callbacks import LambdaCallback

    def start(trainer, *args) -> None:
        if trainer.current_epoch == epoch:
            raise Crash(f"crashed at the start of epoch {epoch}")

    return LambdaCallback(on_train_epoch_start=start)


def tiny_fit(
    folder: Path,
    max_epochs: int,
    ckpt_path: Optional[Path] = None,
    save_top_k: int = 2,
    extra: list = (),
):
    """A seeded fit of ShuffleNet V2 0.5x on 32 random 32x32 images, 4 steps per epoch, checkpoints in
    ``folder`` (the ``save_top_k`` newest by step, and last.ckpt)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from shufflenet_pl.callbacks import VerifiedModelCheckpoint
    from shufflenet_pl.models import shufflenet_v2_x0_5
    from shufflenet_pl.module import ImageClassifier

    L.seed_everything(0)
    data = TensorDataset(torch.randn(32, 3, 32, 32), torch.arange(32) % 4)
    model = ImageClassifier(shufflenet_v2_x0_5(num_classes=4), lr=0.05, schedule="linear")
    checkpoint = VerifiedModelCheckpoint(
        dirpath=folder,
        filename="{epoch}",
        monitor="step",
        mode="max",
        save_top_k=save_top_k,
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder.parent,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[checkpoint, *extra],
    )
    trainer.fit(model, DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
    return trainer, model, checkpoint


def loads(path: Path) -> dict:
    assert verify_checkpoint(path) is None, path
    return torch.load(path, map_location="cpu", weights_only=False)


def flip(path: Path, offset: int, count: int = 64) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = bytearray(handle.read(count))
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


def member_offset(path: Path, suffix: str) -> int:
    """Where the first zip member whose name ends with ``suffix`` starts in ``path`` (torch stores them)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- written atomically, with a checksum --------------------------------------------------------


def test_every_checkpoint_has_a_checksum_and_no_temporary(tmp_path: Path, one_thread: None) -> None:
    folder = tmp_path / "checkpoints"
    tiny_fit(folder, max_epochs=3)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        LOCK_NAME,
        "epoch=1.ckpt",
        "epoch=1.ckpt.sha256",
        "epoch=2.ckpt",
        "epoch=2.ckpt.sha256",
        "last.ckpt",
        "last.ckpt.sha256",
    ], names
    for name in ("epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"):
        loads(folder / name)
    print("checked: three checkpoints, each with a matching checksum, a removed one without its sidecar")


def test_full_disk_while_fit_rewrites_last_ckpt(small_disk: Path, one_thread: None) -> None:
    """The second epoch's save meets a full disk: fit ends with NoSpaceError's one line naming the mount
    and the file; the first epoch's last.ckpt is intact (verifies and loads); no temporary file."""
    folder = small_disk / "checkpoints"
    tiny_fit(folder, max_epochs=1, save_top_k=0)
    before = (folder / "last.ckpt").read_bytes()
    fill(small_disk, leave=256 << 10)
    with pytest.raises(NoSpaceError) as error:
        tiny_fit(folder, max_epochs=2, ckpt_path=folder / "last.ckpt", save_top_k=0)
    line = error.value.strerror
    assert line == f"no space left on {small_disk} writing {folder / 'last.ckpt'}; the previous file is intact"
    assert (folder / "last.ckpt").read_bytes() == before
    assert loads(folder / "last.ckpt")["global_step"] == 4
    assert temporaries(folder) == []
    print(line)


def test_full_disk_during_the_timed_checkpoint(small_disk: Path, one_thread: None) -> None:
    from shufflenet_pl.callbacks import TimedCheckpoint

    folder = small_disk / "checkpoints"
    tiny_fit(folder, max_epochs=1, save_top_k=0)
    fill(small_disk, leave=256 << 10)
    with pytest.raises(NoSpaceError) as error:
        tiny_fit(
            folder,
            max_epochs=2,
            ckpt_path=folder / "last.ckpt",
            save_top_k=0,
            extra=[TimedCheckpoint(every_minutes=1e-9)],
        )
    assert error.value.strerror == (
        f"no space left on {small_disk} writing {folder / 'last.ckpt'}; the previous file is intact"
    )
    assert loads(folder / "last.ckpt")["global_step"] == 4
    assert temporaries(folder) == [] and not list(folder.glob("*.tmp"))
    print(error.value.strerror)


def test_default_timed_checkpoint_keeps_saving_under_one_percent_of_training(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    from shufflenet_pl.callbacks import DEFAULT_EVERY_MINUTES, MAX_SAVE_SHARE, TimedCheckpoint

    adaptive = TimedCheckpoint()
    assert adaptive._interval_s == 60 * DEFAULT_EVERY_MINUTES
    adaptive._interval_s = 1e-6  # as if saving took far more than 1 % of the interval
    tiny_fit(tmp_path / "adaptive", max_epochs=1, save_top_k=0, extra=[adaptive])
    err = capfd.readouterr().err
    assert err.count("saved ") == 1 and err.count("checkpoints now every") == 1, err
    saved_seconds = float(err.split(" in ")[1].split(" s ")[0])
    assert adaptive._interval_s == pytest.approx(saved_seconds / MAX_SAVE_SHARE, abs=0.5)  # 2-decimal rounding
    fixed = TimedCheckpoint(every_minutes=1e-9)  # an explicit interval is kept: a save after every step
    tiny_fit(tmp_path / "fixed", max_epochs=1, save_top_k=0, extra=[fixed])
    err = capfd.readouterr().err
    assert err.count("saved ") == 4 and "checkpoints now every" not in err, err
    assert fixed._interval_s == pytest.approx(60e-9)


# --- verified before a resume; a fallback continues the same training ----------------------------


@pytest.mark.parametrize("damage", ["flip-tensor", "truncate", "flip-pickle"])
def test_damaged_last_ckpt_falls_back_to_the_newest_good_one(
    tmp_path: Path, one_thread: None, damage: str, capsys: pytest.CaptureFixture
) -> None:
    """last.ckpt damaged (64 bytes flipped in a tensor with the zip intact, cut short, or its pickle
    damaged): the resume names it and continues from epoch=1.ckpt; the discarded timeline (last.ckpt,
    epoch=2.ckpt) is removed; the resumed fit ends with the uninterrupted run's weights, bit for bit,
    and keeps save_top_k=2."""
    _, uninterrupted, _ = tiny_fit(tmp_path / "a", max_epochs=4)
    folder = tmp_path / "b"
    with pytest.raises(Crash):
        tiny_fit(folder, max_epochs=4, extra=[_crash_at(3)])
    last = folder / "last.ckpt"
    time.sleep(0.01)
    if damage == "flip-tensor":
        flip(last, member_offset(last, "data/0") + 100)
        assert zipfile.is_zipfile(last)
    elif damage == "truncate":
        os.truncate(last, last.stat().st_size // 2)
    else:
        flip(last, member_offset(last, "data.pkl") + 40, count=8)
    flip(folder / "epoch=2.ckpt", member_offset(folder / "epoch=2.ckpt", "data/3") + 8)

    choice = choose_checkpoint(last)
    assert choice.path == folder / "epoch=1.ckpt"
    assert [p.name for p, _ in choice.bad] == ["last.ckpt", "epoch=2.ckpt"]
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=1.ckpt"]
    err = capsys.readouterr().err
    assert f"skipping {last}: its SHA-256 differs" in err
    _, resumed, checkpoint = tiny_fit(folder, max_epochs=4, ckpt_path=choice.path)
    assert same_weights(resumed, uninterrupted)
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=2.ckpt", "epoch=3.ckpt", "last.ckpt"]
    assert sorted(Path(p).name for p in checkpoint.best_k_models) == ["epoch=2.ckpt", "epoch=3.ckpt"]
    for path in folder.glob("*.ckpt"):
        loads(path)
    print(err.strip().splitlines()[0])


def test_damaged_pickle_without_checksum_is_found_by_loading(tmp_path: Path, one_thread: None) -> None:
    folder = tmp_path / "checkpoints"
    tiny_fit(folder, max_epochs=1, save_top_k=0)
    last = folder / "last.ckpt"
    checksum_path(last).unlink()  # as written before checksums were recorded
    assert verify_checkpoint(last) is None
    flip(last, member_offset(last, "data.pkl") + 40, count=8)
    why = verify_checkpoint(last)
    assert why is not None and why.startswith("it does not load (")
    print(f"{last}: {why}")


def test_every_checkpoint_damaged_refuses_to_start_over(tmp_path: Path, one_thread: None) -> None:
    folder = tmp_path / "checkpoints"
    tiny_fit(folder, max_epochs=2)
    for path in folder.glob("*.ckpt"):
        os.truncate(path, 1000)
    with pytest.raises(NoGoodCheckpoint) as error:
        choose_checkpoint(folder / "last.ckpt")
    line = str(error.value)
    assert line.startswith(f"no good checkpoint in {folder} (") and "--restart-from-scratch" in line
    assert len(list(folder.glob("*.ckpt"))) == 3  # nothing removed or overwritten
    choice = choose_checkpoint(folder / "last.ckpt", restart_from_scratch=True)
    assert choice.path is None and not list(folder.glob("*.ckpt*"))
    print(line)


# --- one trainer per folder ---------------------------------------------------------------------


_HOLD = """
import sys, time
from shufflenet_pl.joblock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_second_trainer_into_a_running_folder_is_refused(tmp_path: Path, one_thread: None) -> None:
    folder = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(folder)["pid"] == holder.pid
        with pytest.raises(FolderInUse) as error:
            tiny_fit(folder, max_epochs=1)
        line = str(error.value)
        assert line.startswith(f"{folder} is in use by a running trainer: pid {holder.pid} on ")
        assert not list(folder.glob("*.ckpt"))
    finally:
        holder.kill()
        holder.wait()
    print(line)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, one_thread: None, capsys) -> None:
    folder = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # dies holding it: the file still names it
    holder.wait()
    assert str(holder.pid) in (folder / LOCK_NAME).read_text()
    assert lock_holder(folder) is None
    tiny_fit(folder, max_epochs=1, save_top_k=0)
    err = capsys.readouterr().err
    assert f"took over the lock of {folder} from pid {holder.pid} on " in err
    assert (folder / LOCK_NAME).read_text() == ""  # released at the end of fit
    lock = FolderLock(folder).acquire()
    assert not lock.taken_over
    lock.release()
    print(err.strip().splitlines()[-1])


# --- the command lines: one line, exit status 2 -------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _fit_args(data: Path, root: Path, epochs: int, *extra: str) -> list:
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "experiment" / "demo.yaml"),
        "--data",
        "shufflenet_pl.data.ImageFolderDataModule",
        "--data.init_args.root",
        str(data),
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
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        "3",
        "--seed_everything",
        "0",
        *extra,
    ]


def _cli(args: list, cwd: Path) -> subprocess.CompletedProcess:
    from conftest import run_cli

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OMP_NUM_THREADS"] = "1"
    return run_cli(args, cwd=cwd, env=env)


@pytest.mark.slow
def test_fit_onto_a_full_disk_ends_with_one_line(demo_root: Path, small_disk: Path, tmp_path: Path) -> None:
    root = small_disk / "run"
    first = _cli(_fit_args(demo_root, root, 1), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = root / "checkpoints"
    good = {p: p.read_bytes() for p in folder.glob("*.ckpt")}
    fill(small_disk, leave=256 << 10)
    full = _cli(_fit_args(demo_root, root, 2, "--ckpt_path", str(folder / "last.ckpt")), tmp_path)
    assert full.returncode == 2, full.stderr[-2000:]
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no space left on {small_disk} writing {folder}/"), line
    assert "Traceback" not in full.stderr
    for path, data in good.items():
        assert path.read_bytes() == data
        loads(path)
    assert temporaries(folder) == []
    print(line)


@pytest.mark.slow
def test_fit_ckpt_path_damaged_falls_back_then_refuses(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert _cli(_fit_args(demo_root, root, 1), tmp_path).returncode == 0
    folder = root / "checkpoints"
    last = folder / "last.ckpt"
    (best,) = folder.glob("best-*.ckpt")
    flip(last, member_offset(last, "data/5") + 16)
    resumed = _cli(_fit_args(demo_root, root, 2, "--ckpt_path", str(last)), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipping {last}: its SHA-256 differs" in resumed.stderr
    assert f"Restored all states from the checkpoint at {best}" in resumed.stderr
    assert loads(last)["global_step"] == 6  # both epochs of 3 steps
    for path in folder.glob("*.ckpt"):
        flip(path, member_offset(path, "data/5") + 16)
    before = sorted(p.name for p in folder.iterdir())
    refused = _cli(_fit_args(demo_root, root, 3, "--ckpt_path", str(last)), tmp_path)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no good checkpoint in {folder} (") and "--restart-from-scratch" in line
    assert sorted(p.name for p in folder.iterdir()) == before
    print(line)


def _job_folder(tmp_path: Path) -> Path:
    """A job folder as launch.py writes it (launch.json, config.yaml, checkpoints/) for a local job."""
    from cluster.job import write_json_atomic
    from cluster.resources import Resources

    folder = tmp_path / "job"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("trainer: {}\n")
    record = {"executor": "local", "resources": Resources(cpu=True).as_dict(), "wandb_run_id": "abc", "job_id": "1"}
    write_json_atomic(folder / "launch.json", record)
    return folder


def _launch(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_resume_of_a_running_job_is_refused(tmp_path: Path) -> None:
    folder = _job_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder / "checkpoints")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _launch(["--resume", str(folder)], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"launch.py: error: --resume {folder}: its trainer is still running (pid {holder.pid} on ")
    print(line)


def test_resume_with_every_checkpoint_damaged_refuses(tmp_path: Path, one_thread: None) -> None:
    folder = _job_folder(tmp_path)
    tiny_fit(folder / "checkpoints", max_epochs=2)
    for path in (folder / "checkpoints").glob("*.ckpt"):
        os.truncate(path, path.stat().st_size - 100)
    before = sorted(p.name for p in (folder / "checkpoints").iterdir())
    result = _launch(["--resume", str(folder)], tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"launch.py: error: no good checkpoint in {folder / 'checkpoints'} (")
    assert "--restart-from-scratch" in line
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == before
    print(line)


@pytest.mark.slow
def test_full_disk_during_a_jobs_timed_checkpoint_is_reported_by_its_line(demo_root: Path, tmp_path: Path) -> None:
    """A local job on a disk with room for one checkpoint: the step-1 timed checkpoint is written, the
    step-2 one meets the full disk. The launcher names the full disk for rank 0 (not a kill); step 1's
    last.ckpt verifies and loads; no temporary file is left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4608k", "tmpfs", str(jobs)], check=True)
    try:
        result = _launch(
            [
                "--cluster",
                "local",
                "--cpu",
                "--gpus",
                "1",
                "--jobs-dir",
                str(jobs),
                *_fit_args(demo_root, tmp_path / "unused", 1)[1:],
                "--trainer.callbacks+=shufflenet_pl.callbacks.TimedCheckpoint",
                "--trainer.callbacks.init_args.every_minutes",
                "0.00001",
            ],
            tmp_path,
        )
        (folder,) = jobs.iterdir()
        checkpoints = folder / "checkpoints"
        assert result.returncode == 1, result.stderr[-3000:]
        (line,) = [line for line in result.stderr.splitlines() if " failed; rank 0: " in line]
        assert line.endswith(
            f"shufflenet-pl fit stopped: error: no space left on {jobs} writing {checkpoints / 'last.ckpt'}; "
            "the previous file is intact"
        ), line
        assert "no result (killed" not in result.stderr
        assert loads(checkpoints / "last.ckpt")["global_step"] == 1
        assert temporaries(checkpoints) == []
    finally:
        subprocess.run(["umount", "-l", str(jobs)], check=False)
    print(line)


@pytest.mark.slow
def test_second_fit_into_a_running_folder_touches_nothing(demo_root: Path, tmp_path: Path, one_thread: None) -> None:
    """``fit --ckpt_path`` into a folder whose trainer runs: refused with one line before any file of
    the folder is verified or removed (a damaged last.ckpt there stays)."""
    folder = tmp_path / "run" / "checkpoints"
    tiny_fit(folder, max_epochs=2)
    os.truncate(folder / "last.ckpt", 1000)
    before = sorted(p.name for p in folder.iterdir())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _cli(_fit_args(demo_root, tmp_path / "run", 3, "--ckpt_path", str(folder / "last.ckpt")), tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {folder} is in use by a running trainer: pid {holder.pid} on "), line
    assert sorted(p.name for p in folder.iterdir()) == before, result.stderr[-3000:]
    print(line)


def test_peers_of_a_rank_that_stopped_on_an_error_do_not_requeue(tmp_path: Path, monkeypatch, capsys) -> None:
    """Rank 0 stops on a full disk and leaves word; rank 1 then sees a lost peer, and does not count it
    as a failure to requeue (a requeue would meet the same full disk)."""
    from types import SimpleNamespace

    from cluster.job import TrainingJob, read_json, write_json_atomic

    folder = _job_folder(tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    job = TrainingJob(str(folder), "abc", "slurm")
    job._mark_failed(SimpleNamespace(job_id="7", global_rank=0))
    write_json_atomic(folder / "launch.json", {**read_json(folder / "launch.json"), "failures": []})
    survivor = SimpleNamespace(job_id="7", global_rank=1)
    assert job._requeue_after_lost_peer(survivor, ConnectionError("Connection reset by peer")) is False
    assert read_json(folder / "launch.json")["failures"] == []
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "[shufflenet-pl] rank 1: rank 0 stopped on an error (see its log); not requeued"
    print(line)
