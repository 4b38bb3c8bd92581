"""`livenexus-worker run`: join one LiveKit room as an agent and transcribe every participant's audio.

One StreamPipeline per subscribed audio track (``tracks.TrackSet``, with its caps), all sharing the
process's Runtime; events hop from the inference thread to the event loop and out through one publisher
that outlives each connection (finals of a dropped connection go out in the next one). Lost connections are
retried with jittered exponential backoff and a fresh token; the backoff only starts over after a stable
connection. SIGTERM works against one deadline: stop taking audio, decode the open utterances, publish their
finals, leave the room; the room's sinks (webhook, file) deliver alongside publishing and leaving, until the
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any

from livekit import rtc

from livenexus_common.cli import EXIT_AUTH, EXIT_ERROR, EXIT_OK, sleep_or_stop, stop_on_signals
from livenexus_worker.room.backoff import Backoff, BackoffOptions
from livenexus_worker.room.publisher import PublisherOptions, TranscriptPublisher
from livenexus_worker.room.room_metrics import RoomMetrics
from livenexus_worker.room.service import WorkerService
from livenexus_worker.room.settings import SettingsError, WorkerSettings
from livenexus_worker.room.sinks import SinkSet, SinkSettings, TappedPublisher
from livenexus_worker.room.token import mint_token
from livenexus_worker.room.tracks import TrackLimits, TrackSet

log = logging.getLogger(__name__)


class AuthError(RuntimeError):
    """LiveKit refused our credentials: retrying cannot help."""


@dataclass(frozen=True)
class AgentOptions:
    """Connection handling, shutdown and the bounds of what a room may ask."""

    deadline_s: float = 20.0
    """SIGTERM → exit, every stage together (below the pod's 30 s terminationGracePeriodSeconds)."""
    settle_s: float = 4.0
    """Of the deadline, first given to open utterances to end by themselves (no new one starts)."""
    leave_s: float = 2.0
    """Of the deadline, kept for leaving the room."""
    publish_s: float = 3.0
    """Of the deadline, kept for publishing the last finals once they are decoded."""
    backoff: BackoffOptions = field(default_factory=BackoffOptions)
    """Reconnect pacing."""
    connect_timeout_s: float = 15.0
    """A connection attempt slower than this is logged (and again each time this passes), not cancelled."""
    connect_give_up_s: float = 120.0
    """A connection attempt still pending after this is cancelled and retried (a last resort: see _connect)."""
    replaced_backoff_s: float = 5.0
    """Least delay after another participant took our identity: the one that replaced us is likely the
    rightful worker (a newer pod), so we yield to it for longer each time instead of kicking it back."""
    limits: TrackLimits = field(default_factory=TrackLimits)
    """Tracks and speakers transcribed at once."""
    publisher: PublisherOptions = field(default_factory=PublisherOptions)
    """Bounds of the publish queue."""
    sinks: SinkSettings = field(default_factory=SinkSettings)
    """Where finals go besides the room (spec.sinks); none by default."""
    sink_s: float = 6.0
    """Of the deadline, what the sinks get after decoding (alongside publishing and leaving) to deliver what
    is queued; the rest goes to the undelivered file. A receiver that is down costs a shutdown this much."""

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> AgentOptions:
        d = settings.shutdown_deadline_s
        # Short deadlines (tests, tiny grace periods) still keep a share for publishing and leaving.
        return cls(deadline_s=d, settle_s=min(4.0, 0.2 * d), leave_s=min(2.0, 0.1 * d), publish_s=min(3.0, 0.15 * d),
                   sink_s=min(6.0, 0.3 * d),
                   limits=TrackLimits(max_streams=settings.max_streams, max_speakers=settings.max_speakers,
                                      frame_ms=settings.frame_ms, trace_stages=settings.trace_stages))


@dataclass
class RoomAgent:
    """The worker's presence in its room."""

    settings: WorkerSettings
    """Room, URL and credentials."""
    service: WorkerService
    """Runtime, metrics, tier control."""
    options: AgentOptions = field(default_factory=AgentOptions)
    """Reconnect, shutdown and caps."""
    connects: int = 0
    """Successful connections so far (reconnects = connects - 1)."""

    def __post_init__(self) -> None:
        self.backoff = Backoff(self.options.backoff)
        self.publisher: TranscriptPublisher | None = None
        self.tracks: TrackSet | None = None
        self.disconnect_reasons: list[str] = []
        """DisconnectReason names of the lost connections, latest last (at most 64 kept)."""
        self.shutdown_stages: dict[str, float] = {}
        """Seconds each shutdown stage took (tests and logs read it)."""
        self._room_metrics = RoomMetrics.of(self.service.metrics)
        self.sinks: SinkSet | None = None
        self.sinks_left: dict[str, int] | None = None
        """Finals the sinks could not deliver by the shutdown (None until they closed)."""

    async def run(self, stop: asyncio.Event) -> int:
        tapped = TappedPublisher(self.service.metrics, self.options.publisher)
        if self.options.sinks.enabled:
            tapped.sinks = self.sinks = SinkSet(self.options.sinks, self.settings.room, self.service.metrics).start()
        publisher = self.publisher = tapped.start()
        try:
            while not stop.is_set():
                room = rtc.Room()
                try:
                    if not await self._connect(room, stop):
                        break
                except AuthError as exc:
                    log.error("LiveKit rejected the worker's credentials: %s", exc)
                    return EXIT_AUTH
                except Exception as exc:
                    if self.connects == 0 and _looks_like_auth(exc):
                        log.error("LiveKit rejected the worker's credentials (check LIVEKIT_API_KEY/SECRET): %s", exc)
                        return EXIT_AUTH
                    delay = self.backoff.next_delay()
                    log.warning("connecting to %s failed (%s); retrying in %.1fs", self.settings.livekit_url, exc,
                                delay)
                    await _disconnect(room, 1.0)
                    await sleep_or_stop(stop, delay)
                    continue
                self.backoff.connected()
                reason = await self._session(room, publisher, stop)
                if reason is None:
                    return EXIT_OK  # stopped: _session shut down within the deadline
                replaced = reason == "DUPLICATE_IDENTITY"
                delay = self.backoff.next_delay(self.options.replaced_backoff_s if replaced else 0.0)
                if replaced:
                    log.error("another participant joined room %s as %s and replaced this worker; retrying in "
                              "%.1fs (each worker needs its own identity)", self.settings.room,
                              self.settings.identity, delay)
                else:
                    log.warning("disconnected from room %s (%s); reconnecting in %.1fs", self.settings.room, reason,
                                delay)
                await sleep_or_stop(stop, delay)
            return EXIT_OK
        finally:
            if publisher is not None and self.publisher is publisher:
                await publisher.close(0.0)  # stopped while disconnected: held finals are counted and logged
            await self._close_sinks(self.options.sink_s)
            self.service.metrics.set_livekit_connected(False)

    async def _close_sinks(self, timeout: float) -> None:
        sinks, self.sinks = self.sinks, None
        if sinks is not None:
            self.sinks_left = await sinks.close(timeout)

    async def _connect(self, room: rtc.Room, stop: asyncio.Event) -> bool:
        """Connect, unless ``stop`` comes first (then False)."""
        token = mint_token(self.settings)
        # The SDK's connect is not cancelled when it is slow: its native side completes the join anyway, and a
        # join nobody takes up aborts the whole process ("FFI Panic: timed out waiting for
        # ReadyForRoomEventRequest"; seen in the 50-participant crowd on a loaded machine, where joins took
        # > 15 s). The SDK bounds its own attempts; past connect_give_up_s it is abandoned all the same.
        connect = asyncio.ensure_future(
            room.connect(self.settings.livekit_url, token, rtc.RoomOptions(auto_subscribe=True)))
        waited = 0.0
        while not connect.done():
            await _first(asyncio.shield(connect), stop.wait(), asyncio.sleep(self.options.connect_timeout_s))
            if connect.done():
                break
            if stop.is_set():
                await _cancel(connect)
                await _disconnect(room, 1.0)
                return False
            waited += self.options.connect_timeout_s
            if waited >= self.options.connect_give_up_s:
                await _cancel(connect)
                raise TimeoutError(f"joining took over {waited:.0f} s")
            log.warning("joining room %s is slow (%.0f s so far): waiting for LiveKit's own attempts to end",
                        self.settings.room, waited)
        connect.result()  # raises the connect error
        self.connects += 1
        if self.connects > 1:
            self.service.metrics.livekit_reconnected()
        self.service.metrics.set_livekit_connected(True)
        log.info("joined room %s as %s", self.settings.room, self.settings.identity)
        return True

    async def _session(self, room: rtc.Room, publisher: TranscriptPublisher, stop: asyncio.Event) -> str | None:
        """One connection: until it drops (returns LiveKit's reason) or ``stop`` (shuts down, returns None)."""
        disconnected = asyncio.Event()
        reason: list[str] = []
        tracks = self.tracks = TrackSet(self.service.runtime, publisher, self.service.metrics, self.options.limits)

        def on_disconnected(why: Any = None) -> None:
            with contextlib.suppress(Exception):
                reason.append(rtc.DisconnectReason.Name(why))
            disconnected.set()

        def on_reconnecting() -> None:  # the SDK tries to resume (or re-join) by itself: hold finals meanwhile
            self.service.metrics.set_livekit_connected(False)
            publisher.detach()
            tracks.interrupted()

        def on_reconnected() -> None:
            self.service.metrics.set_livekit_connected(True)
            self.service.metrics.livekit_reconnected()
            tracks.resumed(room)
            publisher.attach(room)

        room.on("disconnected", on_disconnected)
        room.on("reconnecting", on_reconnecting)
        room.on("reconnected", on_reconnected)
        tracks.attach(room)
        publisher.attach(room)
        await _first(stop.wait(), disconnected.wait())
        if stop.is_set() and not disconnected.is_set():
            await self._shutdown(room, tracks, publisher, time.monotonic())
            return None
        why = reason[0] if reason else "UNKNOWN_REASON"
        self.disconnect_reasons = [*self.disconnect_reasons[-63:], why]
        if self._room_metrics is not None:
            self._room_metrics.disconnects.labels(reason=why).inc()
        self.service.metrics.set_livekit_connected(False)
        publisher.detach()
        await tracks.close()  # open utterances end: their finals wait in the publisher for the next room
        await _disconnect(room, 2.0)  # releases the old room's native handles
        if stop.is_set():
            await self._shutdown(None, None, publisher, time.monotonic())
            return None
        return why

    async def _shutdown(self, room: rtc.Room | None, tracks: TrackSet | None, publisher: TranscriptPublisher,
                        t0: float) -> None:
        """Let open utterances end, decode them, publish them, leave: all by ``t0 + deadline_s``."""
        o = self.options
        end = t0 + o.deadline_s
        stages = self.shutdown_stages
        mark = time.monotonic()
        if tracks is not None:
            await tracks.settle(o.settle_s)
        stages["settle"], mark = time.monotonic() - mark, time.monotonic()
        if tracks is not None:
            await tracks.close()  # what is still open is flushed: its final decode is queued
        stages["flush"], mark = time.monotonic() - mark, time.monotonic()
        budget = end - o.leave_s - o.publish_s - mark
        idle = await asyncio.get_running_loop().run_in_executor(None, self.service.runtime.wait_idle, max(0.0, budget))
        if not idle:
            log.error("finals still decoding at the shutdown deadline (%.1fs) are lost", o.deadline_s)
        await asyncio.sleep(0)  # events the inference thread handed over are queued by now; let them land
        stages["decode"], mark = time.monotonic() - mark, time.monotonic()
        # The sinks need no room: they deliver while the room's publishing and leaving go on, until the end.
        sink_budget = min(o.sink_s, end - mark - 0.1)
        sinks = asyncio.ensure_future(self._close_sinks(sink_budget)) if self.sinks is not None else None
        left = await publisher.close(end - o.leave_s - mark)
        self.publisher = None
        stages["publish"], mark = time.monotonic() - mark, time.monotonic()
        if room is not None:
            await _disconnect(room, max(0.5, end - mark))
        stages["leave"], mark = time.monotonic() - mark, time.monotonic()
        if sinks is not None:
            await sinks
            stages["sinks"] = time.monotonic() - mark
        log.info("shut down in %.1fs (%s); %d final(s) unpublished", time.monotonic() - t0,
                 ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()), left)


async def _disconnect(room: rtc.Room, timeout: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(room.disconnect(), timeout)


def _looks_like_auth(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("401", "unauthorized", "invalid token", "signature", "permission"))


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _first(first: Awaitable[Any], *others: Awaitable[Any]) -> bool:
    """Wait for whichever finishes first and cancel the rest; True when it was ``first``."""
    head = asyncio.ensure_future(first)
    tasks = [head, *(asyncio.ensure_future(a) for a in others)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return head in done


async def run_agent(settings: WorkerSettings, service: WorkerService | None = None,
                    stop: asyncio.Event | None = None, options: AgentOptions | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the process exit code."""
    try:
        settings.require_livekit()
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    if options is None:
        try:
            options = replace(AgentOptions.from_settings(settings), sinks=SinkSettings.from_env())
        except SettingsError as exc:
            log.error("%s", exc)
            return EXIT_ERROR
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    own = service is None
    svc = service if service is not None else await loop.run_in_executor(None, WorkerService.start, settings)
    try:
        return await RoomAgent(settings, svc, options).run(stop)
    finally:
        if own:
            svc.close(timeout=1.0)  # idle already, or past the deadline: never wait beyond it
