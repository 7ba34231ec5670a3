"""The on-disk cache of the FFCV pipelines' numba code (shufflenet_pl/data/jit_cache.py): its key is
stable across processes, it lives where the docs say, and a second start of the datamodule's
pipelines in a fresh process skips the JIT (its one timing assertion)."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from numba import njit  # noqa: E402

from shufflenet_pl.data import jit_cache  # noqa: E402


def _closure(table: np.ndarray, callee):  # the shape of an FFCV operation's generate_code
    def op(x):
        return callee(x) + table[0]

    return op


def _add_one(x):
    return x + 1


def test_cache_key_is_stable_for_equal_closures_and_differs_for_other_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dispatchers of the same function (each with its own random uuid, as in two processes)
    and equal arrays give one key; another array content gives another."""
    monkeypatch.setenv(jit_cache.ENV, str(tmp_path))
    cache_class = jit_cache._make_cache_class()
    table = np.arange(4.0)
    first = cache_class(_closure(table, njit(_add_one)))
    second = cache_class(_closure(table.copy(), njit(_add_one)))
    other = cache_class(_closure(table + 1, njit(_add_one)))
    assert first._closure_digest == second._closure_digest
    assert first._closure_digest != other._closure_digest
    assert Path(first.cache_path).parent == tmp_path


def test_cache_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jit_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert jit_cache.cache_dir() == tmp_path / "shufflenet-pl" / "numba"
    monkeypatch.setenv(jit_cache.ENV, str(tmp_path / "mine"))
    assert jit_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv(jit_cache.ENV, "off")
    assert jit_cache.cache_dir() is None
    with jit_cache.pipeline_cache():
        assert not jit_cache.caching_enabled()


def test_compile_outside_the_context_is_ffcv_s_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ffcv.pipeline.compiler import Compiler

    monkeypatch.setenv(jit_cache.ENV, str(tmp_path))
    with jit_cache.pipeline_cache():
        cached = Compiler.compile(_closure(np.zeros(1), njit(_add_one)))
        assert jit_cache.caching_enabled()
    plain = Compiler.compile(_closure(np.zeros(1), njit(_add_one)))
    assert cached(1.0) == plain(1.0) == 2.0
    assert isinstance(cached._cache, jit_cache._make_cache_class().__mro__[1])  # a numba FunctionCache
    assert type(plain._cache).__name__ == "NullCache"
    assert list(tmp_path.rglob("*.nbi"))  # the cached one was stored


@pytest.mark.slow
def test_second_start_of_the_pipelines_skips_the_jit(demo_beton_root: Path, tmp_path: Path) -> None:
    """Fresh processes, one cache folder: the first start compiles (10-17 s of numba per loader on
    a small CPU), the second loads the code: <= 3 s for both loaders' warm-up, and far below the first."""
    from benchmarks.data_startup import start_once

    cache = tmp_path / "cache"
    first = start_once(demo_beton_root, cache)
    second = start_once(demo_beton_root, cache)
    print(
        f"pipeline warm-up, train + val loader: first start {first['warmup_s']:.2f} s "
        f"(train {first['train_s']:.2f}, val {first['val_s']:.2f}), second start {second['warmup_s']:.2f} s "
        f"(train {second['train_s']:.2f}, val {second['val_s']:.2f}); import of the datamodule "
        f"{first['import_s']:.2f} s, then {second['import_s']:.2f} s"
    )
    assert list(cache.rglob("*.nbi"))
    assert second["warmup_s"] <= 3.0, (first, second)
    assert second["warmup_s"] < first["warmup_s"] / 3, (first, second)


