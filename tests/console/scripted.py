"""A scripted transcriber: joins a room like the worker and publishes known hypotheses on both wire paths.

It speaks exactly the worker's contract (``lk.transcription`` text streams with the ``lk.*`` attributes, and
``TranscriptEvent.to_wire()`` JSON on topic ``livenexus.transcript``), so the page's merging, de-duplication
and stable/unstable rendering can be checked with known input and no model in the loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from livekit import api, rtc

from livenexus_worker.events import TranscriptEvent

DATA_TOPIC = "livenexus.transcript"
STREAM_TOPIC = "lk.transcription"


@dataclass
class Transcriber:
    """A connected scripted transcriber."""

    room: rtc.Room
    """Its LiveKit room connection."""
    sent: list[dict[str, object]] = field(default_factory=list)
    """Every message published, in order (path, segment, final), for failure messages."""

    @classmethod
    async def join(cls, url: str, api_key: str, api_secret: str, room: str) -> Transcriber:
        token = (
            api.AccessToken(api_key, api_secret)
            .with_identity("livenexus-agent")
            .with_name("LiveNexus")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish_data=True, can_subscribe=True))
            .to_jwt()
        )
        r = rtc.Room()
        await r.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
        return cls(r)

    async def wait_for_microphone(self, prefix: str = "web-", timeout: float = 60.0) -> tuple[str, str]:
        """(identity, track sid) of the first browser participant that published a track."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for p in self.room.remote_participants.values():
                if p.identity.startswith(prefix) and p.track_publications:
                    return p.identity, next(iter(p.track_publications))
            await asyncio.sleep(0.1)
        raise AssertionError(f"no participant {prefix}* published a microphone within {timeout}s")

    async def data(self, event: TranscriptEvent) -> None:
        await self.room.local_participant.publish_data(
            json.dumps(event.to_wire()), reliable=True, topic=DATA_TOPIC
        )
        self.sent.append({"path": "data", "segment": event.segment_id, "final": event.is_final})

    async def stream(self, event: TranscriptEvent) -> None:
        attrs = {
            "lk.segment_id": event.segment_id,
            "lk.transcription_final": "true" if event.is_final else "false",
            "lk.transcribed_track_id": event.stream_id,
        }
        await self.room.local_participant.send_text(event.text, topic=STREAM_TOPIC, attributes=attrs)
        self.sent.append({"path": "stream", "segment": event.segment_id, "final": event.is_final})

    async def close(self) -> None:
        await self.room.disconnect()


def event(
    track: str,
    speaker: str,
    segment: str,
    text: str,
    final: bool,
    stable: str = "",
    latency_ms: float = 0.0,
) -> TranscriptEvent:
    return TranscriptEvent(
        stream_id=track,
        speaker=speaker,
        segment_id=segment,
        text=text,
        is_final=final,
        start=0.0,
        end=1.0,
        stable=text if final else stable,
        unstable="" if final else text[len(stable) :],
        language="en",
        tier="base-int8-b5-p250",
        latency_ms=latency_ms,
    )
