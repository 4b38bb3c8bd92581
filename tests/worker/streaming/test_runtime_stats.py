"""RuntimeStats stays bounded however long the worker runs (it grew ~5 MB per speaker per 8 h before)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions


def event(segment: str, final: bool, latency: float = 0.0) -> TranscriptEvent:
    return TranscriptEvent(stream_id="s", speaker="s", segment_id=segment, text="x", is_final=final,
                           start=0.0, end=1.0, latency_ms=latency)


@pytest.fixture
def rt() -> Iterator[Runtime]:
    r = Runtime(RuntimeOptions())  # no model: only the bookkeeping is exercised
    yield r
    r.close()


def test_final_latencies_keep_the_latest_only(rt: Runtime) -> None:
    for i in range(20_000):  # eight hours of one busy speaker is ~6000 finals
        rt.on_emit(event(f"seg-{i}", True, float(i)))
    kept = list(rt.stats.final_latencies_ms)
    assert 100 <= len(kept) <= 5000
    assert kept[-1] == 19_999.0 and kept == sorted(kept), "the most recent latencies, in order"


def test_partial_times_bounded_in_segments_and_per_segment(rt: Runtime) -> None:
    for i in range(2000):
        for _ in range(3):
            rt.on_emit(event(f"seg-{i}", False))
    for _ in range(5000):  # one very long utterance
        rt.on_emit(event("long", False))
    rt.on_emit(event("seg-1999", False))  # still active: it must stay
    times = rt.stats.partial_times
    assert len(times) <= 100
    assert "long" in times and "seg-1999" in times and "seg-0" not in times
    assert len(times["long"]) <= 1000
    assert len(times["seg-1999"]) == 4