def test_index_keeps_the_newest_entries_in_files_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each distinct closure (here: a different table) adds an entry with a data file of its own;
    beyond MAX_ENTRIES the oldest entry and its file go; what is kept still loads."""
    from ffcv.pipeline.compiler import Compiler

    monkeypatch.setenv(jit_cache.ENV, str(tmp_path))
    monkeypatch.setattr(jit_cache, "MAX_ENTRIES", 3)
    with jit_cache.pipeline_cache():
        for value in range(5):
            assert Compiler.compile(_closure(np.full(1, float(value)), njit(_add_one)))(1.0) == 2.0 + value
    (index,) = [p for p in tmp_path.rglob("*.nbi") if "_closure" in p.name]
    data_files = sorted(index.parent.glob(index.name[: -len(".nbi")] + ".*.nbc"))
    assert len(data_files) == 3
    with jit_cache.pipeline_cache():
        newest = Compiler.compile(_closure(np.full(1, 4.0), njit(_add_one)))
        oldest = Compiler.compile(_closure(np.full(1, 0.0), njit(_add_one)))
    assert newest(1.0) == 6.0 and oldest(1.0) == 2.0
    assert sum(newest.stats.cache_hits.values()) == 1 and sum(oldest.stats.cache_hits.values()) == 0


def _import_decode_stage(env: dict) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", "import shufflenet_pl.data.ffcv_decode"],
        capture_output=True,
        text=True,
        timeout=300,
        # No prebuilt library (setup.sh puts one next to the environment): these build into the cache.
        env={**os.environ, "SHUFFLENET_PL_PREBUILT": "/nonexistent", **env},
        cwd=Path(__file__).resolve().parents[2],
    )


def test_box_kernel_is_built_once_into_the_cache_folder(tmp_path: Path) -> None:
    """A fresh cache folder gets the compiled box kernel (and no temporaries); the next process loads
    it without a compiler; a failed build is one ImportError naming the compiler."""
    first = _import_decode_stage({jit_cache.ENV: str(tmp_path)})
    assert first.returncode == 0, first.stderr
    built = sorted(p.name for p in tmp_path.iterdir() if "jpeg_box" in p.name)
    assert len(built) == 1 and built[0].endswith(".so"), built
    again = _import_decode_stage({jit_cache.ENV: str(tmp_path), "CC": "/nonexistent/cc"})
    assert again.returncode == 0, again.stderr  # loaded, not rebuilt
    library = tmp_path / built[0]
    library.write_bytes(b"not a library")  # e.g. built by another machine against another libjpeg
    rebuilt = _import_decode_stage({jit_cache.ENV: str(tmp_path)})
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert library.read_bytes()[:4] == b"\x7fELF"
    failed = _import_decode_stage({jit_cache.ENV: str(tmp_path / "empty"), "CC": "/nonexistent/cc"})
    assert failed.returncode != 0
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "ImportError: the FFCV decode stage compiles a small C kernel and needs a C compiler (tried /nonexistent/cc"
        )
    )


def test_box_kernel_without_a_cache_folder_leaves_nothing_behind(tmp_path: Path) -> None:
    result = _import_decode_stage({jit_cache.ENV: "off", "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def _load_box_kernel(env: dict) -> "subprocess.CompletedProcess[str]":
    import os
    import sys

    code = "from shufflenet_pl.data import jpeg_box; print(jpeg_box.load())"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
    )


def test_prebuilt_box_kernel_serves_a_node_without_a_compiler(tmp_path: Path) -> None:
    """``setup.sh``'s prebuild (``python -m shufflenet_pl.data.jpeg_box FOLDER``) is what a process
    loads when it has no compiler and an empty JIT cache; a prebuilt file that does not load is one
    line naming it and how to rebuild it."""
    import platform
    import sys

    from shufflenet_pl.data import jpeg_box

    prebuilt = tmp_path / "share"
    stale = prebuilt / f"jpeg_box-0000000000000000-{platform.machine()}.so"
    prebuilt.mkdir()
    stale.write_bytes(b"an older source version")
    built = subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.data.jpeg_box", str(prebuilt)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    library = prebuilt / jpeg_box.library_name()
    assert sorted(prebuilt.iterdir()) == [library]  # the older version is gone
    no_compiler = {jpeg_box.PREBUILT_ENV: str(prebuilt), jit_cache.ENV: str(tmp_path / "c"), "CC": "/nonexistent/cc"}
    loaded = _load_box_kernel(no_compiler)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == str(library)
    assert not (tmp_path / "c").exists()  # nothing built into the JIT cache
    library.write_bytes(b"not a library")  # a copy that this node cannot load
    broken = _load_box_kernel({**no_compiler, "CC": ""})
    assert broken.returncode != 0
    last = broken.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: {library}: does not load here (")
    assert last.endswith("; rebuild it with 'bash setup.sh' or 'python -m shufflenet_pl.data.jpeg_box'"), last
