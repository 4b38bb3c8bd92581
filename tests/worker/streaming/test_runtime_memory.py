"""The runtime gives freed heap back to the kernel when its room goes quiet, never while someone speaks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions
from livenexus_worker.streaming.scheduler import Job


@pytest.fixture
def rt() -> Iterator[Runtime]:
    r = Runtime(RuntimeOptions())  # no model: the scheduler and the bookkeeping only
    yield r
    r.close()


def run_jobs(rt: Runtime, kinds: list[str]) -> None:
    for kind in kinds:
        if kind == "final":
            rt.scheduler.submit_final(Job(lambda: None, kind))
        else:
            rt.scheduler.submit_partial("s", Job(lambda: None, kind))
        assert rt.wait_idle(10)


def test_trims_once_the_room_is_quiet(rt: Runtime) -> None:
    run_jobs(rt, ["final"])
    assert rt.stats.memory_trims == 1


def test_no_trim_while_someone_speaks(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "active_speakers", lambda: 1)
    run_jobs(rt, ["partial", "partial", "final"])
    assert rt.stats.memory_trims == 0


def test_no_trim_while_jobs_wait(rt: Runtime) -> None:
    gate = threading.Event()
    rt.scheduler.submit_final(Job(lambda: gate.wait(10), "final"))
    rt.scheduler.submit_final(Job(lambda: None, "final"))  # queued behind the first: no trim between them
    gate.set()
    assert rt.wait_idle(10)
    assert rt.stats.memory_trims == 1, "only after the last one"


def test_can_be_switched_off() -> None:
    r = Runtime(RuntimeOptions(trim_when_quiet=False))
    try:
        run_jobs(r, ["final"])
        assert r.stats.memory_trims == 0
    finally:
        r.close()


# A job that leaves freed MiB-sized blocks between kept ones in the inference thread's arena, as a decode of a
# long window does (see tests/worker/core/test_memory.py); a child process, so the allocator state is its own.
CHILD = """
import json
from livenexus_worker.core.memory import rss_mib
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions
from livenexus_worker.streaming.scheduler import Job
kept = []
def decode_like():
    big = bytearray(b"\\x01") * (16 << 20)
    del big
    blocks = []
    for _ in range(80):
        blocks.append(bytearray(b"\\x01") * (2 << 20))
        kept.append(bytearray(b"\\x01") * (256 << 10))
rt = Runtime(RuntimeOptions())
base = rss_mib()
rt.scheduler.submit_final(Job(decode_like, "final"))
rt.wait_idle(30)
print(json.dumps({"grew_mib": rss_mib() - base, "trimmed_mib": rt.stats.memory_trimmed_mib}))
rt.close()
"""


def test_a_long_windows_freed_buffers_leave_after_it() -> None:
    out = json.loads(subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True,
                                    timeout=60).stdout)
    # 80 x 2 MiB were freed, 80 x 256 KiB are kept: ~20 MiB should remain, not ~180.
    assert out["trimmed_mib"] > 120, out
    assert out["grew_mib"] < 60, out


def final(segment: str = "seg") -> TranscriptEvent:
    return TranscriptEvent(stream_id="s", speaker="s", segment_id=segment, text="x", is_final=True, start=0.0,
                           end=1.0, latency_ms=5.0)


def test_a_final_emitted_with_no_job_after_it_trims_once_quiet(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # A final decoded speculatively in the pause is emitted when the utterance ends, after its job ran.
    rt.on_emit(final())
    assert rt.stats.memory_trims == 1
    monkeypatch.setattr(rt, "active_speakers", lambda: 1)  # someone else still speaks: no trim
    rt.on_emit(final("other"))
    assert rt.stats.memory_trims == 1


def test_a_final_emitted_inside_a_job_leaves_the_trim_to_after_the_job(rt: Runtime) -> None:
    rt.scheduler.submit_final(Job(lambda: rt.on_emit(final()), "final"))
    assert rt.wait_idle(10)
    assert rt.stats.memory_trims == 1, "once, after the job, not also inside it"
