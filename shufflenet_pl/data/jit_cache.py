"""An on-disk cache for the numba code of FFCV pipelines, so that a second start skips the JIT.

FFCV compiles every operation of a Loader's pipelines with numba on the Loader's first epoch
(``ffcv.pipeline.compiler.Compiler.compile``: a plain ``njit`` of a closure that each operation's
``generate_code`` returns). That costs 10-17 s per loader on a small CPU and is paid again by every
process: every ``validate``, every DDP rank, every requeued job. numba's own ``cache=True`` cannot
be switched on there as it is: its index key pickles the closure's variables, and a closure that
holds another jitted function (FFCV's page reader, its decoders) pickles that dispatcher's random
``uuid``, so the key differs in every process and the cache never hits.

:func:`pipeline_cache` is a context in which ``Compiler.compile`` gives each operation a numba
:class:`numba.core.caching.FunctionCache` whose key is a stable fingerprint of the closure instead
(code, constants, arrays by content, nested jitted functions by their own fingerprint), stored
under :func:`cache_dir`. numba itself checks the source file of each function (a content hash),
its own version and the CPU, so a changed file or another machine compiles afresh. The files are
written to a temporary name and renamed, so concurrent ranks on one node can share the folder.

:func:`cache_typed_containers` does the same for numba's typed ``Dict`` helpers, which importing
FFCV compiles (3-5 s of every start before any pipeline exists).

Operations whose code calls a ``ctypes`` function (FFCV's stock JPEG decoders call libffcv through
ctypes) embed a process-specific address and stay uncached: numba refuses them, silently here.

Where the cache lives: ``$SHUFFLENET_PL_JIT_CACHE`` if set (``off`` disables it), else
``$XDG_CACHE_HOME/shufflenet-pl/numba`` or ``~/.cache/shufflenet-pl/numba``. Deleting the folder
is always safe (the next start compiles again).
"""

import contextlib
import hashlib
import os
import pickle
import threading
import types
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import numpy as np

__all__ = ["cache_dir", "cache_typed_containers", "pipeline_cache", "caching_enabled", "caching_compile"]

ENV = "SHUFFLENET_PL_JIT_CACHE"
#: Newest entries kept per compiled function (one per distinct closure: pipeline settings, sizes).
MAX_ENTRIES = 16
_state = threading.local()
_installed = False
_original_compile: Optional[Callable] = None


