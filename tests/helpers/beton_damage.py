"""Damage written into a real ``.beton``: random bytes over the middle of some JPEG images' entropy-coded
data, as a bad disk or a bad copy leaves them (the file's size, header and tables intact)."""

import shutil
from pathlib import Path
from typing import List

import numpy as np


def copy_beton(beton: Path, folder: Path) -> Path:
    """``beton`` and its sidecar copied into ``folder``; returns the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(beton, folder / beton.name)
    shutil.copy(beton.with_name(beton.name + ".json"), folder / (beton.name + ".json"))
    return folder / beton.name


def damage_jpegs(beton: Path, images: List[int], span: int = 64, seed: int = 0) -> None:
    """Overwrite ``span`` bytes in the middle of each listed image's JPEG data with random bytes."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    sizes = {int(p): int(s) for p, s in zip(reader.alloc_table["ptr"], reader.alloc_table["size"])}
    rng = np.random.default_rng(seed)
    with open(beton, "r+b") as handle:
        for index in images:
            start = int(reader.metadata["f0"][index]["data_ptr"])
            handle.seek(start + sizes[start] // 2 - span // 2)
            handle.write(rng.integers(0, 256, span, dtype=np.uint8).tobytes())
