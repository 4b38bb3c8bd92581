"""Room participants used by the demo and the tests: a speaker publishing a microphone track, and a listener."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import api, rtc

from livenexus_common.contract import DATA_TOPIC, TEXT_STREAM_TOPIC, StreamAttr, TranscriptMessage
from livenexus_worker.core.audio import SAMPLE_RATE

FRAME = SAMPLE_RATE // 100  # 10 ms


def participant_token(url_key: str, secret: str, room: str, identity: str, publish: bool = True) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=publish, can_subscribe=True,
                             can_publish_data=True)
    return (api.AccessToken(url_key, secret).with_identity(identity).with_name(identity)
            .with_ttl(dt.timedelta(minutes=30)).with_grants(grants).to_jwt())


class SpeakerBot:
    """Publishes 16 kHz speech as a microphone track, paced in real time; silence between utterances."""

    def __init__(self, room: rtc.Room, source: rtc.AudioSource, identity: str) -> None:
        self.room, self.source, self.identity = room, source, identity
        self.track_sid = ""

    @classmethod
    async def join(cls, url: str, key: str, secret: str, room_name: str, identity: str) -> SpeakerBot:
        room = rtc.Room()
        await room.connect(url, participant_token(key, secret, room_name, identity))
        # A short queue, like a live microphone: a long one would delay our audio and inflate latency figures.
        source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        pub = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        bot = cls(room, source, identity)
        bot.track_sid = pub.sid
        return bot

    async def play(self, audio: np.ndarray) -> float:
        """Send ``audio`` in real time; returns the monotonic time its last sample was sent."""
        t0 = time.monotonic()
        for i in range(0, audio.shape[0] - FRAME + 1, FRAME):
            chunk = np.ascontiguousarray(audio[i : i + FRAME], dtype=np.int16)
            frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME)
            await self.source.capture_frame(frame)
            delay = t0 + (i + FRAME) / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return time.monotonic()

    async def silence(self, seconds: float) -> None:
        await self.play(np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16))

    async def close(self) -> None:
        await self.room.disconnect()


@dataclass
class Heard:
    """One transcript as a listener received it."""

    via: str
    """'stream' (lk.transcription text stream) or 'data' (JSON data message)."""
    speaker: str
    """Who the transcript is attributed to."""
    segment_id: str
    """Segment id."""
    text: str
    """Transcript text."""
    final: bool
    """Final or partial."""
    at: float
    """monotonic() when received."""
    attributes: dict[str, Any] = field(default_factory=dict)
    """Text stream attributes (strings), or the JSON message (:class:`TranscriptMessage`)."""


class Listener:
    """Collects every transcript in the room, via text streams and via the JSON data messages."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.heard: list[Heard] = []
        self.changed = asyncio.Event()

    @classmethod
    async def join(cls, url: str, key: str, secret: str, room_name: str, identity: str = "listener") -> Listener:
        room = rtc.Room()
        self = cls(room)
        room.register_text_stream_handler(TEXT_STREAM_TOPIC, self._on_stream)
        room.on("data_received", self._on_data)
        await room.connect(url, participant_token(key, secret, room_name, identity, publish=False))
        return self

    def _on_stream(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            attrs = dict(reader.info.attributes or {})
            self._add(Heard("stream", participant_identity, attrs.get(StreamAttr.SEGMENT_ID, ""), text,
                            attrs.get(StreamAttr.FINAL) == "true", time.monotonic(), attrs))

        asyncio.get_running_loop().create_task(read())

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != DATA_TOPIC:
            return
        msg: TranscriptMessage = json.loads(packet.data)
        self._add(Heard("data", msg["speaker"], msg["segmentId"], msg["text"], bool(msg["isFinal"]),
                        time.monotonic(), dict(msg)))

    def _add(self, h: Heard) -> None:
        self.heard.append(h)
        self.changed.set()

    def finals(self, via: str = "data", speaker: str | None = None) -> list[Heard]:
        return [h for h in self.heard if h.via == via and h.final and (speaker is None or h.speaker == speaker)]

    async def wait_finals(self, n: int, timeout: float, via: str = "data", speaker: str | None = None) -> list[Heard]:
        deadline = time.monotonic() + timeout
        while len(self.finals(via, speaker)) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                break
        return self.finals(via, speaker)

    async def close(self) -> None:
        await self.room.disconnect()
