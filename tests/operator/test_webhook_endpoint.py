"""The webhook endpoint over real HTTP with livekit-api's own signing: signed events apply, forged ones are
refused and counted, and nothing hostile reaches the book."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.json_format import MessageToJson
from livekit import api

from livenexus_operator.dispatch_book import RoomBook
from livenexus_operator.metrics import OperatorMetrics
from livenexus_operator.webhooks import MAX_BODY_BYTES, PATH, WebhookEndpoint, serve

KEY, SECRET = "operator-key", "s" * 40


def event(kind: str, room: str = "r", track_type: int = 0, **extra: object) -> str:
    ev = api.WebhookEvent(event=kind, room=api.Room(name=room, sid="RM_1"),
                          participant=api.ParticipantInfo(sid="PA_1", identity="alice"),
                          track=api.TrackInfo(sid="TR_1", type=track_type), id="EV_1", created_at=1)
    return MessageToJson(ev)


def sign(body: str, secret: str = SECRET, key: str = KEY) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return api.AccessToken(key, secret).with_sha256(digest).to_jwt()


class Harness:
    def __init__(self) -> None:
        self.book = RoomBook()
        self.metrics = OperatorMetrics()
        self.wakes = 0
        self.endpoint = WebhookEndpoint(self.book, KEY, SECRET, self._wake, self.metrics)

    def _wake(self) -> None:
        self.wakes += 1

    def count(self, event: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "livenexus_operator_webhooks_total", {"event": event, "result": result})
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[tuple[Harness, TestClient]]:  # type: ignore[type-arg]
    from aiohttp import web

    h = Harness()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH, h.endpoint.handle)
    async with TestClient(TestServer(app)) as client:
        yield h, client


async def post(client: TestClient, body: str | bytes, auth: str | None) -> int:  # type: ignore[type-arg]
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    async with client.post(PATH, data=body, headers=headers) as resp:
        return resp.status


async def test_signed_audio_track_applies_and_wakes(harness: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
    h, client = harness
    body = event("track_published")
    assert await post(client, body, sign(body)) == 200
    assert h.book.rooms["r"].has_audio and h.wakes == 1
    assert h.count("track_published", "applied") == 1
    # The same delivery again (LiveKit retried, or someone replayed it): counted, nothing changes.
    assert await post(client, body, sign(body)) == 200
    assert h.count("track_published", "applied") == 2 and h.wakes == 2
    assert len(h.book.rooms["r"].people["PA_1"].audio) == 1


async def test_forged_webhooks_are_refused_and_counted(harness: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
    h, client = harness
    body = event("track_published")
    assert await post(client, body, sign(body, secret="x" * 40)) == 401  # someone else's secret
    assert await post(client, body, sign(body, key="other-key")) == 401  # unknown key
    assert await post(client, event("track_published", room="evil"), sign(body)) == 401  # body swapped
    assert await post(client, body, None) == 401  # unsigned
    assert await post(client, body, "Bearer not-a-jwt") == 401
    assert h.count("invalid", "bad_signature") == 4 and h.count("invalid", "unsigned") == 1
    assert h.book.rooms == {} and h.wakes == 0


async def test_oversized_and_undecodable_bodies_are_refused(harness: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
    h, client = harness
    big = "x" * (MAX_BODY_BYTES + 1)
    assert await post(client, big, sign(big)) == 413
    raw = b"\xff\xfe{}"
    assert await post(client, raw, "token") == 400
    assert h.count("invalid", "too_large") == 1 and h.count("invalid", "bad_request") == 1


async def test_unknown_and_video_events_are_ignored_and_counted(harness: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
    h, client = harness
    for body in (event("egress_started"), event("track_published", track_type=1)):
        assert await post(client, body, sign(body)) == 200
    assert h.count("other", "ignored") == 1 and h.count("track_published", "ignored") == 1
    assert "r" not in h.book.rooms or not h.book.rooms["r"].has_audio
    assert h.wakes == 0


async def test_a_flood_of_forgeries_is_rate_limited_per_source(harness: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
    h, client = harness
    h.endpoint.clock = lambda: 100.0  # a frozen clock: no refill during the flood
    body = event("room_started")
    statuses = [await post(client, body, "forged") for _ in range(int(h.endpoint.limit.burst) + 5)]
    assert statuses.count(429) == 5 and h.count("invalid", "rate_limited") == 5
    # Signed webhooks from the same source are never limited.
    assert await post(client, body, sign(body)) == 200


async def test_serve_binds_only_the_webhook_path() -> None:
    h = Harness()
    from livenexus_dev.livekit_server import free_port

    port = free_port()
    runner = await serve(h.endpoint, "127.0.0.1", port)
    try:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}{PATH}") as resp:
                assert resp.status == 405
            async with s.post(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_a_bad_webhook_port_in_the_environment_is_refused(port: str) -> None:
    from livenexus_operator.config import OperatorConfig

    with pytest.raises(ValueError, match="webhook_port"):
        OperatorConfig.from_env({"LIVENEXUS_WEBHOOK_PORT": port})
    assert not OperatorConfig.from_env({}).policies_enabled  # no LiveKit configured: policies stay off
