"""The LiveKit webhook endpoint: signed events in, the room book updated, the dispatch loop woken.

Everything that arrives here is untrusted. A request is refused before any parsing unless it is small
(:data:`MAX_BODY_BYTES`) and signed: LiveKit puts a JWT in the Authorization header, signed with the API
secret and carrying the sha256 of the body; ``livekit.api.WebhookReceiver`` checks both. A valid event
replayed later is harmless: applying it again is a duplicate (see ``dispatch_book``). Unknown events are
answered 200 (LiveKit must not retry them) and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from livekit import api

from livenexus_operator.dispatch_book import ParticipantView, RoomBook
from livenexus_operator.metrics import METRICS, OperatorMetrics

log = logging.getLogger(__name__)

PATH = "/livekit/webhook"
MAX_BODY_BYTES = 64 * 1024
"""Larger bodies are refused unread (LiveKit's events are a few KiB)."""
KNOWN_EVENTS = (
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
)
AUDIO = 0
"""TrackType.AUDIO."""


def participant_view(info: api.ParticipantInfo) -> ParticipantView:
    audio = tuple(t.sid for t in info.tracks if t.type == AUDIO and t.sid)
    return ParticipantView(info.sid, info.identity, int(info.kind), dict(info.attributes), audio)


def apply_event(book: RoomBook, event: api.WebhookEvent, now: float) -> str:
    """Apply one verified event to the book; the result for the metric."""
    room = event.room
    who = participant_view(event.participant)
    if event.event == "room_started":
        return book.room_started(room.name, room.sid, room.metadata, now)
    if event.event == "room_finished":
        return book.room_finished(room.name, room.sid)
    if event.event == "participant_joined":
        return book.participant_joined(room.name, room.sid, who, now)
    if event.event == "participant_left":
        return book.participant_left(room.name, room.sid, who, now)
    if event.event in ("track_published", "track_unpublished"):
        if event.track.type != AUDIO:
            return "ignored"
        return book.track(room.name, room.sid, who, event.track.sid, event.event == "track_published", now)
    return "ignored"


@dataclass
class RateLimit:
    """A token bucket per source address, for requests that fail verification only: a flood of forged
    webhooks costs a JWT check each, signed ones from LiveKit are never limited."""

    per_second: float = 20.0
    """Refill rate."""
    burst: float = 100.0
    """Bucket size."""
    max_sources: int = 4096
    """Sources remembered (the oldest is forgotten beyond)."""

    def __post_init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        if source not in self._buckets and len(self._buckets) >= self.max_sources:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[source] = (tokens - 1.0, now)
        return True


class WebhookEndpoint:
    """The aiohttp handler: verify, apply to ``book``, call ``wake``."""

    def __init__(self, book: RoomBook, api_key: str, api_secret: str, wake: Callable[[], None],
                 metrics: OperatorMetrics = METRICS, clock: Callable[[], float] = time.monotonic) -> None:
        self.book = book
        self.receiver = api.WebhookReceiver(api.TokenVerifier(api_key, api_secret))
        self.wake = wake
        self.metrics = metrics
        self.clock = clock
        self.limit = RateLimit()

    def _count(self, event: str, result: str) -> None:
        self.metrics.webhooks.labels(event=event, result=result).inc()

    def _refuse(self, request: web.Request, status: int, result: str, text: str) -> web.Response:
        self._count("invalid", result)
        source = request.remote or ""
        if not self.limit.allow(source, self.clock()):
            self._count("invalid", "rate_limited")
            return web.Response(status=429, text="too many invalid webhooks\n")
        return web.Response(status=status, text=text + "\n")

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return self._refuse(request, 413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._refuse(request, 401, "unsigned", "Authorization header required")
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return self._refuse(request, 413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(request, 400, "bad_request", "body is not UTF-8")
        token = auth.removeprefix("Bearer ").strip()
        try:
            event = await asyncio.to_thread(self.receiver.receive, body, token)
        except Exception as exc:  # the receiver raises bare Exception on a hash mismatch
            log.info("refused a webhook from %s: %s", request.remote, type(exc).__name__)
            return self._refuse(request, 401, "bad_signature", "signature does not verify")
        name = event.event if event.event in KNOWN_EVENTS else "other"
        result = apply_event(self.book, event, self.clock())
        self._count(name, result)
        if result == "applied":
            self.wake()
        return web.Response(text="ok\n")


async def serve(endpoint: WebhookEndpoint, host: str, port: int) -> web.AppRunner:
    """Serve the endpoint until the returned runner is cleaned up."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH, endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("LiveKit webhooks on %s:%d%s", host, port, PATH)
    return runner
