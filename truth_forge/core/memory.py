"""The memory of a sync process: the C heap kept small (one arena, large buffers mapped, free pages
handed back), and Python's collector made rarer while a run lasts (`rarer_collections`).

Why it exists: CPython and DuckDB allocate through the C allocator, which keeps what is freed for
reuse instead of returning it. Two of glibc's defaults cost a push of a million records most of
what stood between its peak RSS and issue 22's goal (400 MB at any N):

- an arena per thread that allocates while another holds the lock (up to 8 per core): the request
  threads, the read-ahead and the push's own each kept their free chunks apart, 75-85 MiB free in
  120 MiB of heap during a 1M push;
- a mmap threshold that rises to the largest block freed so far (up to 32 MiB): once a 400 KB
  request body or answer is freed, every later one comes from the heap and fragments it.

`bound_heap` sets one arena and a fixed 128 KiB threshold (mallopt) as the command line starts, and
again at the start of a run for a program that calls `run_sync` itself (a thread that allocated
before keeps its own arena), unless the operator set either through glibc's own variables
(MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_).
Measured (BENCHMARKS.md, issue 22): malloc's heap 120 -> 50 MiB. After each object's push,
`release_free_memory` collects the young garbage (a run makes collections rare) and asks glibc
to release its free pages (`malloc_trim`); its cost (milliseconds) does not count. On a C library
without these calls (musl, macOS) only the collection happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import threading
from collections.abc import Iterator
from typing import Any

# glibc's mallopt parameters (malloc.h) and what a sync process sets them to.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
HEAP_ARENAS = 1  # the GIL serialises most allocations anyway; tcache keeps the rest off the lock
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept: blocks this large are mapped and unmapped
_OPERATOR_SETTINGS = {_M_ARENA_MAX: "MALLOC_ARENA_MAX", _M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_"}


@functools.cache
def _libc_function(name: str, argtypes: tuple[Any, ...], restype: Any) -> Any:
    """A function of the C library this process runs on, or None when it has none by that name
    (not glibc). Looked up among the process's own symbols: `find_library` would run ldconfig."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes, function.restype = list(argtypes), restype
    return function


@functools.cache
def bound_heap() -> bool:
    """One heap arena and a fixed mmap threshold for this process, once; True when glibc took them.
    A setting the operator made in glibc's environment variables is left as they made it."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    if mallopt is None:
        return False
    taken = True
    for param, value in ((_M_ARENA_MAX, HEAP_ARENAS), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if os.environ.get(_OPERATOR_SETTINGS[param]) is None:
            taken = bool(mallopt(param, value)) and taken
    return taken


def release_free_memory() -> bool:
    """Collect the young generations, then return free heap pages to the system; True when the C
    library could be asked (glibc)."""
    gc.collect(1)
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if trim is None:
        return False
    trim(0)
    return True


# A sync makes and drops containers by the hundred thousand (rows, bodies, answers of 200 records,
# state rows, the closing fold's settled entries), and those alive across a request outlive two young
# collections; with CPython's default thresholds that sets off a full collection (a walk over every
# object the process holds) every few thousand records: 15 % of a first push's CPU, measured with
# gc.callbacks. What a sync drops is freed by its reference count, not by the collector (a 50k first
# push left 259 objects to collect at its end, with collections on or off), so from a run's start to
# its end full collections are made this many times rarer, and a young collection waits for this
# many new objects instead of 700. The objects in flight (batches read ahead, the read cache, the
# answers) number some 50,000: a young collection every 50,000 new ones kept walking them (collector
# time in a 50k first push 0.6 s of 13); every 100,000 it is 0.16 s.
FULL_COLLECTION_SPACING = 10
YOUNG_COLLECTION_AT = 100_000
MIDDLE_COLLECTION_SPACING = 2
_collections_lock = threading.Lock()
_collections_held = 0
_thresholds_before: tuple[int, int, int] = (0, 0, 0)


@contextlib.contextmanager
def rarer_collections() -> Iterator[None]:
    """Rarer garbage collections while any sync of this process runs (`run_sync`); the thresholds
    found are put back when the last one ends (nested and overlapping uses change them once)."""
    global _collections_held, _thresholds_before
    with _collections_lock:
        if _collections_held == 0:
            _thresholds_before = gc.get_threshold()
            young, middle, full = _thresholds_before
            gc.set_threshold(max(young, YOUNG_COLLECTION_AT), middle * MIDDLE_COLLECTION_SPACING,
                             full * FULL_COLLECTION_SPACING)
        _collections_held += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_held -= 1
            if _collections_held == 0:
                gc.set_threshold(*_thresholds_before)
