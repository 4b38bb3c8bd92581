"""Handing freed heap memory back to the kernel (glibc ``malloc_trim``).

Why: CTranslate2 allocates its per-window buffers (1-4 MiB each, sized by the window length) through malloc.
glibc raises its mmap threshold after the first large free, so later buffers come from the arenas, and
after a long window their freed chunks stay resident: measured with the base model, RSS 229 MiB after load,
343 MiB after one 30 s window, still 343 MiB after going back to 5 s windows; ``malloc_trim(0)`` returns it
to 255 MiB in ~5-9 ms. The worker calls this when its room goes quiet (see ``Runtime``), so a long window
no longer raises its footprint for the rest of its life.

And at start (:func:`limit_arenas`): glibc gives each thread that allocates while another holds an arena an
arena of its own, up to 8 per core. The worker's decode replicas and LiveKit's native threads each kept freed
MiB-sized chunks in their own: measured with two replicas decoding partials and 2-14 s finals side by side
(``benchmarks/arenas.py``), RSS after the decodes 337-351 MiB with glibc's default, 284-316 MiB with two arenas,
at the same CPU time; the meeting benchmark's peak through LiveKit 411-430 MiB against 443-474.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrimResult:
    """What one :func:`release_free_memory` call did."""

    released: bool
    """True if the allocator returned memory to the kernel (False also where there is no glibc)."""
    rss_before_mib: float
    """Resident set before the call."""
    rss_after_mib: float
    """Resident set after the call."""


_lock = threading.Lock()
_trim: ctypes._CFuncPtr | None = None  # type: ignore[name-defined]
_looked_up = False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` may run ``ldconfig``); None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``malloc_trim``, or None (musl and other C libraries have none: then nothing is trimmed)."""
    global _trim, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            libc = _libc()
            fn = getattr(libc, "malloc_trim", None) if libc is not None else None
            if fn is None:
                log.info("no malloc_trim in this C library: freed memory stays with the allocator")
            else:
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
                _trim = fn
        return _trim


_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
MIN_ARENAS = 2
"""Heap arenas the worker lets glibc make at least (:func:`limit_arenas`): the two decodes a speaker runs at
once (its final beside its partial) each allocate in their own."""


def limit_arenas(n: int) -> bool:
    """Cap glibc's heap arenas at ``n`` (at least :data:`MIN_ARENAS`) for threads started from now on; call
    before any. Leaves a ``MALLOC_ARENA_MAX`` set in the environment as it is (glibc read it). True if the
    cap was set."""
    n = max(MIN_ARENAS, n)
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    fn = getattr(libc, "mallopt", None) if libc is not None else None
    if fn is None:
        return False  # not glibc: its allocator has no such arenas
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return bool(fn(_M_ARENA_MAX, n))


def rss_mib() -> float:
    """This process's resident set (MiB), 0.0 where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_free_memory() -> TrimResult:
    """Return the allocator's free memory to the kernel; safe from any thread (glibc locks each arena)."""
    before = rss_mib()
    fn = _malloc_trim()
    released = bool(fn(0)) if fn is not None else False
    return TrimResult(released, before, rss_mib())
