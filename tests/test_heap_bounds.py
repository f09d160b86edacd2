"""`bound_heap` (truth_forge/core/memory.py): one malloc arena and a fixed mmap threshold, unless the
operator set glibc's own variables. Each case runs in a fresh interpreter (the settings are the
process's), and the same script without the call shows glibc's default doing otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")

_ARENAS = textwrap.dedent("""
    import ctypes, sys, threading
    from truth_forge.core import memory
    if sys.argv[1] == "bound":
        print("taken", memory.bound_heap())
    held, started = [], threading.Barrier(7)
    def allocate():
        held.append([bytes(5000) for _ in range(200)])  # through malloc (pymalloc takes 512 bytes at most)
        started.wait()
    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for t in threads: t.start()
    started.wait()
    ctypes.CDLL(None).malloc_stats()  # to stderr: one "Arena N:" block per arena
    for t in threads: t.join()
""")

_THRESHOLD = textwrap.dedent("""
    import ctypes, sys
    from truth_forge.core import memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    if sys.argv[1] == "bound":
        print("taken", memory.bound_heap())
    big = ctypes.create_string_buffer(4 << 20)  # mapped; freeing it raises glibc's threshold to 4 MiB
    del big
    before = libc.mallinfo2().hblkhd
    block = ctypes.create_string_buffer(512 << 10)
    print("mapped", libc.mallinfo2().hblkhd - before >= 512 << 10)
""")


def _run(script: str, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})
    assert done.returncode == 0, done.stderr
    return done


def _arenas(done: subprocess.CompletedProcess[str]) -> int:
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


def test_a_bounded_process_keeps_one_arena_where_glibc_makes_one_per_thread() -> None:
    bounded = _run(_ARENAS, "bound")
    assert "taken True" in bounded.stdout
    assert _arenas(bounded) == 1
    assert _arenas(_run(_ARENAS, "default")) > 1


def test_blocks_past_128_kib_stay_mapped_after_a_larger_one_was_freed() -> None:
    assert "mapped True" in _run(_THRESHOLD, "bound").stdout
    assert "mapped False" in _run(_THRESHOLD, "default").stdout  # glibc's threshold rose to 4 MiB


def test_what_the_operator_set_in_glibcs_variables_is_left_as_they_set_it() -> None:
    done = _run(_ARENAS, "bound", MALLOC_ARENA_MAX="3")
    assert _arenas(done) == 3
    assert "mapped True" in _run(_THRESHOLD, "bound", MALLOC_MMAP_THRESHOLD_="131072").stdout
    assert "mapped False" in _run(_THRESHOLD, "bound", MALLOC_MMAP_THRESHOLD_="8388608").stdout
