"""The worker's small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

A stdlib server on a daemon thread rather than aiohttp: it works the same whether the caller runs an
asyncio loop (the LiveKit agent) or not (the CLI and benchmarks), and a scrape is never delayed by a
busy event loop, so /healthz keeps answering while inference hogs the loop's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], bool | tuple[bool, str]]
"""Returns True/False, or (ready, short reason) so a 503 can say why."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Several workers on one node (tests, benchmarks) must be able to rebind quickly.
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], registry: CollectorRegistry, ready: ReadinessCheck) -> None:
        self.registry = registry
        self.ready = ready
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = generate_latest(self.server.registry)
            except Exception as exc:  # a broken collector must not kill the server thread
                log.exception("metrics collection failed")
                self._reply(500, f"collection failed: {type(exc).__name__}\n".encode())
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ok, reason = _check(self.server.ready)
            self._reply(200 if ok else 503, (reason + "\n").encode())
        else:
            self._reply(404, b"not found\n")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        # Prometheus and kubelet probes hit these every few seconds; default stderr logging would
        # drown the worker's own log.
        log.debug("%s " + format, self.address_string(), *args)


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
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._requested_port), self._registry, self._ready)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="livenexus-metrics", daemon=True)
        self._thread.start()
        log.info("metrics server listening on %s:%d", self._host, self.port)
        return self

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was requested); the requested one before start()."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        return f"http://{host}:{self.port}"

    def set_readiness(self, ready: ReadinessCheck) -> None:
        """Replace the readiness check (e.g. once the runtime that knows the answer exists)."""
        self._ready = ready
        if self._server is not None:
            self._server.ready = ready

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_metrics_server(
    registry: CollectorRegistry, ready: ReadinessCheck = lambda: True, host: str = "0.0.0.0", port: int = 9300
) -> MetricsServer | None:
    """Start a server on ``host:port``; None when the port is 0 (metrics off, as LIVENEXUS_METRICS_PORT=0 says)."""
    if port == 0:
        return None
    return MetricsServer(registry, ready, host, port).start()
