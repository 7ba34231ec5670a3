"""The box-only JPEG decode kernel (``jpeg_box.c``): compiled on first use, loaded for numba.

The C source is compiled with the system's C compiler against libjpeg (libjpeg-turbo's libjpeg API:
``jpeg_crop_scanline``, ``jpeg_skip_scanlines``) into the JIT cache folder (see
:mod:`shufflenet_pl.data.jit_cache`), once per source version; every later process loads that
library. Several processes may build at once (ranks of a job): each builds under a private name and
renames it into place. The library is loaded with its symbol visible to numba's linker, so compiled
decode kernels call it by name and stay cacheable on disk.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from llvmlite import binding as llvm

from shufflenet_pl.data.jit_cache import cache_dir

__all__ = ["SYMBOL", "load"]

SYMBOL = "shufflenet_pl_jpeg_box"
SOURCE = Path(__file__).with_name("jpeg_box.c")
_loaded: Optional[Path] = None


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
    command = [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), "-x", "c", str(SOURCE), "-x", "none", "-ljpeg"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImportError(
            f"could not compile {SOURCE} with {compiler} (it needs libjpeg's headers and library: "
            f"Debian/Ubuntu libjpeg-dev, which bash setup.sh installs): {result.stderr.strip()}"
        )
    os.replace(partial, target)


def load() -> Path:
    """Build the kernel if needed, load it and make :data:`SYMBOL` visible to numba; returns its path."""
    global _loaded
    if _loaded is not None:
        return _loaded
    version = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    folder = cache_dir()
    private = folder is None  # caching off: a build of this process's own, removed once loaded
    if private:
        folder = Path(tempfile.mkdtemp(prefix="shufflenet-pl-jpeg-"))
    # Per source version and processor (a home folder may be shared by machines of other kinds).
    library = folder / f"jpeg_box-{version}-{platform.machine()}.so"
    try:
        if not library.is_file():
            _build(library)
        try:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        except OSError:  # built elsewhere against another libjpeg: rebuild here, in place
            _build(library)
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        llvm.load_library_permanently(str(library))
    finally:
        if private:
            shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped
    _loaded = library
    return library
