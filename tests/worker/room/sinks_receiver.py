"""A real webhook receiver on 127.0.0.1 (aiohttp) whose answers a test scripts: status codes, hangs, huge
bodies, redirects. It records every request as received (headers and raw body) and checks signatures the way
a receiver would (``livenexus_common.sinks.verify``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from livenexus_common.sinks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

Answer = Callable[[int, web.Request], Awaitable[web.StreamResponse]]
"""Given the 0-based number of the request (and the request), what to answer."""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out

    @property
    def key(self) -> str:
        return self.headers.get(IDEMPOTENCY_HEADER, "")

    def signed_by(self, key: bytes) -> bool:
        return verify(key, self.body, self.headers.get(TIMESTAMP_HEADER, ""), self.headers.get(SIGNATURE_HEADER, ""))


async def ok(_n: int, _request: web.Request) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


@dataclass
class Receiver:
    answer: Answer = ok
    """Scripted answers (default: 200)."""
    received: list[Received] = field(default_factory=list)
    """Every request whose body arrived, in order."""
    body_bytes_sent: int = 0
    """What a streaming answer managed to write before the client went away."""

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.got = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        n = len(self.received)
        self.received.append(Received(dict(request.headers), await request.read()))
        async with self.got:
            self.got.notify_all()
        return await self.answer(n, request)

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async with self.got:
            await asyncio.wait_for(self.got.wait_for(lambda: len(self.received) >= count), timeout)

    def ids(self) -> list[str]:
        return [r.record["id"] for r in self.received]


def status(*codes: int, then: int = 200, headers: dict[str, str] | None = None) -> Answer:
    """Answer ``codes`` in turn to the first requests, ``then`` to the rest."""

    async def answer(n: int, _request: web.Request) -> web.StreamResponse:
        code = codes[n] if n < len(codes) else then
        return web.Response(status=code, text=str(code), headers=headers if n < len(codes) else None)

    return answer


def huge_body(receiver: Receiver, total: int) -> Answer:
    """200 with a chunked body of ``total`` bytes that the client should never read."""

    async def answer(_n: int, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            while receiver.body_bytes_sent < total:
                await resp.write(chunk)
                receiver.body_bytes_sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client closed the connection: what we are here to see
        return resp

    return answer


def hang(forever: asyncio.Event, *, times: int) -> Answer:
    """The first ``times`` requests get no answer until ``forever`` is set (never, in the tests); then 200."""

    async def answer(n: int, request: web.Request) -> web.StreamResponse:
        if n < times:
            await forever.wait()
        return await ok(n, request)

    return answer


def redirect(to: str) -> Answer:
    async def answer(_n: int, _request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": to})

    return answer
