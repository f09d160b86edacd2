"""Memory a finished push freed, handed back to the operating system.

Why it exists: CPython and DuckDB allocate through the C allocator, which keeps what is freed for
reuse instead of returning it. After a push of a million records its rows, bodies and answers are
gone, yet glibc's heap still held about 60 MiB of free chunks while the run's closing fold filled
DuckDB's buffer pool: the sync process's peak RSS (issue 22's goal: 400 MB at any N). Here the
young garbage is collected (a push makes collections rare) and glibc is asked to release its free
pages (`malloc_trim`); once per pushed object, so its cost (milliseconds) does not count. On a C
library without `malloc_trim` (musl, macOS) only the collection happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library by that name, or no malloc_trim in it
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Collect the young generations, then return free heap pages to the system; True when the C
    library could be asked (glibc)."""
    gc.collect(1)
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