def cache_dir() -> Optional[Path]:
    """The folder of the cache, or ``None`` when ``SHUFFLENET_PL_JIT_CACHE=off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no", "none"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shufflenet-pl" / "numba"


def caching_enabled() -> bool:
    """True inside :func:`pipeline_cache` (in this thread) with a cache folder configured."""
    return bool(getattr(_state, "depth", 0)) and cache_dir() is not None


class _Uncacheable(Exception):
    """A closure holds something without a stable fingerprint."""


def _code_fingerprint(code: types.CodeType, update: Callable[[bytes], None]) -> None:
    update(code.co_code)
    update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_fingerprint(const, update)
        else:
            update(repr(const).encode())


def _fingerprint(value: Any, update: Callable[[bytes], None], depth: int = 0) -> None:
    """Feed a process-independent description of ``value`` to ``update`` (a hash)."""
    from numba.core.dispatcher import Dispatcher

    if depth > 20:
        raise _Uncacheable("nesting too deep")
    if isinstance(value, Dispatcher):
        update(b"dispatcher")
        update(repr(sorted(value.targetoptions.items())).encode())
        if not value._can_compile:  # compiled for fixed signatures: they are part of what it does
            update(repr(sorted(str(s) for s in value.signatures)).encode())
        _fingerprint(value.py_func, update, depth + 1)
    elif isinstance(value, types.FunctionType):
        update(f"function {value.__module__}.{value.__qualname__}".encode())
        _code_fingerprint(value.__code__, update)
        for cell in value.__closure__ or ():
            _fingerprint(cell.cell_contents, update, depth + 1)
    elif isinstance(value, np.ndarray):  # numba freezes closure arrays into the code: key on content
        update(f"array {value.dtype.str} {value.shape}".encode())
        update(hashlib.sha256(np.ascontiguousarray(value).view(np.uint8).reshape(-1).data).digest())
    elif isinstance(value, (tuple, list)):
        update(f"{type(value).__name__} {len(value)}".encode())
        for item in value:
            _fingerprint(item, update, depth + 1)
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic, np.dtype)):
        update(f"{type(value).__name__} {value!r}".encode())
    elif isinstance(value, (type, types.BuiltinFunctionType)) or callable(value) and hasattr(value, "__qualname__"):
        update(f"global {getattr(value, '__module__', '')}.{value.__qualname__}".encode())  # prange, range, classes
    else:
        try:
            update(pickle.dumps(value, protocol=4))
        except Exception as error:  # noqa: BLE001 - anything unpicklable simply stays uncached
            raise _Uncacheable(f"{type(value).__name__}: {error}") from error


def _make_cache_class() -> type:
    from numba.core import caching

    class _Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Everything under :func:`cache_dir`, one subfolder per source folder (as numba's
        ``NUMBA_CACHE_DIR`` locator does)."""

        def __init__(self, py_func: Callable, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            folder = cache_dir()
            assert folder is not None
            self._cache_path = str(folder / self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self) -> str:
            return self._cache_path

    class _Impl(caching.CompileResultCacheImpl):
        _locator_classes = [_Locator]

        def check_cachable(self, cres: Any) -> bool:
            with warnings.catch_warnings():  # ctypes calls: expected, see the module docstring
                warnings.simplefilter("ignore")
                return super().check_cachable(cres)

    class _IndexFile(caching.IndexDataCacheFile):
        """numba's index + data files, with two changes for many processes sharing one folder:
        every entry gets a data file of its own unique name, written before the index names it
        (numba numbers them, so two processes adding different entries at once can write the same
        file, and an index entry can then name the other's code), and an index keeps its newest
        :data:`MAX_ENTRIES` entries (closures that hold per-process values add one each start)."""

        def save(self, key: Any, data: Any) -> None:
            overloads = self._load_index()
            replaced = overloads.pop(key, None)
            name = self._data_name_pattern.replace("{number:d}", uuid.uuid4().hex[:16])
            self._save_data(name, data)
            overloads[key] = name
            dropped = [replaced] if replaced else []
            while len(overloads) > MAX_ENTRIES:
                dropped.append(overloads.pop(next(iter(overloads))))
            self._save_index(overloads)
            for old in dropped:
                with contextlib.suppress(OSError):
                    os.unlink(self._data_path(old))

    class PipelineFunctionCache(caching.FunctionCache):
        _impl_class = _Impl

        def __init__(self, py_func: Callable) -> None:
            digest = hashlib.sha256()
            for cell in py_func.__closure__ or ():
                _fingerprint(cell.cell_contents, digest.update)
            self._closure_digest = digest.hexdigest()
            super().__init__(py_func)
            self._cache_file = _IndexFile(
                cache_path=self._cache_path,
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )

        def _index_key(self, sig: Any, codegen: Any) -> tuple:
            code = hashlib.sha256()
            _code_fingerprint(self._py_func.__code__, code.update)
            return sig, codegen.magic_tuple(), (code.hexdigest(), self._closure_digest)

    return PipelineFunctionCache


_cache_class: Optional[type] = None


def caching_compile(code: Callable, signature: Any = None) -> Callable:
    """``ffcv.pipeline.compiler.Compiler.compile`` with an on-disk cache (same numba options)."""
    from ffcv.pipeline.compiler import Compiler
    from numba import njit

    global _cache_class
    if not caching_enabled() or not Compiler.is_enabled:
        return _original_compile(code, signature)  # type: ignore[misc]
    parallel = bool(getattr(code, "is_parallel", False)) and Compiler.num_threads > 1
    dispatcher = njit(fastmath=True, nogil=True, error_model="numpy", parallel=parallel)(code)
    try:
        if _cache_class is None:
            _cache_class = _make_cache_class()
        dispatcher._cache = _cache_class(code)
    except (_Uncacheable, OSError, RuntimeError, TypeError):
        pass  # compiled as FFCV would, just not stored
    if signature is not None:  # as njit(signature) does: compile now, and only that
        for sig in signature if isinstance(signature, list) else [signature]:
            dispatcher.compile(sig)
        dispatcher.disable_compile()
    return dispatcher


def cache_typed_containers() -> None:
    """Give numba's typed ``Dict`` helpers the disk cache too. Importing FFCV builds typed dicts
    (``ffcv.fields.rgb_image.IMAGE_MODES``, its memory managers), which compiles these helpers: 3-5 s of
    every process start on a small CPU, before any pipeline exists. Call before importing ffcv."""
    global _cache_class
    if cache_dir() is None:
        return
    try:
        from numba.core.caching import NullCache
        from numba.core.registry import CPUDispatcher
        from numba.typed import typeddict

        if _cache_class is None:
            _cache_class = _make_cache_class()
        for helper in vars(typeddict).values():
            if isinstance(helper, CPUDispatcher) and isinstance(helper._cache, NullCache) and not helper.overloads:
                helper._cache = _cache_class(helper.py_func)
    except (ImportError, AttributeError, OSError, RuntimeError, _Uncacheable):  # an other numba: compile as before
        pass


def _install() -> None:
    global _installed, _original_compile
    if _installed:
        return
    from ffcv.pipeline.compiler import Compiler

    _original_compile = Compiler.compile
    Compiler.compile = classmethod(lambda cls, code, signature=None: caching_compile(code, signature))
    _installed = True


@contextlib.contextmanager
def pipeline_cache() -> Iterator[None]:
    """Inside this context (this thread), FFCV operations compiled by a Loader use the disk cache.
    Wrap the Loader's construction and every ``iter(loader)`` (they create the compiled functions;
    the compilation itself happens later, in the loader's thread, and uses the cache then)."""
    _install()
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def cached_files() -> List[Path]:
    """Index files in the cache folder (for tests and ``du``-like reports)."""
    folder = cache_dir()
    return sorted(folder.rglob("*.nbi")) if folder is not None and folder.is_dir() else []
