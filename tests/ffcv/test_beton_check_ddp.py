"""The datamodule's chunk check under real 2-process DDP (a gloo process group): each rank verifies its
own half of the chunks, and rank 0 alone prints the damaged file's line, with every rank's damage in it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.beton_damage import copy_beton, damage_jpegs  # noqa: E402

from shufflenet_pl.data import beton_check  # noqa: E402

RUNNER = r"""
import json, os, sys
import torch.distributed as dist

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

root, out = sys.argv[1:3]
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", rank=rank, world_size=2)
data = FFCVImageNetDataModule(root, batch_size=8, num_workers=1)
data.rank, data.world_size = rank, 2  # what setup() takes from the trainer
data._start_chunk_check(data.train_path)
check = data.chunk_checks[data.train_path]
check.join(60)
whole = check.file_report
row = {"alive": check.is_alive(), "checked": check.report.checked, "total": check.report.total,
       "damaged": check.report.damaged, "line": check.line,
       "file": None if whole is None else {"checked": whole.checked, "images": whole.damage.images}}
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(row, f)
dist.destroy_process_group()
"""

DAMAGED = [3, 17, 50, 81, 120, 150, 177, 199]  # images whose damaged chunks fall to both ranks


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_each_rank_checks_its_share_and_rank_0_prints_the_total(demo_beton_root: Path, tmp_path: Path) -> None:
    beton = copy_beton(demo_beton_root / "train.beton", tmp_path / "data")
    sidecar = beton.with_name("train.beton.json")
    info = json.loads(sidecar.read_text())
    info.update(beton_check.region_checksums(beton, 1024))  # fine chunks: one damaged chunk per image
    sidecar.write_text(json.dumps(info))
    damage_jpegs(beton, DAMAGED, span=8)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "check_runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(beton.parent), str(out)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], outputs
    rows = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    total = rows[0]["total"]
    for rank, row in enumerate(rows):
        assert not row["alive"] and row["checked"] == len(range(rank, total, 2))  # its half of the chunks
        assert row["damaged"] and all(index % 2 == rank for index in row["damaged"]), row["damaged"]
    assert len(rows[0]["damaged"]) + len(rows[1]["damaged"]) == len(DAMAGED)
    assert rows[0]["file"] == {"checked": total, "images": len(DAMAGED)} and rows[1]["file"] is None
    assert rows[1]["line"] is None and "warning:" not in outputs[1][1]  # rank 1 prints nothing
    lines = [line for line in outputs[0][1].splitlines() if line.startswith("warning:")]
    assert lines == [rows[0]["line"]] and lines[0].startswith(f"warning: {beton}: "), outputs[0][1]
    assert f" chunks damaged ({len(DAMAGED)} images)" in lines[0] and "'s share" not in lines[0], lines[0]
