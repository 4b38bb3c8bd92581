"""A scripted transcriber: joins a room like the worker and publishes known hypotheses on both wire paths.

It speaks exactly the worker's contract (``lk.transcription`` text streams with the ``lk.*`` attributes, and
``TranscriptEvent.to_wire()`` JSON on topic ``livenexus.transcript``), so the page's merging, de-duplication
and stable/unstable rendering can be checked with known input and no model in the loop.

Run as ``python -m tests.console.scripted`` with LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and
LIVENEXUS_ROOM set: a separate process, so the LiveKit FFI runtime's teardown never runs inside pytest.
It prints ``SENT <json list>`` once the whole script was published.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from dataclasses import dataclass, field

from livekit import api, rtc

from livenexus_common.contract import DATA_TOPIC, TEXT_STREAM_TOPIC, stream_attributes
from livenexus_worker.core.events import TranscriptEvent


@dataclass
class Transcriber:
    """A connected scripted transcriber."""

    room: rtc.Room
    """Its LiveKit room connection."""
    sent: list[dict[str, object]] = field(default_factory=list)
    """Every message published, in order (path, segment, final), for failure messages."""

    @classmethod
    async def join(
        cls, url: str, api_key: str, api_secret: str, room: str, identity: str = "livenexus-agent", kind: str = "agent"
    ) -> Transcriber:
        token = (
            api.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_name("LiveNexus")
            .with_kind(kind)
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
        await self.room.local_participant.publish_data(json.dumps(event.to_wire()), reliable=True, topic=DATA_TOPIC)
        self.sent.append({"path": "data", "segment": event.segment_id, "final": event.is_final})

    async def stream(self, event: TranscriptEvent, on_behalf: bool = False) -> None:
        """A text stream in the agent's own name, or (``on_behalf``) in the speaker's, as the worker sends it."""
        attrs = stream_attributes(track_sid=event.stream_id, segment_id=event.segment_id, is_final=event.is_final)
        writer = await self.room.local_participant.stream_text(
            topic=TEXT_STREAM_TOPIC, attributes=attrs, sender_identity=event.speaker if on_behalf else None
        )
        await writer.write(event.text)
        await writer.aclose()
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
        unstable="" if final else text[len(stable) :].strip(),  # as the worker: text = stable + " " + unstable
        language="en",
        tier="base-int8-b5-p250",
        latency_ms=latency_ms,
    )


FORGERS = (("livenexus-agent-forged", "standard"), ("mallory", "agent"))
"""Participants that publish transcripts the page must not show: the worker's prefix without the agent kind,
and an agent with another identity."""


async def forge(forgers: list[Transcriber], track: str, me: str) -> None:
    """Each forger sends a final on both paths, attributed to the visitor, that the page must ignore."""
    for n, bot in enumerate(forgers):
        forged = event(track, me, f"forged-{n}", f"forged final number {n}", True, latency_ms=1.0)
        await bot.data(forged)
        await bot.stream(forged)


async def play_script(bot: Transcriber, forgers: list[Transcriber] | None = None) -> None:
    """Four utterances covering both paths, both arrival orders of a final, one path alone, and a late partial.

    tests/console/test_browser.py asserts what the page must show for exactly this script.
    """
    me, track = await bot.wait_for_microphone()
    await asyncio.sleep(1.0)
    a = "seg-a"
    await bot.data(event(track, me, a, "hello wor", False, stable="hello"))
    await bot.stream(event(track, me, a, "hello wor", False))
    await asyncio.sleep(1.5)
    await bot.stream(event(track, me, a, "hello world how", False))  # no split on this path: keeps the prefix
    await asyncio.sleep(1.5)
    await bot.data(event(track, me, a, "hello world how are", False, stable="hello world"))
    await asyncio.sleep(1.5)
    await bot.stream(event(track, me, a, "hello world how are you", True))
    await bot.data(event(track, me, a, "hello world how are you", True, latency_ms=432.1))
    await bot.data(event(track, me, a, "hello world how are you doing", False, stable="hello"))  # late partial
    await bot.data(event("TR_alice", "alice", "seg-b", "second segment from data first", True, latency_ms=250))
    await bot.stream(event("TR_alice", "alice", "seg-b", "second segment from data first", True))
    await bot.stream(event(track, me, "seg-c", "third segment only on the text stream", True))
    await forge(forgers or [], track, me)
    # In the speaker's name only (no data message): unverifiable, so never shown, and not counted as forged.
    await bot.stream(event(track, me, "seg-e", "fifth segment only in the speaker's name", True), on_behalf=True)
    await bot.data(event(track, me, "seg-d", "fourth", False, stable=""))
    await asyncio.sleep(1.0)
    await bot.data(event(track, me, "seg-d", "fourth segment only as data", True, latency_ms=300))


async def main() -> int:
    e = os.environ
    creds = (e["LIVEKIT_URL"], e["LIVEKIT_API_KEY"], e["LIVEKIT_API_SECRET"], e["LIVENEXUS_ROOM"])
    bot = await Transcriber.join(*creds)
    forge_too = bool(e.get("SCRIPTED_FORGE"))
    forgers = [await Transcriber.join(*creds, identity=i, kind=k) for i, k in FORGERS] if forge_too else []
    try:
        await play_script(bot, forgers)
        await asyncio.sleep(float(e.get("SCRIPTED_LINGER_S", "8")))  # stay: the page shows the transcriber present
    finally:
        for b in (bot, *forgers):
            await b.close()
    print("SENT " + json.dumps(bot.sent + [m for f in forgers for m in f.sent]), flush=True)
    return 0


if __name__ == "__main__":
    try:
        code = asyncio.run(main())
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown, where the FFI runtime has been seen to abort
