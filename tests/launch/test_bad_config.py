"""Bad configs and data files are refused before anything is built, in one ``error:`` line that names the
key or file, with exit status 2 and nothing left behind: a misspelt key, a YAML syntax error, a batch that
is not positive or larger than the data, odd or zero stage widths, a missing ``val.beton`` or sidecar,
other bytes named ``.beton``, an FFCV file of other fields; the same checks in ``launch.py`` (no job
folder), ``launch.py --resume`` of a config edited to another width, a broken link among the photos for
``convert``, and the empty offline W&B run of a fit that fails after its logger started. Real ``.beton``
files written by FFCV, real checkpoints, real CLI and launcher subprocesses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from conftest import REPO, run_cli
from test_bad_input import _one_line_error, _tree, tiny_betons  # noqa: F401  (tiny_betons: a fixture)

pytestmark = pytest.mark.slow  # real .beton files, CLI and launcher subprocesses
SMALL = [8, 16, 32, 64, 128]


def _write_beton(path: Path, fields: Dict[str, Any]) -> Path:
    """A complete FFCV file of 4 samples with ``fields`` (name -> FFCV field), written by FFCV's writer."""
    from ffcv.fields import FloatField
    from ffcv.writer import DatasetWriter

    class Samples:
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> tuple:
            label = float(index % 2) if isinstance(list(fields.values())[1], FloatField) else index % 2
            return np.full((8, 8, 3), 40 * index, dtype=np.uint8), label

    path.parent.mkdir(parents=True, exist_ok=True)
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(Samples())
    return path


