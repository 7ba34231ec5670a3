"""The built-in demo set: written once, atomically, also when several processes prepare it at once
(Lightning runs ``prepare_data`` on local rank 0 of every node, and nodes may share a filesystem)."""

import json
import multiprocessing
from pathlib import Path

import pytest

from shufflenet_pl.data.demo import DEMO_CLASSES, make_demo_dataset

SMALL = {"train_per_class": 3, "val_per_class": 1, "progress": False}


def _prepare(root: str, start: "multiprocessing.synchronize.Barrier", errors: "multiprocessing.Queue") -> None:
    start.wait()
    try:
        make_demo_dataset(root, **SMALL)
    except BaseException as err:  # reported to the test, which names it
        errors.put(repr(err))


def test_processes_preparing_the_same_root_at_once_end_with_one_complete_set(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    context = multiprocessing.get_context("fork")
    start, errors = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_prepare, args=(str(root), start, errors)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    reported = [errors.get(timeout=5) for _ in range(errors.qsize())] if not errors.empty() else []
    assert reported == [] and [w.exitcode for w in workers] == [0, 0, 0]
    for split, per_class in (("train", 3), ("val", 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(DEMO_CLASSES)
        assert all(len(list((root / split / label).glob("*.jpg"))) == per_class for label in DEMO_CLASSES)
    assert json.loads((root / "demo_manifest.json").read_text())["train_per_class"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folders left behind


def test_a_folder_that_is_not_a_demo_set_is_refused_not_deleted(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("data")
    with pytest.raises(FileExistsError, match="is not a demo dataset"):
        make_demo_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "data"


def test_other_settings_regenerate_the_set(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path / "demo", **SMALL)
    make_demo_dataset(root, train_per_class=2, val_per_class=1, progress=False)
    assert all(len(list((root / "train" / label).glob("*.jpg"))) == 2 for label in DEMO_CLASSES)
    assert json.loads((root / "demo_manifest.json").read_text())["train_per_class"] == 2
