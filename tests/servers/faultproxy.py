"""A TLS reverse proxy in front of the test kube-apiserver that can answer 429/503 for a while.

The operator under test talks to the proxy (``url``) exactly as it would to the API server: the proxy
presents a serving certificate from the control plane's own CA, passes every header (the bearer token
included) upstream and streams answers back chunk by chunk, so watches work through it. While a fault
is on, matching requests get the fault's status and ``Retry-After`` instead, and every request is logged
with its time so a test can check how the client backed off. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from livenexus_dev.livekit_server import free_port

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length",
              "accept-encoding", "proxy-authorization", "trailer"}
MAX_LOG = 100_000
"""Requests kept in :attr:`FaultProxy.log` (a runaway client must not eat the test's memory)."""


@dataclass(frozen=True)
class Seen:
    """One request that reached the proxy."""

    at: float
    """time.monotonic() when it arrived."""
    method: str
    path: str
    """Path without the query."""
    query: str
    agent: str
    """User-Agent (kopf's aiohttp client and the kubernetes client differ)."""
    status: int | None
    """What the proxy answered itself (the fault), None when passed upstream."""


@dataclass
class FaultProxy:
    """Start with :meth:`start` (returns self), stop with :meth:`stop`."""

    upstream: str
    """https://127.0.0.1:<port> of the real API server."""
    ca_path: Path
    """CA that signed the API server's certificate (and ``cert``)."""
    cert: tuple[Path, Path]
    """Serving certificate and key for 127.0.0.1."""
    port: int = field(default_factory=free_port)
    log: list[Seen] = field(default_factory=list)
    """Every request, in arrival order."""
    _fault: tuple[int, float | None, Callable[[str, str], bool]] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _streams: set[web.StreamResponse] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def fail(self, status: int, retry_after: float | None = None,
             match: Callable[[str, str], bool] = lambda method, path: True, cut_streams: bool = True) -> None:
        """Answer ``status`` to every request ``match(method, path)`` accepts until :meth:`heal`; with
        ``cut_streams`` the open watches are dropped too, as when an API server sheds load or restarts."""
        with self._lock:
            self._fault = (status, retry_after, match)
        if cut_streams and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def heal(self) -> None:
        with self._lock:
            self._fault = None

    def seen(self, since: float = 0.0) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if s.at >= since]

    async def _cut(self) -> None:
        for resp in list(self._streams):
            task = getattr(resp, "_livenexus_task", None)
            if task is not None:
                task.cancel()

    def _record(self, seen: Seen) -> None:
        with self._lock:
            if len(self.log) < MAX_LOG:
                self.log.append(seen)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            fault = self._fault
        hit = fault is not None and fault[2](request.method, request.path)
        self._record(Seen(time.monotonic(), request.method, request.path, request.query_string,
                          request.headers.get("User-Agent", ""), fault[0] if fault and hit else None))
        if fault is not None and hit:
            status, retry_after, _ = fault
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            body = (f'{{"kind":"Status","apiVersion":"v1","status":"Failure","code":{status},'
                    f'"reason":"{"TooManyRequests" if status == 429 else "ServiceUnavailable"}",'
                    f'"message":"fault injected by the test proxy"}}')
            return web.Response(status=status, text=body, content_type="application/json", headers=headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        data = await request.read()
        session: aiohttp.ClientSession = request.app[SESSION]
        resp = web.StreamResponse()
        try:
            async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                       data=data or None, skip_auto_headers=("Accept-Encoding",),
                                       timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as up:
                resp.set_status(up.status)
                for k, v in up.headers.items():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding":
                        resp.headers[k] = v
                await resp.prepare(request)
                resp._livenexus_task = asyncio.current_task()  # type: ignore[attr-defined]
                self._streams.add(resp)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
        except (aiohttp.ClientError, ConnectionError) as exc:
            if not resp.prepared:
                return web.Response(status=502, text=f"upstream unreachable: {type(exc).__name__}")
        except asyncio.CancelledError:
            pass  # cut by fail(); the client sees the stream end, as when the server drops it
        finally:
            self._streams.discard(resp)
        return resp

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
                loop.run_forever()
            except BaseException as exc:  # reported to start()
                failed.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failed:
            raise RuntimeError(f"fault proxy did not start: {failed[0]!r}")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        upstream_ssl = ssl.create_default_context(cafile=str(self.ca_path))
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_ssl, limit=200))
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=serving).start()
        ready.set()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def down() -> None:
            await self._cut()
            await self._runner.app[SESSION].close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
