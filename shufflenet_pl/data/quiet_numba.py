"""Silence one known-harmless numba message, and nothing else.

FFCV JIT-compiles its pipelines with numba, creating dispatchers for the same Python functions
again and again. When such a dispatcher is garbage-collected, often at interpreter exit, numba's
finalizer (``numba/core/dispatcher.py``, ``_make_finalizer.<locals>.finalizer``) may find its
overload table inconsistent and raise ``KeyError`` while iterating it, which Python prints as
"Exception ignored in: <finalize object ...>" plus a traceback (libffcv/ffcv#167). The finalizer
only drops references to compiled code that the process is about to free anyway.

Installing this module wraps ``sys.unraisablehook`` and ``sys.excepthook`` (through which
``weakref.finalize`` reports at exit) with a filter that drops exactly that case: a ``KeyError``
raised inside numba's dispatcher finalizer. Every other exception reaches the previous hooks.
"""

import sys
import types
from typing import Any, Optional, Type

__all__ = ["install", "is_numba_finalizer_keyerror"]

_installed = False


def is_numba_finalizer_keyerror(
    exc_type: Optional[Type[BaseException]], traceback: Optional[types.TracebackType]
) -> bool:
    """True for a ``KeyError`` whose innermost frame is numba's dispatcher finalizer."""
    if exc_type is None or not issubclass(exc_type, KeyError) or traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    code = traceback.tb_frame.f_code
    filename = code.co_filename.replace("\\", "/")
    return code.co_name == "finalizer" and filename.endswith("numba/core/dispatcher.py")


def install() -> None:
    """Install the filter (idempotent)."""
    global _installed
    if _installed:
        return
    previous_unraisable = sys.unraisablehook
    previous_excepthook = sys.excepthook

    def unraisablehook(unraisable: Any) -> None:
        if is_numba_finalizer_keyerror(unraisable.exc_type, unraisable.exc_traceback):
            return
        previous_unraisable(unraisable)

    def excepthook(
        exc_type: Type[BaseException], exc_value: BaseException, traceback: Optional[types.TracebackType]
    ) -> None:
        if is_numba_finalizer_keyerror(exc_type, traceback):
            return
        previous_excepthook(exc_type, exc_value, traceback)

    sys.unraisablehook = unraisablehook
    sys.excepthook = excepthook
    _installed = True


install()
