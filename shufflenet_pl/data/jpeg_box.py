"""The box-only JPEG decode kernel (``jpeg_box.c``): prebuilt by ``setup.sh`` or compiled on first
use, loaded for numba.

``bash setup.sh`` builds the library once, for the processor family without ``-march=native``, into
the folder next to the environment (:func:`prebuilt_dir`: ``<venv>/share/shufflenet-pl``), which
compute nodes read through the same file system; a node without a compiler loads it from there
(``python -m shufflenet_pl.data.jpeg_box`` builds it again). Without a prebuilt library for this
source version and processor, the C source is compiled with the system's C compiler against libjpeg
(libjpeg-turbo's libjpeg API: ``jpeg_crop_scanline``, ``jpeg_skip_scanlines``) into the JIT cache
folder (see :mod:`shufflenet_pl.data.jit_cache`), once per source version; every later process loads
that library. Several processes may build at once (ranks of a job): each builds under a private name and
renames it into place. The library is loaded with its symbol visible to numba's linker, so compiled
decode kernels call it by name and stay cacheable on disk.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from llvmlite import binding as llvm

from shufflenet_pl.data.jit_cache import cache_dir

__all__ = ["PREBUILT_ENV", "SYMBOL", "library_name", "load", "prebuild", "prebuilt_dir"]

SYMBOL = "shufflenet_pl_jpeg_box"
SOURCE = Path(__file__).with_name("jpeg_box.c")
#: A folder that holds the prebuilt library instead of the environment's own (a site-wide copy).
PREBUILT_ENV = "SHUFFLENET_PL_PREBUILT"
_loaded: Optional[Path] = None


def library_name() -> str:
    """The library's file name: per source version and processor (a home folder, or a shared
    environment, may be read by machines of other kinds)."""
    version = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return f"jpeg_box-{version}-{platform.machine()}.so"


def prebuilt_dir() -> Path:
    """Where ``setup.sh`` puts the prebuilt library: ``$SHUFFLENET_PL_PREBUILT``, else
    ``<environment>/share/shufflenet-pl``."""
    value = os.environ.get(PREBUILT_ENV, "").strip()
    return Path(value).expanduser() if value else Path(sys.prefix) / "share" / "shufflenet-pl"


def _rebuild_hint() -> str:
    return f"'bash setup.sh' or '{Path(sys.executable).name} -m shufflenet_pl.data.jpeg_box'"


def _prefix_flags() -> list:
    """An active conda environment's headers and libjpeg, found at run time too (rpath)."""
    prefix = os.environ.get("CONDA_PREFIX")
    if not prefix:
        return []
    return [f"-I{prefix}/include", f"-L{prefix}/lib", f"-Wl,-rpath,{prefix}/lib"]


def _build(target: Path) -> None:
    compilers = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "g++"]
    compiler = next((shutil.which(name) for name in compilers if shutil.which(name)), None)
    if compiler is None:
        raise ImportError(
            f"the FFCV decode stage compiles a small C kernel and needs a C compiler "
            f"(tried {', '.join(compilers)}; set CC)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Private per process and host: ranks on several nodes may share this folder (and their pids).
    partial = target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    # "-x c": the source is C whichever driver compiles it (g++ would otherwise mangle libjpeg's names).
    # Portable: the processor family's baseline, no -march=native. LDFLAGS carries setup.sh's rpath.
    command = [compiler, "-O2", "-shared", "-fPIC", *_prefix_flags(), "-o", str(partial), "-x", "c", str(SOURCE)]
    command += ["-x", "none", *shlex.split(os.environ.get("LDFLAGS", "")), "-ljpeg"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImportError(
            f"could not compile {SOURCE} with {compiler} (it needs libjpeg's headers and library, from "
            f"libjpeg-turbo: 'bash setup.sh --check' says what is missing): {result.stderr.strip()}"
        )
    os.replace(partial, target)


def prebuild(folder: Optional[Path] = None) -> Path:
    """Build the library into ``folder`` (default :func:`prebuilt_dir`), removing the ones of older
    source versions for this processor, and check that it loads; returns its path."""
    folder = prebuilt_dir() if folder is None else folder
    library = folder / library_name()
    _build(library)
    _load_library(library)
    for old in folder.glob(f"jpeg_box-*-{platform.machine()}.so"):
        if old != library:
            old.unlink(missing_ok=True)
    return library


def _load_library(library: Path) -> None:
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def load() -> Path:
    """Load the prebuilt kernel, or build it if needed, and make :data:`SYMBOL` visible to numba;
    returns its path.

    Raises:
        ImportError: a prebuilt library that does not load here (one line naming it and how to
            rebuild it), or no compiler / libjpeg to build one.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    prebuilt = prebuilt_dir() / library_name()
    if prebuilt.is_file():
        try:
            _load_library(prebuilt)
        except OSError as err:
            reason = str(err).replace(f"{prebuilt}: ", "").splitlines()[0]
            raise ImportError(f"{prebuilt}: does not load here ({reason}); rebuild it with {_rebuild_hint()}") from None
        llvm.load_library_permanently(str(prebuilt))
        _loaded = prebuilt
        return prebuilt
    folder = cache_dir()
    private = folder is None  # caching off: a build of this process's own, removed once loaded
    if private:
        folder = Path(tempfile.mkdtemp(prefix="shufflenet-pl-jpeg-"))
    library = folder / library_name()
    try:
        if not library.is_file():
            _build(library)
        try:
            _load_library(library)
        except OSError:  # built elsewhere against another libjpeg: rebuild here, in place
            _build(library)
            _load_library(library)
        llvm.load_library_permanently(str(library))
    finally:
        if private:
            shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped
    _loaded = library
    return library


def main() -> None:
    """``python -m shufflenet_pl.data.jpeg_box [FOLDER]``: build the prebuilt library (``setup.sh`` runs it)."""
    try:
        library = prebuild(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    except (ImportError, OSError) as err:
        print(f"error: {SOURCE}: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"box kernel built for {platform.machine()}: {library}")


if __name__ == "__main__":
    main()
