"""Atomic writes: the destination holds the old file or the new one, never a torn one, and no
temporary file stays behind."""

from pathlib import Path

import pytest

from shufflenet_pl.files import atomic_write, write_bytes, write_text


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_text(target, "old")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    write_bytes(target, b"good")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