@pytest.fixture(scope="module")
def bad_roots(tiny_betons: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:  # noqa: F811
    """Data folders that each hold one bad file beside good ones."""
    from ffcv.fields import FloatField, IntField, RGBImageField

    base = tmp_path_factory.mktemp("bad")
    roots = {name: base / name for name in ("no-val", "no-sidecar", "random", "random-no-sidecar", "names", "types")}
    shutil.copytree(tiny_betons, roots["no-val"])
    for name in ("val.beton", "val.beton.json"):
        (roots["no-val"] / name).unlink()
    shutil.copytree(tiny_betons, roots["no-sidecar"])
    (roots["no-sidecar"] / "train.beton.json").unlink()
    for name in ("random", "random-no-sidecar"):
        shutil.copytree(tiny_betons, roots[name])
        (roots[name] / "train.beton").write_bytes(np.random.default_rng(0).bytes(20_000))
    (roots["random-no-sidecar"] / "train.beton.json").unlink()
    for name, fields in (
        ("names", {"img": RGBImageField(), "label": IntField()}),
        ("types", {"image": RGBImageField(), "label": FloatField()}),
    ):
        shutil.copytree(tiny_betons, roots[name])
        (roots[name] / "train.beton").unlink()
        _write_beton(roots[name] / "train.beton", fields)
        (roots[name] / "train.beton.json").write_text(json.dumps({"classes": ["a_cls", "b_cls"], "num_images": 4}))
    return roots


def _config(root: Path, batch_size: Any = 2, channels: list = SMALL) -> Dict[str, Any]:
    return {
        "data": {
            "class_path": "shufflenet_pl.data.FFCVImageNetDataModule",
            "init_args": {"root": str(root), "batch_size": batch_size, "num_workers": 1},
        },
        "model": {
            "model": {
                "class_path": "shufflenet_pl.models.ShuffleNetV2",
                "init_args": {"stages_repeats": [1, 1, 1], "stages_out_channels": channels},
            }
        },
    }


@pytest.mark.parametrize(
    "case, expected",
    [
        ("batch-abc", ["data.batch_size must be a whole number >= 1, got 'abc'"]),
        ("batch-0", ["data.batch_size must be >= 1, got 0"]),
        ("batch-neg", ["data.batch_size must be >= 1, got -4"]),
        ("batch-too-large", ["data.batch_size=7 is larger than the 6 training images of", "at most 6"]),
        ("odd-width", ["model.model.init_args.stages_out_channels=", "must be even, got [15]"]),
        ("zero-width", ["model.model.init_args.stages_out_channels must be 5 positive channel counts"]),
        ("no-val", ["data.init_args.root:", "val.beton does not exist", "shufflenet-pl convert"]),
        ("no-sidecar", ["train.beton has no train.beton.json sidecar", "data.init_args.num_classes"]),
        ("random", ["train.beton is not an FFCV dataset file (format version"]),
        ("random-no-sidecar", ["train.beton is not an FFCV dataset file (format version"]),
        ("names", ["holds the fields img (RGBImageField), label (IntField), but training reads image"]),
        ("types", ["holds the fields image (RGBImageField), label (FloatField), but training reads"]),
    ],
)
def test_run_config_checks_name_the_key_or_file(
    tiny_betons: Path,  # noqa: F811
    bad_roots: Dict[str, Path],
    case: str,
    expected: list,
) -> None:
    from shufflenet_pl.errors import InputError
    from shufflenet_pl.input_checks import check_run_config

    check_run_config(_config(tiny_betons))  # the good files and values pass
    values = {"batch-abc": "abc", "batch-0": 0, "batch-neg": -4, "batch-too-large": 7}
    widths = {"odd-width": [8, 15, 32, 64, 128], "zero-width": [8, 0, 32, 64, 128]}
    root = bad_roots.get(case, tiny_betons)
    with pytest.raises(InputError) as error:
        check_run_config(_config(root, values.get(case, 2), widths.get(case, SMALL)))
    assert "\n" not in str(error.value)
    for part in expected:
        assert part in str(error.value), str(error.value)


def test_validate_needs_no_train_files(bad_roots: Dict[str, Path]) -> None:
    from shufflenet_pl.input_checks import check_run_config

    check_run_config(_config(bad_roots["random"]), "validate")  # reads val.beton only


def test_imagefolder_batch_larger_than_its_images_is_refused(tmp_path: Path) -> None:
    from shufflenet_pl.errors import InputError
    from shufflenet_pl.input_checks import check_run_config

    root = _tree(tmp_path / "images")  # 6 training images
    config = {"data": {"class_path": "shufflenet_pl.data.ImageFolderDataModule", "init_args": {"root": str(root)}}}
    config["data"]["init_args"]["batch_size"] = 6
    check_run_config(config)
    config["data"]["init_args"]["batch_size"] = 7
    with pytest.raises(InputError, match=r"data.batch_size=7 is larger than the 6 training images in"):
        check_run_config(config)


def _yaml(path: Path, config: Dict[str, Any]) -> Path:
    import yaml

    config = {
        **config,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "default_root_dir": str(path.parent / "run")},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown-key", ["data.init_args.batch_sise: shufflenet_pl.data.FFCVImageNetDataModule has no such"]),
        ("yaml-syntax", ["bad.yaml:2:6: not valid YAML", "fix the file"]),
        ("batch-0", ["data.batch_size must be >= 1, got 0"]),
        ("batch-too-large", ["data.batch_size=7 is larger than the 6 training images"]),
    ],
)
def test_bad_config_is_one_line_and_leaves_nothing(
    tiny_betons: Path,  # noqa: F811
    bad_roots: Dict[str, Path],
    cli_env: dict,
    tmp_path: Path,
    case: str,
    expected: list,
) -> None:
    config = _config(bad_roots.get(case, tiny_betons), {"batch-0": 0, "batch-too-large": 7}.get(case, 2))
    if case == "unknown-key":
        config["data"]["init_args"]["batch_sise"] = config["data"]["init_args"].pop("batch_size")
    config_file = _yaml(tmp_path / "bad.yaml", config)
    if case == "yaml-syntax":
        config_file.write_text("trainer: {max_epochs: 1\n  foo: [\n")
    result = run_cli(["fit", "--config", str(config_file)], cwd=tmp_path, env=cli_env)
    _one_line_error(result, *expected)
    assert "usage:" not in result.stderr and len(result.stderr) < 4000, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no run folder, no W&B run


