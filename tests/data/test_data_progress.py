"""The converter's progress: one bar per split on a terminal, a plain line every 10 % in a log,
never FFCV's own bars."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shufflenet_pl.data.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _two_phases(stream: io.StringIO, interactive: bool, total: int = 40) -> None:
    display = Progress("train", stream=stream, interactive=interactive)
    for phase in ("check", "write"):
        display.phase(phase, total)
        for _ in range(total):
            display.update()
        display.close()
    display.finish()


def test_log_gets_a_line_every_ten_percent_of_each_phase() -> None:
    log = io.StringIO()
    _two_phases(log, interactive=False)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    percents = [(m.group(1), int(m.group(2))) for m in (re.match(r"train: (\w+) +(\d+) % \(", x) for x in lines) if m]
    assert len(percents) == len(lines) == 20
    assert percents == [(phase, p) for phase in ("check", "write") for p in range(10, 101, 10)]
    assert lines[-1].startswith("train: write 100 % (40/40 img, ")


def test_log_lines_for_uneven_updates_and_a_single_item() -> None:
    log = io.StringIO()
    display = Progress("val", stream=log, interactive=False).phase("write", 7)
    display.update(3)  # 42 %: one line for 40 %, none for 10-30 % (they passed within one update)
    display.update(4)
    display.close()
    display.close()  # the FFCV writer and the converter both end the phase: one 100 % line
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == ["val: write  40 %", "val: write 100 %"]


def test_terminal_gets_one_bar_for_all_phases() -> None:
    terminal = _Terminal()
    _two_phases(terminal, interactive=True)
    text = terminal.getvalue()
    assert text.count("\n") == 1  # one bar, redrawn in place and left standing at the end
    assert "train: write" in text.splitlines()[-1].split("\r")[-1]
    assert "40/40" in text.split("\r")[-1]


@pytest.mark.slow
def test_convert_prints_lines_not_ffcv_bars_into_a_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
    from shufflenet_pl.data.convert import convert_split

    rng = np.random.default_rng(0)
    split = tmp_path / "train"
    for label in ("a", "b"):
        (split / label).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(split / label / f"{i}.jpg")
    convert_split(split, tmp_path / "train.beton", max_side=24, num_workers=2, progress=True)
    err = capfd.readouterr().err  # a pipe, as in a job's log
    assert "\r" not in err and "it/s" not in err, err
    lines = [line.split(" (")[0] for line in err.splitlines() if line.startswith("train: ")]
    # One pass decodes and writes; FFCV reports written images in chunks: a line for each 10 % step a
    # chunk passes, then 100 %.
    written = [int(line.split()[-2]) for line in lines]
    assert all(line.startswith("train: write") for line in lines) and written[-1] == 100, err
    assert written == sorted(set(written)) and all(p % 10 == 0 for p in written), err
