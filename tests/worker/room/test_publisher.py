"""The publish queue: bounded, partials coalesced or dropped (counted), finals never lost silently.

The room is a stand-in that records what was published and can be held or made to fail; the real
livekit-server path is covered by tests/agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.room.publisher import PublisherOptions, TranscriptPublisher


class _Writer:
    async def write(self, text: str) -> None: ...
    async def aclose(self) -> None: ...


class Participant:
    def __init__(self, room: Room) -> None:
        self.room = room

    async def _gate(self) -> None:
        await self.room.open.wait()
        if self.room.broken:
            raise ConnectionError("room gone")

    async def stream_text(self, **kw: Any) -> _Writer:
        await self._gate()
        return _Writer()

    async def publish_transcription(self, t: Any) -> None:
        await self._gate()

    async def publish_data(self, payload: str, **kw: Any) -> None:
        await self._gate()
        self.room.data.append(payload)


class Room:
    def __init__(self, open_: bool = True) -> None:
        self.open = asyncio.Event()
        if open_:
            self.open.set()
        self.broken = False
        self.data: list[str] = []
        self.local_participant = Participant(self)

    def segments(self) -> list[tuple[str, bool, str]]:
        import json

        return [(m["segmentId"], m["isFinal"], m["text"]) for m in map(json.loads, self.data)]


def ev(seg: str, final: bool, text: str = "t") -> TranscriptEvent:
    return TranscriptEvent(stream_id="s", speaker="alice", segment_id=seg, text=text, is_final=final,
                           start=0.0, end=1.0)


async def drain(pub: TranscriptPublisher, room: Room, n: int) -> None:
    for _ in range(2000):
        if len(room.data) >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {len(room.data)} of {n} published")


async def test_slow_room_bounds_the_queue_and_keeps_every_final() -> None:
    metrics = WorkerMetrics()
    pub = TranscriptPublisher(metrics, PublisherOptions(max_partials=8)).start()
    room = Room(open_=False)
    pub.attach(room)  # type: ignore[arg-type]
    for i in range(2000):  # a flood of partials over 40 segments, with a final per segment at its end
        seg = f"seg-{i // 50}"
        pub.submit(ev(seg, False, f"p{i}"), "TR")
        if i % 50 == 49:
            pub.submit(ev(seg, True, f"final {seg}"), "TR")
        assert len(pub._items) <= 8 + 40
    room.open.set()
    await drain(pub, room, 40)
    await pub.close(5)
    finals = [(s, t) for s, f, t in room.segments() if f]
    assert finals == [(f"seg-{k}", f"final seg-{k}") for k in range(40)], "every final, in order"
    assert pub.dropped["final"] == 0 and pub.dropped["partial"] >= 1900
    body = metrics.exposition().decode()
    assert f'livenexus_transcripts_dropped_total{{kind="partial"}} {float(pub.dropped["partial"])}' in body


async def test_newer_partial_replaces_queued_one_and_final_supersedes() -> None:
    pub = TranscriptPublisher().start()
    room = Room(open_=False)
    pub.attach(room)  # type: ignore[arg-type]
    pub.submit(ev("a", False, "one"), "TR")  # taken by the consumer at once, held in the closed room
    await asyncio.sleep(0.01)
    pub.submit(ev("a", False, "two"), "TR")
    pub.submit(ev("a", False, "three"), "TR")  # replaces "two" in place
    pub.submit(ev("b", False, "bee"), "TR")
    pub.submit(ev("b", True, "bee final"), "TR")  # the queued partial of b is dropped
    room.open.set()
    await drain(pub, room, 3)
    await pub.close(5)
    assert room.segments() == [("a", False, "one"), ("a", False, "three"), ("b", True, "bee final")]


async def test_finals_wait_for_the_next_room_and_partials_do_not() -> None:
    pub = TranscriptPublisher().start()
    first = Room(open_=False)
    pub.attach(first)  # type: ignore[arg-type]
    pub.submit(ev("x", True, "in flight when the room drops"), "TR")
    await asyncio.sleep(0.01)
    first.broken = True
    pub.detach()
    first.open.set()  # the in-flight publish fails: the room is gone
    pub.submit(ev("y", False, "partial while disconnected"), "TR")
    pub.submit(ev("y", True, "final while disconnected"), "TR")
    await asyncio.sleep(0.01)
    assert pub.pending_finals == 2
    second = Room()
    pub.attach(second)  # type: ignore[arg-type]
    await drain(pub, second, 2)
    await pub.close(5)
    assert second.segments() == [("x", True, "in flight when the room drops"), ("y", True, "final while disconnected")]
    assert pub.dropped == {"partial": 1, "final": 0}


async def test_final_backlog_full_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    pub = TranscriptPublisher(None, PublisherOptions(max_finals=3)).start()
    with caplog.at_level(logging.ERROR):
        for i in range(5):  # no room attached: all are held
            pub.submit(ev(f"f{i}", True), "TR")
    assert pub.pending_finals == 3 and pub.dropped["final"] == 2
    assert sum("NOT published" in r.message for r in caplog.records) == 2
    with caplog.at_level(logging.ERROR):
        left = await pub.close(0.1)  # nowhere to publish them: each is counted and reported
    assert left == 3 and pub.dropped["final"] == 5
    assert any("3 final(s) NOT published" in r.message for r in caplog.records)


async def test_close_gives_up_at_its_timeout_and_counts_the_final_in_flight() -> None:
    pub = TranscriptPublisher().start()
    pub.attach(Room(open_=False))  # type: ignore[arg-type]  # a room that never answers
    pub.submit(ev("z", True), "TR")
    await asyncio.sleep(0.01)  # the consumer has taken it and waits on the room
    left = await asyncio.wait_for(pub.close(0.2), 30)
    assert left == 1 and pub.dropped["final"] == 1


async def test_a_final_no_channel_took_is_tried_again_while_the_sdk_resumes_the_same_room() -> None:
    # The SDK resumes a dropped connection by itself: same room object, no disconnect event, and every
    # channel fails meanwhile. Before, the final was given up at once (a server restart lost it).
    pub = TranscriptPublisher().start()
    room = Room()
    room.broken = True
    pub.attach(room)  # type: ignore[arg-type]
    pub.submit(ev("r", True, "said while the connection resumed"), "TR")
    await asyncio.sleep(0.3)  # a few failed attempts
    assert pub.failures >= 3 and room.data == []
    room.broken = False
    await drain(pub, room, 1)
    assert await pub.close(5) == 0
    assert room.segments() == [("r", True, "said while the connection resumed")]
    assert pub.dropped == {"partial": 0, "final": 0}


async def test_a_final_refused_past_its_attempts_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    pub = TranscriptPublisher(None, PublisherOptions(final_attempts=2)).start()
    room = Room()
    room.broken = True
    pub.attach(room)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        pub.submit(ev("q", True), "TR")
        for _ in range(200):
            if pub.dropped["final"]:
                break
            await asyncio.sleep(0.01)
    assert pub.dropped["final"] == 1 and pub.pending_finals == 0
    assert any("final q of alice NOT published" in r.message for r in caplog.records)
    assert await pub.close(1) == 0  # counted once, when it was given up


async def test_close_waits_for_the_last_final_to_leave_before_the_room_is_left() -> None:
    # publish_data returns once the SDK holds the message; leaving at once dropped it from the data
    # channel's buffer. close() gives the last final ``linger_s`` before it returns (within its timeout).
    pub = TranscriptPublisher(None, PublisherOptions(linger_s=0.3)).start()
    room = Room()
    pub.attach(room)  # type: ignore[arg-type]
    pub.submit(ev("l", True), "TR")
    await drain(pub, room, 1)
    published_at = asyncio.get_running_loop().time()
    assert await pub.close(5) == 0
    assert asyncio.get_running_loop().time() - published_at >= 0.25
    quiet = TranscriptPublisher(None, PublisherOptions(linger_s=30)).start()  # nothing published: no wait
    quiet.attach(Room())  # type: ignore[arg-type]
    assert await asyncio.wait_for(quiet.close(5), 2) == 0
    capped = TranscriptPublisher(None, PublisherOptions(linger_s=30)).start()  # never past the timeout
    croom = Room()
    capped.attach(croom)  # type: ignore[arg-type]
    capped.submit(ev("c", True), "TR")
    await drain(capped, croom, 1)
    assert await asyncio.wait_for(capped.close(0.2), 2) == 0
