"""The worker's small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

An asyncio server on its own loop in one daemon thread: it works the same whether the caller runs an asyncio
loop (the LiveKit agent) or not (the CLI and benchmarks), and a scrape is never delayed by a busy agent loop,
so /healthz keeps answering while inference hogs the agent's thread. One thread serves every connection, so
idle or slow clients cost a few KiB each instead of a thread each; :class:`ServerLimits` bounds how many
there are and how long each may take (a slowloris client is cut off, an idle one is evicted by a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], bool | tuple[bool, str]]
"""Returns True/False, or (ready, short reason) so a 503 can say why."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class ServerLimits:
    """What one client (or many) can make the server hold. Scrapes and probes send one small request at once."""

    max_connections: int = 64
    """Open connections at once. A new one beyond this evicts the longest-waiting connection that has no
    request in progress; when every connection is busy answering, the new one is closed at once."""
    header_timeout_s: float = 5.0
    """A request's line and headers must be complete this long after its first byte (or after the accept):
    a client trickling header bytes (slowloris) is answered 408 and closed."""
    idle_timeout_s: float = 30.0
    """A kept-alive connection with no new request for this long is closed."""
    write_timeout_s: float = 10.0
    """A client that does not read its response within this long is dropped."""
    max_header_bytes: int = 8192
    """Request line plus headers; a longer head is answered 431 and closed."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_header_bytes < 256:
            raise ValueError("max_connections must be >= 1 and max_header_bytes >= 256")
        if min(self.header_timeout_s, self.idle_timeout_s, self.write_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")


DROP_REASONS = ("refused", "evicted", "header_timeout", "idle_timeout", "write_timeout", "bad_request")
"""Values of the ``reason`` label of ``livenexus_http_dropped_connections_total``."""
_drop_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()
_drop_lock = threading.Lock()


def _drop_counter(registry: CollectorRegistry) -> Counter:
    """One counter per registry, however many servers serve it (tests start several)."""
    with _drop_lock:
        counter = _drop_counters.get(registry)
        if counter is None:
            counter = Counter("livenexus_http_dropped_connections", "Connections the metrics server cut off, by "
                              "reason (a flood of idle, slow or malformed clients shows here).", ["reason"],
                              registry=registry)
            for reason in DROP_REASONS:
                counter.labels(reason=reason)
            _drop_counters[registry] = counter
        return counter


class _Reject(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Dropped(Exception):
    """The server cut the connection off; ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Conn:
    """One client connection; ``busy`` while a complete request is being answered."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.busy = False


def _check(ready: ReadinessCheck) -> tuple[bool, str]:
    try:
        result = ready()
    except Exception as exc:
        return False, f"readiness check failed: {type(exc).__name__}"
    if isinstance(result, tuple):
        ok, reason = result
        return bool(ok), reason or ("ready" if ok else "not ready")
    return bool(result), "ready" if result else "not ready"


class MetricsServer:
    """Serves one registry on a daemon thread; ``port=0`` binds an ephemeral port (see :attr:`port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadinessCheck = lambda: True,
        host: str = "0.0.0.0",
        port: int = 9300,
        limits: ServerLimits | None = None,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._requested_port = port
        self.limits = limits or ServerLimits()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[asyncio.StreamWriter, _Conn] = {}  # insertion order = oldest first
        self._stopped: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._dropped = _drop_counter(registry)

    # ---- lifecycle (caller's thread) -------------------------------------------------------------------
    def start(self) -> MetricsServer:
        if self._thread is not None:
            return self
        # Bind here, not in the thread, so a taken port or a bad LIVENEXUS_METRICS_HOST fails the caller.
        self._sock = _listen(self._host, self._requested_port)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="livenexus-metrics", daemon=True)
        self._thread.start()
        started.wait()
        if self._failure is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raise OSError(f"metrics server could not start: {self._failure}") from self._failure
        log.info("metrics server listening on %s:%d", self._host, self.port)
        return self

    def stop(self) -> None:
        loop, thread, self._thread = self._loop, self._thread, None
        if thread is None:
            return
        if loop is not None and self._stopped is not None:
            loop.call_soon_threadsafe(self._stopped.set)
        thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was requested); the requested one before start()."""
        if self._sock is None:
            return self._requested_port
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self._host, self._host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def registry(self) -> CollectorRegistry:
        """What /metrics serves (this server's own drop counter included)."""
        return self._registry

    @property
    def open_connections(self) -> int:
        """Client connections held right now."""
        return len(self._conns)

    def set_readiness(self, ready: ReadinessCheck) -> None:
        """Replace the readiness check (e.g. once the runtime that knows the answer exists)."""
        self._ready = ready

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the server's own loop (its thread) ------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(started))
        except Exception as exc:  # reported by start() when it happens before serving began
            self._failure = exc
            log.exception("metrics server stopped")
        finally:
            started.set()
            loop.close()

    async def _serve(self, started: threading.Event) -> None:
        self._stopped = asyncio.Event()
        assert self._sock is not None
        server = await asyncio.start_server(self._accept, sock=self._sock, limit=self.limits.max_header_bytes)
        started.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for writer in list(self._conns):
                writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.limits.max_connections and not self._evict_one():
            writer.transport.abort()  # every slot is answering a request: refuse rather than queue
            self._dropped.labels(reason="refused").inc()
            return
        conn = self._conns[writer] = _Conn(writer)
        try:
            await self._session(reader, conn)
        except _Dropped as exc:
            self._dropped.labels(reason=exc.reason).inc()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        except Exception:
            log.exception("metrics connection failed")
        finally:
            self._conns.pop(writer, None)
            writer.transport.abort()

    def _evict_one(self) -> bool:
        for writer, conn in self._conns.items():
            if not conn.busy:
                log.debug("metrics server full: evicting a waiting connection")
                del self._conns[writer]
                writer.transport.abort()
                self._dropped.labels(reason="evicted").inc()
                return True
        return False

    async def _session(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        lim = self.limits
        first = True
        while True:
            # The first request must come with the connection; later ones may wait out a scrape interval.
            wait = lim.header_timeout_s if first else lim.idle_timeout_s
            try:
                head = await asyncio.wait_for(reader.read(1), wait)
            except TimeoutError:
                raise _Dropped("header_timeout" if first else "idle_timeout") from None
            if not head:
                return
            try:
                raw = head + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lim.header_timeout_s)
                method, path, keep_alive = _parse(raw)
            except TimeoutError:
                await self._send(conn.writer, 408, b"request header timeout\n", "GET", False)
                raise _Dropped("header_timeout") from None
            except asyncio.LimitOverrunError:
                await self._send(conn.writer, 431, b"request header too large\n", "GET", False)
                raise _Dropped("bad_request") from None
            except _Reject as exc:
                await self._send(conn.writer, exc.code, f"{exc}\n".encode(), "GET", False)
                raise _Dropped("bad_request") from None
            conn.busy = True  # only answering protects a connection: one still sending its head can be evicted
            code, body, ctype = self._answer(path)
            await self._send(conn.writer, code, body, method, keep_alive, ctype)
            if not keep_alive:
                return
            conn.busy = False
            first = False

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            try:
                return 200, generate_latest(self._registry), CONTENT_TYPE_LATEST
            except Exception as exc:  # a broken collector must not take the server down
                log.exception("metrics collection failed")
                return 500, f"collection failed: {type(exc).__name__}\n".encode(), text
        if path == "/healthz":
            return 200, b"ok\n", text
        if path == "/readyz":
            ok, reason = _check(self._ready)
            return (200 if ok else 503), (reason + "\n").encode(), text
        return 404, b"not found\n", text

    async def _send(self, writer: asyncio.StreamWriter, code: int, body: bytes, method: str, keep_alive: bool,
                    content_type: str = "text/plain; charset=utf-8") -> None:
        head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode("ascii") + (b"" if method == "HEAD" else body))
        try:
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout_s)
        except TimeoutError:
            raise _Dropped("write_timeout") from None


def _parse(raw: bytes) -> tuple[str, str, bool]:
    """(method, path, keep-alive) of a request head; raises _Reject for what this server will not serve."""
    lines = raw.decode("latin-1").split("\r\n")  # latin-1 decodes any byte: bad bytes fail the checks below
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Reject(400, "bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _Reject(400, "bad header line")
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        raise _Reject(405, "only GET and HEAD")
    # No endpoint takes a body; refusing one (rather than skipping it) leaves nothing to smuggle.
    if "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0"):
        raise _Reject(413, "request bodies are not accepted")
    conn = headers.get("connection", "").lower()
    keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
    return method, target.split("?", 1)[0], keep_alive


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6 literal, or a name), with a clear error."""
    try:
        family, kind, proto, _name, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(f"metrics server: cannot resolve bind address {host!r}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # Several workers on one node (tests, benchmarks) must be able to rebind quickly.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"metrics server: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def start_metrics_server(
    registry: CollectorRegistry, ready: ReadinessCheck = lambda: True, host: str = "0.0.0.0", port: int = 9300
) -> MetricsServer | None:
    """Start a server on ``host:port``; None when the port is 0 (metrics off, as LIVENEXUS_METRICS_PORT=0 says)."""
    if port == 0:
        return None
    return MetricsServer(registry, ready, host, port).start()
