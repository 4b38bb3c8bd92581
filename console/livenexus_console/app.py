"""The aiohttp application: the built page, ``/api/config``, ``POST /api/token`` and ``/healthz``."""

from __future__ import annotations

import json
import logging
import re
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from livekit.api import AccessToken, VideoGrants

from livenexus_console import auth
from livenexus_console.config import ROOM_NAME_RE, ConsoleConfig
from livenexus_console.proxies import client_address, forwarded_entries, rate_key
from livenexus_console.ratelimit import RateLimiter
from livenexus_console.rooms import KubeRooms, RoomSource, RoomsUnavailable, StaticRooms, kube_lister

log = logging.getLogger("livenexus_console")

MAX_NAME_CHARS = 64
MAX_BODY_BYTES = 4096


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status, headers=headers)


def clean_name(raw: str) -> str:
    """A display name without control characters or surrounding space, at most :data:`MAX_NAME_CHARS` long."""
    kept = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")
    return " ".join(kept.split())[:MAX_NAME_CHARS]


def identity_for(name: str) -> str:
    """A participant identity unique per visitor: ``web-<slug of name>-<8 random hex digits>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-") or "visitor"
    return f"web-{slug}-{secrets.token_hex(4)}"


def content_security_policy(livekit_url: str) -> str:
    """Scripts and styles from this origin only; network access to this origin and the LiveKit server."""
    parts = urlsplit(livekit_url)
    secure = parts.scheme in ("wss", "https")
    lk = f"{'wss' if secure else 'ws'}://{parts.netloc} {'https' if secure else 'http'}://{parts.netloc}"
    return (
        "default-src 'self'; "
        f"connect-src 'self' {lk}; "
        "img-src 'self' data:; media-src 'self' blob: mediastream:; "
        "script-src 'self'; style-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
    )


class ConsoleService:
    """Request handlers sharing one config, room source and rate limiter."""

    def __init__(self, config: ConsoleConfig, rooms: RoomSource, limiter: RateLimiter) -> None:
        self.config = config
        self.rooms = rooms
        self.limiter = limiter
        self.csp = content_security_policy(config.public_livekit_url)

    def client_key(self, request: web.Request) -> str:
        """The rate-limit key: the client as far as configured proxies vouch for it, else the socket peer."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        host = peer[0] if isinstance(peer, tuple) and peer else None
        cfg = self.config
        if not cfg.trusted_proxies and not cfg.proxy_hops:
            return rate_key(client_address(host, ()))
        entries = forwarded_entries(request.headers.getall("X-Forwarded-For", []))
        return rate_key(client_address(host, entries, cfg.trusted_proxies, cfg.proxy_hops))

    def authenticate(self, request: web.Request) -> auth.AuthResult:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        cfg = self.config
        return auth.check(
            cfg.auth_mode,
            request.headers,
            peer[0] if isinstance(peer, tuple) and peer else None,
            token=cfg.auth_token,
            user_header=cfg.auth_user_header,
            trusted=cfg.trusted_proxies,
        )

    def mint(self, room: str, identity: str, name: str) -> str:
        # The page reads transcripts from data messages and text streams (both need only subscribe) and, when
        # visitors may speak, publishes one microphone track; it never sends data, so it may not.
        speak = self.config.allow_microphone
        grants = VideoGrants(
            room_join=True,
            room=room,
            can_publish=speak,
            can_publish_sources=["microphone"] if speak else [],
            can_subscribe=True,
            can_publish_data=False,
            can_update_own_metadata=False,
        )
        return (
            AccessToken(self.config.api_key, self.config.api_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_ttl(timedelta(seconds=self.config.token_ttl_s))
            .with_grants(grants)
            .to_jwt()
        )

    def rate_limited(self, request: web.Request) -> web.Response | None:
        """Take one token for this client; the 429 to send when there was none."""
        decision = self.limiter.take(self.client_key(request))
        if decision.allowed:
            return None
        return _error(
            429,
            "rate_limited",
            f"too many token requests, retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def api_config(self, request: web.Request) -> web.Response:
        try:
            rooms = await self.rooms.rooms()
        except RoomsUnavailable as exc:
            log.warning("%s", exc)
            return _error(503, "rooms_unavailable", "the room list is unavailable, try again shortly")
        return web.json_response(
            {
                "livekitUrl": self.config.public_livekit_url,
                "rooms": list(rooms),
                "tokenTtlSeconds": self.config.token_ttl_s,
                "auth": self.config.auth_mode,
                "microphone": self.config.allow_microphone,
                "agentIdentityPrefix": self.config.agent_identity_prefix,
            }
        )

    async def api_token(self, request: web.Request) -> web.Response:
        limited = self.rate_limited(request)
        if limited is not None:
            return limited
        if request.content_type != "application/json":
            return _error(415, "bad_content_type", "send the request as application/json")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, "too_large", "request body too large")
        try:
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                return _error(413, "too_large", "request body too large")
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting fits in 4 KB: "[[[[..."
            return _error(400, "bad_json", "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "expected a JSON object {room, name?}")
        room, name = body.get("room"), body.get("name", "")
        if not isinstance(room, str) or not ROOM_NAME_RE.match(room):
            return _error(400, "bad_room", "room must be a valid room name")
        if name is None:
            name = ""
        if not isinstance(name, str):
            return _error(400, "bad_name", "name must be a string")
        try:
            allowed = await self.rooms.rooms()
        except RoomsUnavailable as exc:
            log.warning("%s", exc)
            return _error(503, "rooms_unavailable", "the room list is unavailable, try again shortly")
        if room not in allowed:
            return _error(404, "unknown_room", f"room {room!r} is not open to the console")
        display = clean_name(name)
        identity = identity_for(display)
        token = self.mint(room, identity, display)
        log.info(
            "minted a %d s token for %s in room %s (user %s)",
            self.config.token_ttl_s,
            identity,
            room,
            request.get(USER_KEY, "?"),
        )
        return web.json_response(
            {
                "token": token,
                "url": self.config.public_livekit_url,
                "identity": identity,
                "name": display or identity,
                "room": room,
                "expiresInSeconds": self.config.token_ttl_s,
            }
        )

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.config.static_dir / "index.html"
        if not page.is_file():
            return web.Response(
                status=503,
                text=f"The console is not built: run `npm ci && npm run build` in console/ (no {page}).\n",
            )
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def asset(self, request: web.Request) -> web.StreamResponse:
        root = (self.config.static_dir / "assets").resolve()
        target = (root / request.match_info["path"]).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        # Vite puts a content hash in every asset name, so they never change under the same URL.
        return web.FileResponse(target, headers={"Cache-Control": "public, max-age=31536000, immutable"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_KEY: web.RequestKey[str] = web.RequestKey("livenexus_console_user", str)


def _auth_middleware(service: ConsoleService) -> Middleware:
    @web.middleware
    async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The page and its assets hold nothing secret; the API (room list, tokens) is what needs a user.
        if not request.path.startswith("/api/"):
            return await handler(request)
        result = service.authenticate(request)
        if result.ok:
            request[USER_KEY] = result.user
            return await handler(request)
        # Failed attempts spend the client's token budget, so an access key cannot be guessed at speed.
        limited = service.rate_limited(request)
        if limited is not None:
            return limited
        mode = service.config.auth_mode
        headers = {"WWW-Authenticate": 'Bearer realm="livenexus-console"'} if mode == "token" else None
        body = {"error": result.reason, "code": "unauthorized", "auth": mode}
        return web.json_response(body, status=401, headers=headers)

    return require_auth


def _headers_middleware(service: ConsoleService) -> Middleware:
    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Content-Security-Policy", service.csp)
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp

    return add_headers


SERVICE_KEY: web.AppKey[ConsoleService] = web.AppKey("console_service", ConsoleService)


def default_room_source(config: ConsoleConfig) -> RoomSource:
    if config.kube:
        return KubeRooms(kube_lister("" if config.all_namespaces else config.namespace), ttl_s=config.rooms_cache_s)
    return StaticRooms(config.rooms)


def build_app(
    config: ConsoleConfig, rooms: RoomSource | None = None, limiter: RateLimiter | None = None
) -> web.Application:
    """The whole service; ``rooms`` and ``limiter`` default to what ``config`` describes (tests inject fakes)."""
    service = ConsoleService(
        config,
        rooms if rooms is not None else default_room_source(config),
        limiter if limiter is not None else RateLimiter(config.burst, config.rate_per_minute / 60.0),
    )
    middlewares = [_headers_middleware(service), _auth_middleware(service)]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES * 4)
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/api/config", service.api_config)
    app.router.add_post("/api/token", service.api_token)
    app.router.add_get("/", service.index)
    app.router.add_get("/index.html", service.index)
    app.router.add_get("/assets/{path:.+}", service.asset)
    return app


def static_dir_status(path: Path) -> str:
    return "built" if (path / "index.html").is_file() else "NOT BUILT (run `npm ci && npm run build` in console/)"