def _launch(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_launch_runs_the_checks_before_making_a_job_folder(bad_roots: Dict[str, Path], tmp_path: Path) -> None:
    config_file = _yaml(tmp_path / "bad.yaml", _config(bad_roots["no-val"]))
    result = _launch(["--cluster", "local", "--jobs-dir", "jobs", "--config", str(config_file)], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"launch.py: error: data.init_args.root: {bad_roots['no-val'] / 'val.beton'} does not exist; write it "
        f"with `shufflenet-pl convert IMAGEFOLDER_ROOT {bad_roots['no-val']}`"
    ]
    assert not (tmp_path / "jobs").exists()


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning-format checkpoint of the small test network (2 classes), with its checksum."""
    import lightning

    from shufflenet_pl.checkpoints import save_with_checksum
    from shufflenet_pl.models import ShuffleNetV2

    network = ShuffleNetV2([1, 1, 1], SMALL, num_classes=2)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoints" / "last.ckpt"
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    version = lightning.__version__
    save_with_checksum({"state_dict": state, "epoch": 0, "global_step": 0, "pytorch-lightning_version": version}, path)
    return path


def test_resume_of_a_config_edited_to_another_width_is_refused_before_submitting(
    tiny_betons: Path,  # noqa: F811
    small_checkpoint: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "jobs" / "shufflenet-pl-1"
    shutil.copytree(small_checkpoint.parent, folder / "checkpoints")
    _yaml(folder / "config.yaml", _config(tiny_betons, channels=[8, 32, 64, 128, 128]))
    from cluster.resources import Resources

    record = {"executor": "local", "resources": Resources(cpu=True).as_dict(), "wandb_run_id": "abcd1234"}
    (folder / "launch.json").write_text(json.dumps(record))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    result = _launch(["--resume", str(folder)], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    assert "it holds ShuffleNet V2 with stages_out_channels [8, 16, 32, 64, 128]" in errors[0]
    assert "the config builds ShuffleNet V2 with stages_out_channels [8, 32, 64, 128, 128]" in errors[0]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing submitted, no logs/


def test_failed_fit_removes_its_empty_offline_wandb_run_only(
    tiny_betons: Path,  # noqa: F811
    small_checkpoint: Path,
    cli_env: dict,
    tmp_path: Path,
) -> None:
    config = _config(tiny_betons, channels=[8, 32, 64, 128, 128])
    config_file = _yaml(tmp_path / "wide.yaml", config)
    other_run = tmp_path / "run" / "wandb" / "offline-run-20000101_000000-keepme00"
    other_run.mkdir(parents=True)  # another process's run in the same folder stays
    logger = ["--trainer.logger", "shufflenet_pl.tracking.OfflineFirstWandbLogger", "--trainer.logger.project", "bad"]
    env = {**cli_env, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    result = run_cli(
        ["fit", "--config", str(config_file), *logger, "--ckpt_path", str(small_checkpoint)], cwd=tmp_path, env=env
    )
    _one_line_error(result, "does not fit the model", "[8, 32, 64, 128, 128]")
    assert "offline-run-" in result.stderr  # the run had started
    assert "wandb sync" not in result.stderr.splitlines()[-1]
    assert [p.name for p in (tmp_path / "run" / "wandb").iterdir()] == [other_run.name]
    assert not (tmp_path / "run" / "bad").exists()  # nor the run's config copy


def test_convert_lists_a_broken_link_and_skips_it(tmp_path: Path, cli_env: dict) -> None:
    root = _tree(tmp_path / "images")
    link = root / "train" / "a_cls" / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    args = [str(root), str(tmp_path / "out"), "--splits", "train", "--quiet", "--workers", "1"]
    stop = run_cli(["convert", *args], cwd=tmp_path, env=cli_env)
    assert stop.returncode == 2, stop.stderr[-3000:]
    assert "Errno" not in stop.stderr and "Traceback" not in stop.stderr
    assert f"{link}: broken symbolic link (to {tmp_path / 'nowhere.jpg'})" in stop.stderr
    assert not (tmp_path / "out" / "train.beton").exists()
    skip = run_cli(["convert", *args, "--on-error", "skip"], cwd=tmp_path, env=cli_env)
    assert skip.returncode == 0, skip.stderr[-3000:]
    assert f"skipped {link}: broken symbolic link" in skip.stdout
    info = json.loads((tmp_path / "out" / "train.beton.json").read_text())
    assert info["num_images"] == 6 and info["skipped"][0][0] == str(link)
