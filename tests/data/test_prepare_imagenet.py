"""`shufflenet-pl prepare-imagenet` on a small fake validation folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

from shufflenet_pl.cli import main
from shufflenet_pl.data import prepare_imagenet as prep
from shufflenet_pl.data.prepare_imagenet import PrepareError, prepare_imagenet

# ILSVRC2012_ID -> wnid (the devkit's IDs are not in wnid order) and image number -> ID
SYNSETS = {1: "n02119789", 2: "n01440764", 3: "n09999999"}
GROUND_TRUTH = [1, 2, 2, 3, 1, 3, 2]


def image_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}"


@pytest.fixture()
def flat(tmp_path: Path) -> Path:
    val = tmp_path / "imagenet" / "val"
    val.mkdir(parents=True)
    for number in range(1, len(GROUND_TRUTH) + 1):
        (val / f"{image_name(number)}.JPEG").write_bytes(f"jpeg {number}".encode())
    return val


@pytest.fixture()
def solution_csv(tmp_path: Path) -> Path:
    path = tmp_path / "LOC_val_solution.csv"
    rows = [f"{image_name(n)},{SYNSETS[c]} 1 2 3 4 {SYNSETS[c]} 5 6 7 8" for n, c in enumerate(GROUND_TRUTH, 1)]
    path.write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    return path


@pytest.fixture()
def devkit(tmp_path: Path) -> Dict[str, Path]:
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("\n".join(map(str, GROUND_TRUTH)) + "\n")
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("\n".join(f"{SYNSETS[i]} some name" for i in sorted(SYNSETS)) + "\n")
    return {"labels": truth, "meta": synsets}


def expected_tree() -> Dict[str, set]:
    tree: Dict[str, set] = {}
    for number, class_id in enumerate(GROUND_TRUTH, 1):
        tree.setdefault(SYNSETS[class_id], set()).add(f"{image_name(number)}.JPEG")
    return tree


def tree_of(root: Path) -> Dict[str, set]:
    return {d.name: {f.name for f in d.iterdir()} for d in root.iterdir()}


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_sorts_in_place_from_solution_csv(flat: Path, solution_csv: Path) -> None:
    counts = prepare_imagenet(flat, solution_csv, progress=False)
    assert tree_of(flat) == expected_tree()
    assert counts == {wnid: len(files) for wnid, files in expected_tree().items()}
    assert (flat / "n01440764" / f"{image_name(2)}.JPEG").read_bytes() == b"jpeg 2"
    assert no_leftovers(flat.parent)


def test_devkit_ground_truth_into_out_with_hardlinks(flat: Path, devkit: Dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sorted_val"
    prepare_imagenet(flat, devkit["labels"], devkit["meta"], out=out, link="hardlink", progress=False)
    assert tree_of(out) == expected_tree()
    assert len(list(flat.iterdir())) == len(GROUND_TRUTH)  # the flat folder is kept
    source, linked = flat / f"{image_name(4)}.JPEG", out / "n09999999" / f"{image_name(4)}.JPEG"
    assert os.stat(source).st_ino == os.stat(linked).st_ino
    assert no_leftovers(tmp_path)


def test_symlinks_and_copies(flat: Path, solution_csv: Path, tmp_path: Path) -> None:
    prepare_imagenet(flat, solution_csv, out=tmp_path / "links", link="symlink", progress=False)
    link = tmp_path / "links" / "n02119789" / f"{image_name(1)}.JPEG"
    assert link.is_symlink() and link.read_bytes() == b"jpeg 1"
    prepare_imagenet(flat, solution_csv, out=tmp_path / "copies", link="copy", progress=False)
    assert tree_of(tmp_path / "copies") == expected_tree()
    with pytest.raises(PrepareError, match="symlink in place"):
        prepare_imagenet(flat, solution_csv, link="symlink", progress=False)


def test_devkit_meta_mat(flat: Path, devkit: Dict[str, Path], tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    import numpy as np

    # meta.mat also lists the non-leaf synsets (IDs > 1000, with children), which are not classes
    records = [(i, w, 0) for i, w in SYNSETS.items()] + [(1001, "n00001740", 3)]
    synsets = np.array(records, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    meta = tmp_path / "meta.mat"
    scipy_io.savemat(str(meta), {"synsets": synsets})
    prepare_imagenet(flat, devkit["labels"], meta, progress=False)
    assert tree_of(flat) == expected_tree()


def assert_untouched(flat: Path) -> None:
    assert sorted(p.name for p in flat.iterdir()) == [f"{image_name(n)}.JPEG" for n in range(1, len(GROUND_TRUTH) + 1)]
    assert no_leftovers(flat.parent)


def test_refuses_missing_images(flat: Path, solution_csv: Path) -> None:
    (flat / f"{image_name(3)}.JPEG").unlink()
    with pytest.raises(PrepareError, match=r"1 of its 7 images are not in .*ILSVRC2012_val_00000003"):
        prepare_imagenet(flat, solution_csv, progress=False)


def test_refuses_unlabelled_files_and_unknown_ids(flat: Path, solution_csv: Path, devkit: Dict[str, Path]) -> None:
    (flat / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"x")
    with pytest.raises(PrepareError, match="1 of its 8 files have no label"):
        prepare_imagenet(flat, solution_csv, progress=False)
    (flat / "ILSVRC2012_val_00000099.JPEG").unlink()
    devkit["labels"].write_text("1\n2\n2\n7\n1\n3\n2\n")
    with pytest.raises(PrepareError, match=r":4: class id 7 is unknown"):
        prepare_imagenet(flat, devkit["labels"], devkit["meta"], progress=False)
    with pytest.raises(PrepareError, match="pass --meta"):
        prepare_imagenet(flat, devkit["labels"], progress=False)
    assert_untouched(flat)


def test_refuses_a_sorted_folder_and_a_bad_csv(flat: Path, solution_csv: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,255 142\n")
    with pytest.raises(PrepareError, match=r"bad.csv:2: .* no wnid"):
        prepare_imagenet(flat, bad, progress=False)
    prepare_imagenet(flat, solution_csv, progress=False)
    with pytest.raises(PrepareError, match="looks sorted already"):
        prepare_imagenet(flat, solution_csv, progress=False)


@pytest.mark.parametrize("link", ["move", "hardlink"])
def test_an_error_midway_leaves_the_flat_folder_as_it_was(
    flat: Path, solution_csv: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    real_place, calls = prep._place, []

    def failing_place(source: Path, target: Path, mode: str) -> None:
        calls.append(source)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        real_place(source, target, mode)

    monkeypatch.setattr(prep, "_place", failing_place)
    with pytest.raises(OSError, match="No space left"):
        prepare_imagenet(flat, solution_csv, link=link, progress=False)
    assert_untouched(flat)
    assert (flat / f"{image_name(1)}.JPEG").read_bytes() == b"jpeg 1"


def test_command_line(flat: Path, solution_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-imagenet", str(flat), "--labels", str(solution_csv.with_name("nope.csv"))])
    assert exit_info.value.code == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    main(["prepare-imagenet", str(flat), "--labels", str(solution_csv), "--no-progress"])
    assert "7 images in 3 class folders (2-3 per class)" in capsys.readouterr().out
    assert tree_of(flat) == expected_tree()
