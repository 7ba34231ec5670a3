"""The numba finalizer filter drops exactly its KeyError and lets every other exception through."""

import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("numba")

SCRIPT = r"""
import gc, sys
import numba
from shufflenet_pl.data import quiet_numba

@numba.njit
def twice(x):
    return 2 * x

twice(1)
# Break the dispatcher's overload table the way that makes its finalizer raise KeyError while
# iterating it (a key gone from the dict but not from the ordered index).
overloads = twice.overloads
key = next(iter(overloads))
dict.__delitem__(overloads, key)
del twice
gc.collect()

class Other:
    def __del__(self):
        raise ValueError("an unrelated error in __del__")

o = Other()
del o
gc.collect()
print("done", flush=True)
"""


def test_numba_finalizer_keyerror_is_silenced_and_nothing_else() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert "KeyError" not in result.stderr, result.stderr
    assert "ValueError: an unrelated error in __del__" in result.stderr  # other errors still show


def test_without_the_filter_the_keyerror_would_show() -> None:
    script = SCRIPT.replace("from shufflenet_pl.data import quiet_numba", "")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert "KeyError" in result.stderr and "dispatcher.py" in result.stderr, result.stderr
