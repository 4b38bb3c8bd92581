"""`livenexus-worker run`: join one LiveKit room as an agent and transcribe every participant's audio.

One StreamPipeline per subscribed audio track, all sharing the process's Runtime; events hop from the
inference thread to the event loop and out through the publisher. Disconnects are retried with backoff and a
fresh token; SIGTERM flushes open utterances, publishes their finals and leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from livenexus_common.cli import EXIT_AUTH, EXIT_ERROR, EXIT_OK, sleep_or_stop, stop_on_signals
from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.service import WorkerService
from livenexus_worker.room.settings import SettingsError, WorkerSettings
from livenexus_worker.room.token import mint_token
from livenexus_worker.streaming.pipeline import StreamPipeline

log = logging.getLogger(__name__)


class AuthError(RuntimeError):
    """LiveKit refused our credentials: retrying cannot help."""


@dataclass
class _Track:
    task: asyncio.Task[None]
    pipe: StreamPipeline | None = None


@dataclass
class AgentOptions:
    """Timing of the agent's connection handling."""

    grace_s: float = 20.0
    """On shutdown, how long finals may take to decode and publish."""
    backoff_initial_s: float = 0.5
    """First reconnect delay; doubles per failed attempt."""
    backoff_max_s: float = 10.0
    """Reconnect delay cap."""
    connect_timeout_s: float = 10.0
    """Per connection attempt."""


@dataclass
class RoomAgent:
    """The worker's presence in its room."""

    settings: WorkerSettings
    """Room, URL and credentials."""
    service: WorkerService
    """Runtime, metrics, tier control."""
    options: AgentOptions = field(default_factory=AgentOptions)
    """Reconnect and shutdown timing."""
    connects: int = 0
    """Successful connections so far (reconnects = connects - 1)."""

    def __post_init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._disconnected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> int:
        delay = self.options.backoff_initial_s
        while not stop.is_set():
            room = rtc.Room()
            publisher = TranscriptPublisher(room, self.service.metrics)
            try:
                await self._connect(room)
            except AuthError as exc:
                log.error("LiveKit rejected the worker's credentials: %s", exc)
                return EXIT_AUTH
            except Exception as exc:
                if self.connects == 0 and _looks_like_auth(exc):
                    log.error("LiveKit rejected the worker's credentials (check LIVEKIT_API_KEY/SECRET): %s", exc)
                    return EXIT_AUTH
                log.warning("connecting to %s failed (%s); retrying in %.1fs", self.settings.livekit_url, exc, delay)
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.options.backoff_max_s)
                continue
            delay = self.options.backoff_initial_s
            publisher.start()
            self._attach(room, publisher)
            await _first(stop.wait(), self._disconnected.wait())
            await self._detach(publisher)
            self.service.metrics.set_livekit_connected(False)
            with contextlib.suppress(Exception):
                await room.disconnect()  # also after a drop: releases the old room's native handles
            if stop.is_set():
                break
            log.warning("disconnected from room %s; reconnecting", self.settings.room)
        return EXIT_OK

    async def _connect(self, room: rtc.Room) -> None:
        self._disconnected = asyncio.Event()
        token = mint_token(self.settings)
        await asyncio.wait_for(room.connect(self.settings.livekit_url, token, rtc.RoomOptions(auto_subscribe=True)),
                               self.options.connect_timeout_s + 5)
        self.connects += 1
        if self.connects > 1:
            self.service.metrics.livekit_reconnected()
        self.service.metrics.set_livekit_connected(True)
        log.info("joined room %s as %s", self.settings.room, self.settings.identity)

    def _attach(self, room: rtc.Room, publisher: TranscriptPublisher) -> None:
        loop = asyncio.get_running_loop()

        def on_subscribed(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO and pub.sid not in self._tracks:
                entry = _Track(loop.create_task(self._consume(track, pub.sid, p.identity, publisher, entry_box)))
                entry_box[pub.sid] = entry
                self._tracks[pub.sid] = entry

        entry_box: dict[str, _Track] = {}

        def on_gone(*args: object) -> None:
            pub = next((a for a in args if isinstance(a, rtc.RemoteTrackPublication)), None)
            if pub is not None and pub.sid in self._tracks:
                self._tracks.pop(pub.sid).task.cancel()

        def on_participant_left(p: rtc.RemoteParticipant) -> None:
            for sid in list(p.track_publications):
                if sid in self._tracks:
                    self._tracks.pop(sid).task.cancel()

        def on_muted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            entry = self._tracks.get(pub.sid)
            if entry is not None and entry.pipe is not None:
                entry.pipe.flush()  # a mute ends the utterance: publish its final now

        room.on("track_subscribed", on_subscribed)
        room.on("track_unsubscribed", on_gone)
        room.on("track_unpublished", on_gone)
        room.on("participant_disconnected", on_participant_left)
        room.on("track_muted", on_muted)
        disconnected = self._disconnected  # this room's event: a late callback of an old room must not end a new one
        room.on("disconnected", lambda *_: disconnected.set())
        room.on("reconnecting", lambda: self.service.metrics.set_livekit_connected(False))
        def on_reconnected() -> None:
            self.service.metrics.set_livekit_connected(True)
            self.service.metrics.livekit_reconnected()

        room.on("reconnected", on_reconnected)
        # Tracks that were subscribed before the handlers existed.
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None and pub.subscribed:
                    on_subscribed(pub.track, pub, p)

    async def _consume(self, track: rtc.Track, sid: str, speaker: str, publisher: TranscriptPublisher,
                       box: dict[str, _Track]) -> None:
        loop = asyncio.get_running_loop()
        rt = self.service.runtime

        def on_event(event: TranscriptEvent) -> None:
            loop.call_soon_threadsafe(publisher.submit, event, sid)

        await asyncio.sleep(0)  # let on_subscribed register the entry before we look it up
        pipe = rt.open_stream(sid, speaker, on_event)
        entry = box.get(sid)
        if entry is not None:
            entry.pipe = pipe
        # LiveKit resamples and downmixes for us (its own resampler): we receive 16 kHz mono int16.
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        log.info("transcribing track %s of %s", sid, speaker)
        try:
            async for ev in stream:
                frame = ev.frame
                try:
                    pipe.push(np.frombuffer(frame.data, dtype=np.int16).copy())
                except Exception:
                    self.service.metrics.bad_audio_frame()
                    log.exception("dropping a bad audio frame from %s", speaker)
        except asyncio.CancelledError:
            pass
        finally:
            rt.close_stream(sid)  # flushes: the open utterance's final is still published
            await stream.aclose()

    async def _detach(self, publisher: TranscriptPublisher) -> None:
        tracks = list(self._tracks.values())
        self._tracks.clear()
        for t in tracks:
            t.task.cancel()
        await asyncio.gather(*(t.task for t in tracks), return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.service.runtime.wait_idle, self.options.grace_s)
        await asyncio.sleep(0.05)  # let call_soon_threadsafe deliveries reach the publisher queue
        await publisher.close(self.options.grace_s)


def _looks_like_auth(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("401", "unauthorized", "invalid token", "signature", "permission"))


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()


async def run_agent(settings: WorkerSettings, service: WorkerService | None = None,
                    stop: asyncio.Event | None = None, options: AgentOptions | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the process exit code."""
    try:
        settings.require_livekit()
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    own = service is None
    svc = service if service is not None else await loop.run_in_executor(None, WorkerService.start, settings)
    try:
        return await RoomAgent(settings, svc, options or AgentOptions()).run(stop)
    finally:
        if own:
            svc.close()
