"""Bad input ends in one named line, before any work, and leaves nothing behind: a truncated
``.beton``, a checkpoint or weights file of another width, a missing ``--weights`` file, a global
batch that does not divide over ``--trainer.devices``, an explicit ``num_classes`` the data
contradicts, an empty class folder, an undecodable image, a ``kill -9`` of ``convert``; plus EXIF
orientation and ``convert --quiet``. Real files throughout: FFCV ``.beton`` files, JPEGs, Lightning
checkpoints, CLI subprocesses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli

DEMO = str(REPO / "configs" / "experiment" / "demo.yaml")
X1_0 = str(REPO / "configs" / "model" / "x1_0.yaml")


def _jpeg(path: Path, height: int = 20, width: int = 24, seed: int = 0, exif: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif)


def _tree(root: Path, classes=("a_cls", "b_cls"), per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _jpeg(root / split / name / f"{i}.jpg", seed=100 * c + i)
    return root


def _folder_args(root: Path, batch: int = 4) -> list:
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
        "32",
        "--data.init_args.val_res",
        "32",
        "--data.init_args.num_workers",
        "0",
        "--no-wandb",
        "--trainer.enable_progress_bar",
        "false",
    ]


def _one_line_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The command failed with exit status 2 and a single ``error:`` line holding ``parts``."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr[-3000:]  # nothing follows it
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


# --- truncated .beton -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_betons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real ``train.beton``/``val.beton`` (6 images each) with their sidecars."""
    pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
    from shufflenet_pl.data.convert import convert_imagefolder

    root = tmp_path_factory.mktemp("tiny")
    convert_imagefolder(_tree(root / "src"), root / "out", num_workers=1, progress=False)
    return root / "out"


