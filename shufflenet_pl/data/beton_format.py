"""What a complete ``.beton`` looks like, as the converter writes it and the readers check it: its byte
count recorded in the sidecar ``<name>.beton.json``, and FFCV's allocation table, written last, where
the header points."""

import json
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["TruncatedBetonError", "check_beton_complete"]


class TruncatedBetonError(InputError):
    """A ``.beton`` is shorter than its header or its sidecar says (an interrupted copy)."""


def check_beton_complete(beton: Path) -> None:
    """Refuse a ``.beton`` that is shorter than it should be, in a few reads and before any loader
    starts: its byte count must equal the one its sidecar ``<name>.beton.json`` records, and the
    file must hold the allocation table that its header points to (FFCV writes that last).

    Raises:
        TruncatedBetonError: naming the file and both sizes.
    """
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType

    size = beton.stat().st_size
    sidecar = beton.with_name(beton.name + ".json")
    fix = "write it again (shufflenet-pl convert ... --force) or copy it again"
    if sidecar.is_file():
        recorded = json.loads(sidecar.read_text()).get("bytes")
        if recorded is not None and recorded != size:
            state = "truncated" if size < recorded else "longer than written"
            raise TruncatedBetonError(f"{beton} is {state}: {size} bytes, but {sidecar.name} records {recorded}; {fix}")
    if size < HeaderType.itemsize:
        raise TruncatedBetonError(f"{beton} is truncated: {size} bytes, shorter than an FFCV header; {fix}")
    header = np.fromfile(beton, dtype=HeaderType, count=1)[0]
    table_end = int(header["alloc_table_ptr"]) + (ALLOC_TABLE_TYPE.itemsize if int(header["num_samples"]) else 0)
    if size < table_end:
        raise TruncatedBetonError(
            f"{beton} is truncated: {size} bytes, but its header places data up to byte {table_end}; {fix}"
        )
