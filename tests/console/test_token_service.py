"""The console's token service through aiohttp's test client: grants, secrecy, room checks, rate limits, static."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from livekit.api import TokenVerifier

from livenexus_console import ConsoleConfig, KubeRooms, RateLimiter, StaticRooms
from livenexus_console.app import clean_name, content_security_policy, identity_for
from livenexus_console.config import ConfigError
from livenexus_console.proxies import parse_networks
from livenexus_console.rooms import RoomsUnavailable, room_names

from .apptools import KEY, SECRET, ClientFactory, make_config, post_token


async def test_token_is_scoped_to_the_room_and_signed(make_client: ClientFactory) -> None:
    client = await make_client(token_ttl_s=600)
    before = int(time.time())
    resp = await post_token(client, {"room": "demo", "name": "Ada Lovelace"})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"token", "url", "identity", "name", "room", "expiresInSeconds"}
    assert body["url"] == "ws://127.0.0.1:7880" and body["room"] == "demo" and body["name"] == "Ada Lovelace"
    assert body["identity"].startswith("web-ada-lovelace-")
    claims = TokenVerifier(KEY, SECRET).verify(body["token"])
    v = claims.video
    assert claims.identity == body["identity"] and claims.name == "Ada Lovelace"
    assert v.room == "demo" and v.room_join is True
    assert v.can_publish is True and v.can_publish_sources == ["microphone"]
    # The page only reads transcripts (subscribe) and publishes its microphone: it never sends data.
    assert v.can_subscribe is True and v.can_publish_data is False and not v.can_update_own_metadata
    assert not v.room_admin and not v.room_create and not v.room_list and not v.room_record
    assert not v.destination_room and not v.hidden and not v.recorder and not v.agent
    raw = jwt.decode(body["token"], options={"verify_signature": False})
    assert raw["iss"] == KEY
    assert before + 600 - 5 <= raw["exp"] <= int(time.time()) + 600 + 5
    with pytest.raises(jwt.InvalidSignatureError):
        TokenVerifier(KEY, "another-secret-" + "y" * 40).verify(body["token"])


async def test_every_visitor_gets_a_fresh_identity(make_client: ClientFactory) -> None:
    client = await make_client()
    ids = set()
    for _ in range(5):
        resp = await post_token(client, {"room": "other"})
        assert resp.status == 200
        ids.add((await resp.json())["identity"])
    assert len(ids) == 5 and all(i.startswith("web-visitor-") for i in ids)


async def test_the_secret_never_leaves_the_server(make_client: ClientFactory, tmp_path: Path) -> None:
    (tmp_path / "dist" / "assets").mkdir(parents=True)
    (tmp_path / "dist" / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "dist" / "assets" / "app.js").write_text("console.log(1)")
    client = await make_client()
    calls = [
        client.get("/"),
        client.get("/index.html"),
        client.get("/assets/app.js"),
        client.get("/assets/missing.js"),
        client.get("/api/config"),
        client.get("/healthz"),
        client.get("/nope"),
        post_token(client, {"room": "demo", "name": "x"}),
        post_token(client, {"room": "unknown"}),
        post_token(client, {"room": "../etc"}),
        client.post("/api/token", data="not json", headers={"Content-Type": "application/json"}),
    ]
    for call in calls:
        resp = await call
        text = await resp.text()
        assert SECRET not in text
        assert all(SECRET not in v for v in resp.headers.values())
    assert SECRET not in repr(make_config(tmp_path))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"room": "nope"}, 404, "unknown_room"),
        ({"room": "Demo"}, 404, "unknown_room"),  # room names are case-sensitive in LiveKit
        ({"room": "../demo"}, 400, "bad_room"),
        ({"room": ""}, 400, "bad_room"),
        ({"room": 7}, 400, "bad_room"),
        ({}, 400, "bad_room"),
        ({"room": "demo", "name": 5}, 400, "bad_name"),
        (["demo"], 400, "bad_request"),
    ],
)
async def test_bad_requests_are_refused(make_client: ClientFactory, body: Any, status: int, code: str) -> None:
    client = await make_client()
    resp = await post_token(client, body)
    assert resp.status == status
    payload = await resp.json()
    assert payload["code"] == code and "token" not in payload


async def test_only_json_bodies_of_bounded_size(make_client: ClientFactory) -> None:
    client = await make_client()
    form = await client.post("/api/token", data={"room": "demo"})
    assert form.status == 415
    junk = await client.post("/api/token", data="{room", headers={"Content-Type": "application/json"})
    assert junk.status == 400 and (await junk.json())["code"] == "bad_json"
    big = await post_token(client, {"room": "demo", "name": "n" * 10_000})
    assert big.status == 413


async def test_rate_limit_per_client_ip(make_client: ClientFactory) -> None:
    client = await make_client(burst=2, rate_per_minute=1.0)
    assert (await post_token(client, {"room": "demo"})).status == 200
    assert (await post_token(client, {"room": "nope"})).status == 404  # refused attempts count too
    limited = await post_token(client, {"room": "demo"})
    assert limited.status == 429
    retry = int(limited.headers["Retry-After"])
    assert 1 <= retry <= 60
    body = await limited.json()
    assert body["code"] == "rate_limited" and "token" not in body
    # Without trusted proxies a client cannot escape by claiming another address.
    spoof = await post_token(client, {"room": "demo"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoof.status == 429


async def test_forwarded_clients_are_limited_separately_behind_a_proxy(make_client: ClientFactory) -> None:
    # The test client connects from 127.0.0.1: that is the trusted proxy here.
    client = await make_client(burst=1, rate_per_minute=1.0, trusted_proxies=parse_networks("127.0.0.1/32"))
    a = {"X-Forwarded-For": "203.0.113.1"}
    b = {"X-Forwarded-For": "203.0.113.2"}
    assert (await post_token(client, {"room": "demo"}, a)).status == 200
    assert (await post_token(client, {"room": "demo"}, a)).status == 429
    assert (await post_token(client, {"room": "demo"}, b)).status == 200
    # Client a puts a made-up hop in front; the proxy appends a's real address, which is what counts.
    for fake in ("198.51.100.7", "198.51.100.8, 10.9.9.9", "garbage"):
        spoofed = {"X-Forwarded-For": f"{fake}, 203.0.113.1"}
        assert (await post_token(client, {"room": "demo"}, spoofed)).status == 429, fake


def test_token_bucket_refills_and_forgets_idle_keys() -> None:
    now = [100.0]
    limiter = RateLimiter(capacity=2, rate_per_s=0.5, max_keys=3, clock=lambda: now[0])
    assert limiter.take("a").allowed and limiter.take("a").allowed
    denied = limiter.take("a")
    assert not denied.allowed and denied.retry_after_s == 2
    now[0] += 1.0
    denied = limiter.take("a")
    assert not denied.allowed and denied.retry_after_s == 1
    now[0] += 1.0
    assert limiter.take("a").allowed
    now[0] += 100.0
    first = limiter.take("a")
    assert first.allowed and first.remaining == 1  # refilled to capacity, never beyond
    for key in ("b", "c", "d"):
        limiter.take(key)
    assert len(limiter) == 3  # "a" was least recently used and dropped
    with pytest.raises(ValueError):
        RateLimiter(capacity=0, rate_per_s=1)


async def test_config_lists_rooms_and_the_browser_url(make_client: ClientFactory) -> None:
    client = await make_client(livekit_url="https://lk.example.test/", rooms=("b", "a"))
    body = await (await client.get("/api/config")).json()
    assert body == {
        "livekitUrl": "wss://lk.example.test",
        "rooms": ["a", "b"],
        "tokenTtlSeconds": 120,
        "auth": "none",
        "microphone": True,
        "agentIdentityPrefix": "livenexus-agent",
    }
    health = await client.get("/healthz")
    assert health.status == 200 and await health.json() == {"ok": True}
    assert (await client.get("/api/config")).headers["Cache-Control"] == "no-store"


async def test_static_page_and_headers(make_client: ClientFactory, tmp_path: Path) -> None:
    client = await make_client()
    missing = await client.get("/")
    assert missing.status == 503 and "npm run build" in await missing.text()
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>LiveNexus</title>")
    (dist / "assets" / "index-abc.js").write_text("export {}")
    (tmp_path / "secret.txt").write_text("do not serve")
    page = await client.get("/")
    assert page.status == 200 and "LiveNexus" in await page.text()
    csp = page.headers["Content-Security-Policy"]
    assert "connect-src 'self' ws://127.0.0.1:7880 http://127.0.0.1:7880" in csp and "script-src 'self'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    asset = await client.get("/assets/index-abc.js")
    assert asset.status == 200 and "immutable" in asset.headers["Cache-Control"]
    for path in ("/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "do not serve" not in await resp.text()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_kube_rooms_are_cached_and_survive_api_outages(make_client: ClientFactory) -> None:
    listing: list[Mapping[str, Any]] = [
        {"metadata": {"name": "standup"}, "spec": {"room": "daily-standup"}},
        {"metadata": {"name": "plain"}, "spec": {}},
        {"metadata": {"name": "paused"}, "spec": {"suspend": True}},
    ]
    calls: list[int] = []
    failing = [False]

    async def lister() -> list[Mapping[str, Any]]:
        calls.append(1)
        if failing[0]:
            raise OSError("connection refused")
        return listing

    clock = FakeClock()
    rooms = KubeRooms(lister, ttl_s=10, clock=clock)
    client = await make_client(source=rooms)
    assert (await (await client.get("/api/config")).json())["rooms"] == ["daily-standup", "plain"]
    assert (await post_token(client, {"room": "daily-standup"})).status == 200
    assert (await post_token(client, {"room": "standup"})).status == 404  # the object name is not the room
    assert (await post_token(client, {"room": "paused"})).status == 404
    assert len(calls) == 1  # served from the cache
    listing.append({"metadata": {"name": "new-room"}, "spec": {}})
    clock.now = 11
    assert (await post_token(client, {"room": "new-room"})).status == 200
    assert len(calls) == 2
    failing[0] = True
    clock.now = 30
    assert (await post_token(client, {"room": "new-room"})).status == 200  # stale list while the API is down
    assert len(calls) == 3


async def test_no_room_list_at_all_is_503(make_client: ClientFactory) -> None:
    async def lister() -> list[Mapping[str, Any]]:
        raise OSError("connection refused")

    client = await make_client(source=KubeRooms(lister))
    assert (await client.get("/api/config")).status == 503
    resp = await post_token(client, {"room": "demo"})
    assert resp.status == 503 and (await resp.json())["code"] == "rooms_unavailable"
    with pytest.raises(RoomsUnavailable):
        await KubeRooms(lister).rooms()


async def test_concurrent_callers_share_one_listing() -> None:
    calls: list[int] = []

    async def lister() -> list[Mapping[str, Any]]:
        calls.append(1)
        await asyncio.sleep(0.05)
        return [{"metadata": {"name": "r"}, "spec": {}}]

    rooms = KubeRooms(lister, ttl_s=10)
    results = await asyncio.gather(*(rooms.rooms() for _ in range(10)))
    assert results == [("r",)] * 10 and len(calls) == 1


def test_room_names_and_helpers() -> None:
    assert room_names([{"metadata": {"name": "x"}}, {"metadata": {}, "spec": {"room": "y"}}, {"spec": "bad"}]) == (
        "x",
        "y",
    )
    assert clean_name("  Ada\x00\n Lovelace\u200b ") == "Ada Lovelace"
    assert len(clean_name("x" * 500)) == 64
    assert identity_for("").startswith("web-visitor-")
    assert identity_for("Zoë & Co!").startswith("web-zo-co-")
    assert "wss://h:7880 https://h:7880" in content_security_policy("wss://h:7880")


async def test_static_rooms_sorted() -> None:
    assert await StaticRooms(["b", "a", "b"]).rooms() == ("a", "b")


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY"):
        make_config(tmp_path, api_secret="")
    with pytest.raises(ConfigError, match="LiveKit URL"):
        make_config(tmp_path, livekit_url="127.0.0.1:7880")
    with pytest.raises(ConfigError, match="room name"):
        make_config(tmp_path, rooms=("ok", "not ok"))
    with pytest.raises(ConfigError, match="TTL"):
        make_config(tmp_path, token_ttl_s=10)
    env = {"LIVEKIT_URL": "http://lk:7880", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    cfg = ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_ROOMS": "a, b,,a"})
    assert cfg.rooms == ("a", "b") and cfg.public_livekit_url == "ws://lk:7880" and cfg.host == "127.0.0.1"
    public = ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_LIVEKIT_URL": "wss://public.example.test"})
    assert public.public_livekit_url == "wss://public.example.test"
    assert ConsoleConfig.from_env(env, port=0, rooms=("z",)).rooms == ("z",)
    with pytest.raises(ConfigError, match="LIVEKIT_URL"):
        ConsoleConfig.from_env({"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"})
