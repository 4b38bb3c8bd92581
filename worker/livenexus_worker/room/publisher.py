"""Publishes every TranscriptEvent into the room three ways, in order, without ever blocking inference.

1. ``lk.transcription`` text streams (what LiveKit clients and livekit/agents front ends read),
2. legacy ``publish_transcription`` segments,
3. a JSON data message on topic ``livenexus.transcript``.

The queue is bounded and never loses a final silently: a newer partial replaces the queued partial of its
segment, a final removes it, and partials beyond their budget (or while no room is attached) are dropped and
counted. Finals are kept across reconnects (the publisher outlives one connection) and published once a room
is attached again; only beyond ``max_finals`` is a final dropped, counted and logged as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from livenexus_common.contract import DATA_TOPIC, TEXT_STREAM_TOPIC, stream_attributes
from livenexus_worker.core import stages
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.room_metrics import RoomMetrics
from livenexus_worker.room.tasks import finish

log = logging.getLogger(__name__)
trace_log = logging.getLogger("livenexus_worker.stages")


@dataclass(frozen=True)
class PublisherOptions:
    """Bounds of the publish queue."""

    max_partials: int = 64
    """Partials queued at most (one per segment at most); newer ones beyond it are dropped."""
    max_finals: int = 1024
    """Finals queued at most, also while disconnected (~1 KiB each); beyond it a final is dropped and logged."""
    final_attempts: int = 8
    """Tries of a final that no channel took while the connection stayed the same object (the SDK resuming a
    dropped connection by itself); paced 0.25 s doubling to 2 s, ~10 s in all. A new connection resets them."""
    linger_s: float = 1.0
    """On close, time left after the last published final before the room may be left: the SDK returns once it
    holds a data message, not once the message left, and a disconnect drops what its data channel still buffers."""


@dataclass
class _Item:
    event: TranscriptEvent
    track_sid: str
    attempts: int = 0


class TranscriptPublisher:
    """One consumer task keeps per-segment order (partials before their final) across reconnects."""

    def __init__(self, metrics: Any = None, options: PublisherOptions | None = None) -> None:
        self._metrics = metrics
        self._room_metrics = RoomMetrics.of(metrics)
        self.options = options or PublisherOptions()
        self._items: deque[_Item] = deque()
        self._partial_of: dict[str, _Item] = {}  # segment id → its queued partial
        self._finals = 0
        self._room: rtc.Room | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: _Item | None = None
        self.published = 0
        self.failures = 0
        self.last_final_at = float("-inf")
        """When a final was last published (monotonic)."""
        self.dropped: dict[str, int] = {"partial": 0, "final": 0}

    def start(self) -> TranscriptPublisher:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="livenexus-publisher")
        return self

    def attach(self, room: rtc.Room) -> None:
        """Publish into ``room`` from now on (finals held while disconnected go out first)."""
        self._room = room
        self._wake.set()

    def detach(self) -> None:
        """The room is gone: hold finals, drop partials, until the next :meth:`attach`."""
        self._room = None
        for item in list(self._partial_of.values()):
            self._drop_queued_partial(item)

    @property
    def pending_finals(self) -> int:
        return self._finals

    def submit(self, event: TranscriptEvent, track_sid: str) -> None:
        """Called on the event loop; never blocks."""
        stages.stamp(event.trace, "submit")
        seg = event.segment_id
        queued = self._partial_of.get(seg)
        if event.is_final:
            if queued is not None:
                self._drop_queued_partial(queued)  # the final says it all
            if self._finals >= self.options.max_finals:
                self._dropped("final")
                log.error("final %s of %s NOT published: %d finals already wait (the room is unreachable or too "
                          "slow)", seg, event.speaker, self._finals)
                return
            self._finals += 1
        elif queued is not None:
            queued.event = event  # same place in the queue, newer text
            self._dropped("partial")
            return
        elif self._room is None or len(self._partial_of) >= self.options.max_partials or self._closing:
            self._dropped("partial")
            return
        item = _Item(event, track_sid)
        if not event.is_final:
            self._partial_of[seg] = item
        self._items.append(item)
        self._wake.set()

    async def close(self, timeout: float = 5.0) -> int:
        """Publish what is queued within ``timeout``, then stop; returns the finals left unpublished (logged)."""
        t0, lost = time.monotonic(), self.dropped["final"]
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await finish(self._task, timeout)
            self._task = None
        # A data message handed to the SDK may still sit in its data channel's buffer: leaving now would drop
        # it (seen in 4 of 20 SIGTERM runs: the final was "published", the listener never got it).
        linger = min(self.last_final_at + self.options.linger_s, t0 + max(0.0, timeout)) - time.monotonic()
        if linger > 0:
            await asyncio.sleep(linger)
        left = self._finals + (1 if self._inflight is not None and self._inflight.event.is_final else 0)
        self._inflight = None
        if left:
            log.error("%d final(s) NOT published before the shutdown deadline", left)
            for _ in range(left):
                self._dropped("final")
        return self.dropped["final"] - lost  # those left queued and those no channel took while closing (logged)

    # ---- consumer --------------------------------------------------------------------------------------
    def _drop_queued_partial(self, item: _Item) -> None:
        self._partial_of.pop(item.event.segment_id, None)
        self._items.remove(item)
        self._dropped("partial")

    def _dropped(self, kind: str) -> None:
        self.dropped[kind] += 1
        if self._room_metrics is not None:
            self._room_metrics.transcripts_dropped.labels(kind=kind).inc()

    async def _next(self) -> _Item | None:
        while True:
            if self._items and self._room is not None:
                item = self._items.popleft()
                if item.event.is_final:
                    self._finals -= 1
                elif self._partial_of.get(item.event.segment_id) is item:
                    del self._partial_of[item.event.segment_id]
                return item
            if self._closing:
                return None
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> None:
        while (item := await self._next()) is not None:
            room = self._room
            assert room is not None
            self._inflight = item
            delivered = await self.publish(item.event, item.track_sid, room)
            self._inflight = None
            if not item.event.is_final:
                continue
            if delivered:
                self.last_final_at = time.monotonic()
                log.debug("final %s of %s published", item.event.segment_id, item.event.speaker)
            elif self._room is not room and not self._closing:
                # The connection dropped under it: publish it in the next room instead of losing it.
                item.attempts = 0
                self._items.appendleft(item)
                self._finals += 1
            elif item.attempts + 1 < self.options.final_attempts and not self._closing:
                # Same connection object: the SDK is resuming it by itself (no disconnect event). Try again.
                item.attempts += 1
                self._items.appendleft(item)
                self._finals += 1
                await asyncio.sleep(min(2.0, 0.125 * 2**item.attempts))
            else:
                self._dropped("final")
                log.error("final %s of %s NOT published: no channel took it (%d attempts%s)", item.event.segment_id,
                          item.event.speaker, item.attempts + 1, ", closing" if self._closing else "")

    async def publish(self, event: TranscriptEvent, track_sid: str, room: rtc.Room) -> bool:
        """Publish one event on all three channels; returns whether any of them got it out."""
        # The channels go out concurrently (none waits for another's round trip); order within each channel
        # holds because the next event is only started once this one is out.
        stages.stamp(event.trace, "pub")
        results = await asyncio.gather(
            _timed(event, "text", self._text_stream(room, event, track_sid)),
            _timed(event, "transcription", self._transcription(room, event, track_sid)),
            _timed(event, "data", self._data(room, event)), return_exceptions=True,
        )
        if event.trace is not None:
            trace_log.info("stage trace %s", json.dumps({"segmentId": event.segment_id, "isFinal": event.is_final,
                                                         "trace": event.trace}))
        failed = [(what, r) for what, r in zip(("text stream", "transcription", "data message"), results, strict=True)
                  if isinstance(r, BaseException)]
        for what, exc in failed:
            self._failed(what, exc)
        if not failed:
            self.published += 1
        return len(failed) < len(results)

    @staticmethod
    async def _text_stream(room: rtc.Room, event: TranscriptEvent, track_sid: str) -> None:
        writer = await room.local_participant.stream_text(
            topic=TEXT_STREAM_TOPIC, sender_identity=event.speaker,
            attributes=stream_attributes(track_sid=track_sid, segment_id=event.segment_id, is_final=event.is_final))
        await writer.write(event.text)
        await writer.aclose()

    @staticmethod
    async def _transcription(room: rtc.Room, event: TranscriptEvent, track_sid: str) -> None:
        segment = rtc.TranscriptionSegment(
            id=event.segment_id, text=event.text, start_time=int(event.start * 1000),
            end_time=int(event.end * 1000), language=event.language, final=event.is_final,
        )
        await room.local_participant.publish_transcription(rtc.Transcription(event.speaker, track_sid, [segment]))

    @staticmethod
    async def _data(room: rtc.Room, event: TranscriptEvent) -> None:
        await room.local_participant.publish_data(json.dumps(event.to_wire()), reliable=True, topic=DATA_TOPIC)

    def _failed(self, what: str, exc: BaseException) -> None:
        # A publish failure (room reconnecting, peer gone) must never stop transcription.
        self.failures += 1
        if self._metrics is not None:
            self._metrics.publish_failed()
        log.warning("publishing %s failed: %s", what, exc)


async def _timed(event: TranscriptEvent, channel: str, publish: Awaitable[None]) -> None:
    """``publish``, and while tracing the moment it returned (stage ``channel``)."""
    await publish
    stages.stamp(event.trace, channel)