@pytest.mark.parametrize("keep_sidecar", [True, False], ids=["sidecar", "header-only"])
def test_truncated_beton_is_named_before_training(tiny_betons: Path, tmp_path: Path, keep_sidecar: bool) -> None:
    from shufflenet_pl.data import FFCVImageNetDataModule
    from shufflenet_pl.data.convert import TruncatedBetonError

    root = tmp_path / "data"
    shutil.copytree(tiny_betons, root)
    FFCVImageNetDataModule(str(root), batch_size=2, num_workers=1)  # complete files pass
    beton = root / "train.beton"
    data = beton.read_bytes()
    beton.write_bytes(data[: len(data) // 2])
    if not keep_sidecar:
        for sidecar in root.glob("*.json"):
            sidecar.unlink()
    started = time.monotonic()
    with pytest.raises(TruncatedBetonError) as error:
        FFCVImageNetDataModule(str(root), batch_size=2, num_workers=1, num_classes=None if keep_sidecar else 2)
    assert time.monotonic() - started < 5
    assert f"{beton} is truncated: {len(data) // 2} bytes" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_truncated_beton_is_one_line_on_the_command_line(tiny_betons: Path, cli_env: dict, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_betons, root)
    beton = root / "val.beton"
    beton.write_bytes(beton.read_bytes()[: beton.stat().st_size // 2])
    result = run_cli(
        [
            "validate",
            "--config",
            DEMO,
            "--data.init_args.root",
            str(root),
            "--data.init_args.demo",
            "false",
            "--data.init_args.batch_size",
            "2",
            "--data.init_args.num_workers",
            "1",
            "--no-wandb",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(result, f"{beton} is truncated")


# --- widths: checkpoints and --weights ----------------------------------------------------------------
def test_state_dict_mismatch_names_both_widths() -> None:
    from shufflenet_pl.models import shufflenet_v2_x0_5, shufflenet_v2_x1_0
    from shufflenet_pl.models.weights import state_dict_mismatch

    small, large = shufflenet_v2_x0_5(num_classes=10), shufflenet_v2_x1_0(num_classes=10)
    assert state_dict_mismatch("x", small.state_dict(), shufflenet_v2_x0_5(num_classes=10)) is None
    message = state_dict_mismatch("checkpoint c.ckpt", small.state_dict(), large)
    assert message == (
        "checkpoint c.ckpt does not fit the model: it holds ShuffleNet V2 0.5x (configs/model/x0_5.yaml), "
        "10 classes, but the config "
        "builds ShuffleNet V2 1.0x (configs/model/x1_0.yaml), 10 classes; use the model config the "
        "weights were trained with"
    )
    classes = state_dict_mismatch("w", shufflenet_v2_x0_5(num_classes=7).state_dict(), small)
    assert "0.5x (configs/model/x0_5.yaml), 7 classes, but the config builds ShuffleNet V2 0.5x" in classes


@pytest.mark.slow
def test_checkpoint_and_weights_of_another_width_or_no_file_are_one_line(
    demo_root: Path, cli_env: dict, tmp_path: Path
) -> None:
    import lightning

    from shufflenet_pl.models import shufflenet_v2_x0_5

    small = shufflenet_v2_x0_5(num_classes=10)
    ckpt = tmp_path / "small.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in small.state_dict().items()},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    validate = run_cli(
        ["validate", "--config", DEMO, "--config", X1_0, *_folder_args(demo_root), "--ckpt_path", str(ckpt)],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(
        validate, f"checkpoint {ckpt} does not fit the model: it holds ShuffleNet V2 0.5x", "builds ShuffleNet V2 1.0x"
    )
    assert "size mismatch" not in validate.stderr

    weights = run_cli(
        ["validate", "--config", DEMO, "--config", X1_0, *_folder_args(demo_root), "--weights", str(ckpt)],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(weights, "--weights: weights file", "holds ShuffleNet V2 0.5x", "builds ShuffleNet V2 1.0x")

    missing = run_cli(
        ["validate", "--config", DEMO, *_folder_args(demo_root), "--weights", str(tmp_path / "none.pth")],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(missing, f"weights file {tmp_path / 'none.pth'} does not exist")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    garbage = run_cli(
        ["validate", "--config", DEMO, *_folder_args(demo_root), "--weights", str(tmp_path / "notes.txt")],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(garbage, f"{tmp_path / 'notes.txt'} is not a state-dict file")


# --- settings the run would silently change -------------------------------------------------------
@pytest.mark.slow
def test_batch_that_does_not_divide_the_devices_is_refused_before_ddp_starts(
    demo_root: Path, cli_env: dict, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run_cli(
        [
            "fit",
            "--config",
            DEMO,
            *_folder_args(demo_root, batch=15),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.max_steps",
            "1",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(result, "data.batch_size=15 (global) does not divide over 2 processes", "1 node(s) x 2 device(s)")
    assert "Initializing distributed" not in result.stderr and "MEMBER" not in result.stderr
    print(f"refused in {time.monotonic() - started:.0f} s")


@pytest.mark.slow
def test_explicit_num_classes_that_the_data_contradicts_is_refused(
    demo_root: Path, cli_env: dict, tmp_path: Path
) -> None:
    result = run_cli(
        [
            "fit",
            "--config",
            DEMO,
            *_folder_args(demo_root),
            "--model.model.init_args.num_classes",
            "5",
            "--trainer.max_steps",
            "1",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    _one_line_error(result, "model.model.init_args.num_classes=5, but the data has 10 classes")


# --- ImageFolder trees ----------------------------------------------------------------------------------
def test_empty_class_folder_is_refused_by_converter_and_datamodule(tmp_path: Path) -> None:
    from shufflenet_pl.data import ImageFolderDataModule
    from shufflenet_pl.data.convert import EmptyClassFolderError, convert_split

    root = _tree(tmp_path / "src")
    (root / "train" / "c_empty").mkdir()
    (root / "train" / "c_empty" / "README.txt").write_text("no images here")
    with pytest.raises(EmptyClassFolderError, match=f"hold no image .*: {root / 'train' / 'c_empty'};"):
        convert_split(root / "train", tmp_path / "out" / "train.beton", num_workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(EmptyClassFolderError, match=f"{root / 'train' / 'c_empty'}"):
        ImageFolderDataModule(str(root), batch_size=2, num_workers=0)
    # an empty validation class folder too
    (root / "train" / "c_empty" / "0.jpg").write_bytes((root / "train" / "a_cls" / "0.jpg").read_bytes())
    (root / "val" / "c_empty").mkdir()
    with pytest.raises(EmptyClassFolderError, match=f"{root / 'val' / 'c_empty'}"):
        ImageFolderDataModule(str(root), batch_size=2, num_workers=0)


def _with_bad_image(root: Path) -> Path:
    bad = root / "train" / "a_cls" / "1.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return bad


def test_imagefolder_skips_and_reports_a_bad_image(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from shufflenet_pl.data import ImageFolderDataModule

    root = _tree(tmp_path / "src")
    bad = _with_bad_image(root)
    data = ImageFolderDataModule(str(root), batch_size=2, num_workers=0, train_res=16, val_res=16)
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(batches) == 3 and all(images.shape == (2, 3, 16, 16) for images, _ in batches)
    err = capfd.readouterr().err
    assert f"warning: data.bad_images=skip: skipped {bad}, which cannot be decoded (UnidentifiedImageError" in err


def test_imagefolder_bad_images_error_refuses_at_setup(tmp_path: Path) -> None:
    from shufflenet_pl.data import ImageFolderDataModule
    from shufflenet_pl.errors import InputError

    root = _tree(tmp_path / "src")
    bad = _with_bad_image(root)
    data = ImageFolderDataModule(str(root), batch_size=2, num_workers=1, bad_images="error")
    with pytest.raises(InputError, match=f"1 of 12 images cannot be decoded: {bad} \\(UnidentifiedImageError"):
        data.setup("fit")
    with pytest.raises(ValueError, match="data.bad_images must be skip or error"):
        ImageFolderDataModule(str(root), bad_images="maybe")  # type: ignore[arg-type]


_ROTATE_90 = 6  # EXIF orientation "rotate 90 CW to view"


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = _ROTATE_90
    _jpeg(path, height=20, width=40, exif=exif.tobytes())


def test_exif_orientation_is_applied_by_converter_and_datamodule(tmp_path: Path) -> None:
    from shufflenet_pl.data import ImageFolderDataModule
    from shufflenet_pl.data.convert import _Source

    root = _tree(tmp_path / "src")
    rotated = root / "val" / "a_cls" / "rotated.jpg"
    _exif_rotated(rotated)
    with Image.open(rotated) as stored:
        assert stored.size == (40, 20)  # stored landscape, shown portrait
    image, _ = _Source([(str(rotated), 0)], seed=0)[0]  # what FFCV's writer receives
    assert image.shape == (40, 20, 3)
    data = ImageFolderDataModule(str(root), batch_size=2, num_workers=0)
    data.setup("validate")
    index = [path for path, _ in data.val_set.samples].index(str(rotated))
    assert data.val_set.loader(str(rotated)).size == (20, 40)
    assert np.array_equal(np.asarray(data.val_set.loader(str(rotated))), image)
    assert data.val_set[index][0].shape[0] == 3


# --- convert: --quiet, EXIF in the .beton, kill -9 ------------------------------------------------------
def _children(pid: int) -> List[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return children


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _describe(pid: int) -> str:
    try:
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
        )
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120].decode()
    except OSError:
        return "gone"
    return f"{command} state={status.get('State')} ppid={status.get('PPid')}"


@pytest.mark.slow
def test_convert_quiet_prints_no_bars_and_stores_exif_upright(tmp_path: Path, cli_env: dict) -> None:
    pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
    from ffcv.reader import Reader

    root = _tree(tmp_path / "src")
    _exif_rotated(root / "train" / "a_cls" / "rotated.jpg")
    result = run_cli(
        ["convert", str(root), str(tmp_path / "out"), "--workers", "1", "--write-mode", "raw", "--quiet"],
        cwd=tmp_path,
        env=cli_env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "it/s" not in result.stderr and "%|" not in result.stderr, result.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "train.beton.json").read_text())
    meta = Reader(str(tmp_path / "out" / "train.beton")).metadata["f0"][info["files"].index("a_cls/rotated.jpg")]
    assert (int(meta["height"]), int(meta["width"])) == (40, 20)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_kill_9_of_convert_leaves_no_writer_and_the_next_run_removes_its_temporary(
    tmp_path: Path, cli_env: dict
) -> None:
    pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
    # Enough decoding work (800 large noisy JPEGs; hard links, so making them is instant) that the writer is
    # still busy when it is killed; stored downscaled (--max-side), so the .beton stays small.
    split = tmp_path / "src" / "train"
    _jpeg(split / "a_cls" / "0.jpg", height=1536, width=1536)
    for c in ("a_cls", "b_cls"):
        (split / c).mkdir(parents=True, exist_ok=True)
        for i in range(1, 400):
            os.link(split / "a_cls" / "0.jpg", split / c / f"{i}.jpg")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "shufflenet_pl.cli",
        "convert",
        str(tmp_path / "src"),
        str(out),
        "--splits",
        "train",
        "--workers",
        "2",
        "--max-side",
        "64",
        "--quiet",
    ]
    convert = subprocess.Popen(command, cwd=tmp_path, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    writers: List[int] = []
    while time.monotonic() < deadline and convert.poll() is None:
        if list(out.glob(".train.beton.tmp-*")):
            writers = [pid for pid in _children(convert.pid) if _running(pid)]
            if len(writers) >= 2:
                break
        time.sleep(0.02)
    assert convert.poll() is None and len(writers) >= 2, "the converter finished before it could be killed"
    (temporary,) = out.glob(".train.beton.tmp-*")
    convert.send_signal(signal.SIGKILL)
    convert.wait()
    convert.stderr.close()
    # Without the fix the orphans go on converting for tens of seconds (800 images); with it they die at once
    # (5 s allow for a loaded machine). The multiprocessing resource tracker among them ends when they have.
    give_up = time.monotonic() + 5
    while any(_running(pid) for pid in writers) and time.monotonic() < give_up:
        time.sleep(0.1)
    survivors = {pid: _describe(pid) for pid in writers if _running(pid)}
    for pid in survivors:  # do not leave them to the machine when the check fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes of the converter outlived it: {survivors}"
    size = temporary.stat().st_size
    time.sleep(1)
    assert temporary.stat().st_size == size  # nothing writes on

    again = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed {temporary}, left by a converter that was killed" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train.beton", "train.beton.json"]


# --- config values: one line from the parser or the batch checks ----------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "yaml_text, extra, expected",
    [
        (None, ["--data.init_args.batch_size", "abc"], ["data.batch_size", "Expected a <class 'int'>"]),
        (None, ["--data.init_args.batch_size", "0"], ["data.batch_size must be >= 1, got 0"]),
        (None, ["--data.init_args.batch_size", "-4"], ["data.batch_size must be >= 1, got -4"]),
        (None, ["--data.init_args.batch_size", "100"], ["data.batch_size=100 is larger than the 6 training"]),
        ("data:\n  init_args:\n    batch_size: [4\n", [], ["--config", "bad.yaml:4:1: not valid YAML"]),
    ],
    ids=["batch-abc", "batch-0", "batch-neg", "batch-too-large", "yaml-syntax"],
)
def test_bad_config_value_is_one_line(
    tmp_path: Path, cli_env: dict, yaml_text: "str | None", extra: list, expected: list
) -> None:
    root = _tree(tmp_path / "images")
    configs = ["--config", DEMO]
    if yaml_text is not None:
        (tmp_path / "bad.yaml").write_text(yaml_text)
        configs += ["--config", str(tmp_path / "bad.yaml")]
    runs = tmp_path / "runs"
    args = ["fit", *configs, *_folder_args(root), "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(runs)]
    result = run_cli([*args, *extra], cwd=tmp_path, env=cli_env)
    _one_line_error(result, *expected)
    assert not runs.exists()  # refused before the trainer or a logger made anything
