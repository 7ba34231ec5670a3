"""Damage written into a real ``.beton``, as a bad disk or a bad copy leaves it (the file's size intact):
random bytes over the middle of some JPEG images' entropy-coded data, or one inverted byte in a part of
the file's index."""

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


def damage_index(beton: Path, part: str) -> int:
    """Invert one byte inside a part of ``beton``'s index, found through FFCV's own header types:
    ``header`` (the header and field descriptors), ``metadata`` (the sixth image's row) or ``alloc_table``;
    returns the byte's offset."""
    from ffcv.types import FieldDescType, HeaderType

    header = np.fromfile(beton, dtype=HeaderType, count=1)[0]
    metadata_start = HeaderType.itemsize + int(header["num_fields"]) * FieldDescType.itemsize
    offset = {
        "header": HeaderType.itemsize + 3,  # inside the first field descriptor
        "metadata": metadata_start + 5 * 40 + 3,  # a row is some tens of bytes: inside the first rows
        "alloc_table": int(header["alloc_table_ptr"]) + 30,
    }[part]
    with open(beton, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))
    return offset
