"""Giving freed heap back to the operating system.

glibc keeps memory that Python and the native libraries free in its arenas, for the next
allocation; after a one-off peak (the startup load of a 100K-memory tenant decodes every
record) that is ~100-200 MB of resident memory nothing will use again. ``malloc_trim(0)``
returns the free pages of every arena. On another C library (musl, macOS) it is absent and
this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _load_malloc_trim()


def release_free_heap() -> bool:
    """Collect garbage, then return free heap pages to the system (glibc only); True if
    the C library could be asked."""
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
