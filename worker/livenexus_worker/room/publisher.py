"""Publishes every TranscriptEvent into the room three ways, in order, without ever blocking inference.

1. ``lk.transcription`` text streams (what LiveKit clients and livekit/agents front ends read),
2. legacy ``publish_transcription`` segments,
3. a JSON data message on topic ``livenexus.transcript``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from livekit import rtc

from livenexus_common.contract import DATA_TOPIC, TEXT_STREAM_TOPIC, stream_attributes
from livenexus_worker.core.events import TranscriptEvent

log = logging.getLogger(__name__)


class TranscriptPublisher:
    """One consumer task per room keeps per-segment order (partials before their final)."""

    def __init__(self, room: rtc.Room, metrics: Any = None, max_backlog: int = 256) -> None:
        self._room = room
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[TranscriptEvent, str] | None] = asyncio.Queue()
        self._max_backlog = max_backlog
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0

    def start(self) -> TranscriptPublisher:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="livenexus-publisher")
        return self

    def submit(self, event: TranscriptEvent, track_sid: str) -> None:
        """Called on the event loop. When the room is slow, stale partials are skipped; finals never are."""
        if not event.is_final and self._queue.qsize() >= self._max_backlog:
            return
        self._queue.put_nowait((event, track_sid))

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (finals flushed at shutdown included), then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            self._task.cancel()
        self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            event, track_sid = item
            await self.publish(event, track_sid)

    async def publish(self, event: TranscriptEvent, track_sid: str) -> None:
        # The three channels go out concurrently (none waits for another's round trip); order within each
        # channel holds because the next event is only started once this one is out.
        results = await asyncio.gather(
            self._text_stream(event, track_sid), self._transcription(event, track_sid), self._data(event),
            return_exceptions=True,
        )
        failed = [(what, r) for what, r in zip(("text stream", "transcription", "data message"), results, strict=True)
                  if isinstance(r, BaseException)]
        for what, exc in failed:
            self._failed(what, exc)
        if not failed:
            self.published += 1

    async def _text_stream(self, event: TranscriptEvent, track_sid: str) -> None:
        writer = await self._room.local_participant.stream_text(
            topic=TEXT_STREAM_TOPIC, sender_identity=event.speaker,
            attributes=stream_attributes(track_sid=track_sid, segment_id=event.segment_id, is_final=event.is_final))
        await writer.write(event.text)
        await writer.aclose()

    async def _transcription(self, event: TranscriptEvent, track_sid: str) -> None:
        segment = rtc.TranscriptionSegment(
            id=event.segment_id, text=event.text, start_time=int(event.start * 1000),
            end_time=int(event.end * 1000), language=event.language, final=event.is_final,
        )
        await self._room.local_participant.publish_transcription(rtc.Transcription(event.speaker, track_sid, [segment]))

    async def _data(self, event: TranscriptEvent) -> None:
        await self._room.local_participant.publish_data(json.dumps(event.to_wire()), reliable=True, topic=DATA_TOPIC)

    def _failed(self, what: str, exc: BaseException) -> None:
        # A publish failure (room reconnecting, peer gone) must never stop transcription.
        self.failures += 1
        if self._metrics is not None:
            self._metrics.publish_failed()
        log.warning("publishing %s failed: %s", what, exc)
