"""Freed heap goes back to the kernel (core/memory.py); run in a child process, whose allocator state is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from livenexus_worker.core import memory
from livenexus_worker.core.memory import release_free_memory, rss_mib

# What CTranslate2 does to glibc: one large buffer freed raises the mmap threshold, after which MiB-sized
# buffers come from the heap; a smaller block kept between each two (a decoder's longer-lived state) keeps
# their freed space off the top, so glibc's automatic trim cannot return it.
FRAGMENT = """
import json, sys
from livenexus_worker.core.memory import release_free_memory, rss_mib
big = bytearray(b"\\x01") * (16 << 20)
del big
blocks, kept = [], []
for _ in range(100):
    blocks.append(bytearray(b"\\x01") * (2 << 20))
    kept.append(bytearray(b"\\x01") * (256 << 10))
del blocks
before = rss_mib()
result = release_free_memory() if sys.argv[1] == "trim" else None
print(json.dumps({"before": before, "after": rss_mib(), "released": bool(result and result.released)}))
"""


def child(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_freed_fragmented_heap_stays_resident_until_trimmed() -> None:
    kept = child("none")
    trimmed = child("trim")
    assert kept["after"] > 200 and kept["after"] - kept["before"] > -20, "without a trim the 200 MiB freed stays"
    assert trimmed["released"]
    assert trimmed["before"] - trimmed["after"] > 150, trimmed


def test_release_reports_rss_and_is_harmless_in_this_process() -> None:
    r = release_free_memory()
    assert r.rss_before_mib > 0 and r.rss_after_mib > 0
    assert 0 < rss_mib() < 100_000


# Eight threads allocating at once, each holding its block until all have one: glibc gives a thread that
# finds the arenas busy one of its own. malloc_stats() prints a block per arena on stderr.
ARENAS = """
import ctypes, os, sys, threading
from livenexus_worker.core import memory
if sys.argv[1] == "limit":
    print(memory.limit_arenas(1))
else:
    print(False)
barrier = threading.Barrier(8)
def work():
    kept = []
    for _ in range(200):
        kept.append(bytearray(64 << 10))
        if len(kept) == 100:
            barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    run = subprocess.run([sys.executable, "-c", ARENAS, mode], check=True, capture_output=True, text=True,
                         timeout=60, env=env)
    return run.stdout.strip() == "True", run.stderr.count("Arena ")


def test_arenas_are_capped_for_the_threads_started_after() -> None:
    base = os.environ.copy()
    base.pop("MALLOC_ARENA_MAX", None)
    capped, n_capped = arenas("limit", base)
    default, n_default = arenas("none", base)
    assert capped and not default
    assert n_capped <= memory.MIN_ARENAS < n_default, (n_capped, n_default)


def test_an_arena_max_from_the_environment_is_left_to_glibc() -> None:
    set_here, n = arenas("limit", {**os.environ, "MALLOC_ARENA_MAX": "3"})
    assert not set_here
    assert n <= 3


def test_the_worker_cli_caps_the_arenas_before_its_threads_start() -> None:
    """``livenexus-worker`` (here ``models list``, which starts no thread of its own) sets the cap in ``main``:
    the threads after it share at most one arena per decode replica the runtime may run."""
    from livenexus_worker.ops.cpu import affinity_cpus
    from livenexus_worker.streaming.runtime import MAX_WORKERS

    script = ARENAS.replace('if sys.argv[1] == "limit":', 'from livenexus_worker.cli import main\nmain(["models", '
                            '"list"])\nif False:')
    env = os.environ.copy()
    env.pop("MALLOC_ARENA_MAX", None)
    run = subprocess.run([sys.executable, "-c", script, "none"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    assert 1 <= run.stderr.count("Arena ") <= max(memory.MIN_ARENAS, min(MAX_WORKERS, len(affinity_cpus())))
