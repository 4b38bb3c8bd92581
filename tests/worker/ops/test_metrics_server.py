"""The metrics server under hostile clients: idle floods, slowloris, oversized and unexpected requests.

Every client here is a raw socket to 127.0.0.1 on an ephemeral port the test's own server bound.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer, ServerLimits, start_metrics_server

GET = b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n"


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    limits = ServerLimits(max_connections=32, header_timeout_s=1.0, idle_timeout_s=60.0)
    with MetricsServer(WorkerMetrics().registry, host="127.0.0.1", port=0, limits=limits) as srv:
        yield srv


def connect(srv: MetricsServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_peer(s: socket.socket) -> bool:
    """True once the server has closed (EOF or reset); reads whatever answer it sent first."""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def dropped(srv: MetricsServer, reason: str) -> float:
    value = srv.registry.get_sample_value("livenexus_http_dropped_connections_total", {"reason": reason})
    assert value is not None, reason
    return value


def scrape(srv: MetricsServer) -> tuple[int, bytes]:
    with connect(srv) as s:
        s.sendall(GET)
        code, _headers, body = read_response(s)
        return code, body


def test_idle_flood_costs_no_threads_and_metrics_still_answer(server: MetricsServer) -> None:
    threads_before = threading.active_count()
    idle = [connect(server) for _ in range(300)]
    try:
        # Every idle client was accepted (most then evicted); the server holds at most its cap.
        code, body = scrape(server)
        assert code == 200 and b"livenexus_" in body
        assert server.open_connections <= server.limits.max_connections
        assert threading.active_count() <= threads_before, "a thread per connection"
        # A scrape still answers however often the idle flood is renewed.
        idle += [connect(server) for _ in range(100)]
        assert scrape(server)[0] == 200
        assert dropped(server, "evicted") > 0 and dropped(server, "refused") == 0
    finally:
        for s in idle:
            s.close()


def test_slowloris_is_cut_off(server: MetricsServer) -> None:
    with connect(server) as s:
        s.settimeout(30)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nX-Slow: ")
        s.settimeout(0.2)
        for _ in range(300):  # one byte of a header value at a time, never the line end
            try:
                s.sendall(b"y")
            except (BrokenPipeError, ConnectionResetError):
                break
            if closed_by_peer(s):
                break
        else:
            pytest.fail("a client trickling headers kept its connection")
    assert scrape(server)[0] == 200
    assert dropped(server, "header_timeout") == 1
    _code, body = scrape(server)
    assert b'livenexus_http_dropped_connections_total{reason="header_timeout"} 1.0' in body


def test_slowloris_gets_408_when_it_still_reads(server: MetricsServer) -> None:
    with connect(server) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        code, headers, _ = read_response(s)
        assert code == 408 and headers["connection"] == "close"
        s.settimeout(30)
        assert closed_by_peer(s)


def test_silent_connection_is_closed_and_keep_alive_works(server: MetricsServer) -> None:
    with connect(server) as s:  # connects and never sends: held no longer than the header timeout
        s.settimeout(30)
        assert closed_by_peer(s)
    with connect(server) as s:  # Prometheus keeps its connection: several scrapes on one socket
        for _ in range(3):
            s.sendall(GET)
            code, headers, _ = read_response(s)
            assert code == 200 and headers["connection"] == "keep-alive"
        s.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert read_response(s)[0] == 200
        assert closed_by_peer(s)


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 413),
        (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
        (b"HELLO\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    ],
    ids=["huge-header", "post", "body", "chunked", "garbage", "bad-header"],
)
def test_bad_requests_get_a_clear_answer_and_a_close(server: MetricsServer, request_bytes: bytes, code: int) -> None:
    with connect(server) as s:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(request_bytes)  # the 431 may be sent, and the socket closed, before all of it is read
        got, headers, _ = read_response(s)
        assert (got, headers["connection"]) == (code, "close")
    assert scrape(server)[0] == 200
    assert dropped(server, "bad_request") == 1


class _HugeCollector:
    """A 12 MB exposition: more than the kernel buffers between a server and a client that does not read."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("livenexus_test_huge", "huge labels", labels=["blob"])
        for i in range(3):
            family.add_metric([str(i) * (4 << 20)], i)
        yield family


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60  # a safety bound on a behavioural wait, not a timing assertion
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def test_client_that_never_reads_is_dropped() -> None:
    """A scraper that stops reading cannot pin the server: its write times out and the others are served."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_HugeCollector())  # type: ignore[arg-type]
    limits = ServerLimits(max_connections=4, write_timeout_s=0.5)
    with MetricsServer(registry, host="127.0.0.1", port=0, limits=limits) as srv:
        stuck = []
        try:
            for _ in range(3):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no window autotuning
                s.connect(("127.0.0.1", srv.port))
                s.sendall(GET)
                stuck.append(s)
            wait_for(lambda: dropped(srv, "write_timeout") == 3, "three write timeouts")
            assert srv.open_connections == 0, "clients that do not read still hold their connections"
            assert dropped(srv, "idle_timeout") == dropped(srv, "refused") == 0
            code, body = scrape(srv)
            assert code == 200 and len(body) > 12 << 20
        finally:
            for s in stuck:
                s.close()


def test_bind_address_is_honoured() -> None:
    registry = WorkerMetrics().registry
    assert start_metrics_server(registry, host="127.0.0.1", port=0) is None  # port 0: metrics off
    with MetricsServer(registry, host="127.0.0.1", port=0) as local:
        assert local.url.startswith("http://127.0.0.1:")
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, local.port), timeout=5).close()


def test_bad_bind_address_is_a_clear_error() -> None:
    with pytest.raises(OSError, match="metrics server: cannot resolve bind address 'no such host!'"):
        MetricsServer(WorkerMetrics().registry, host="no such host!", port=0).start()
    with MetricsServer(WorkerMetrics().registry, host="127.0.0.1", port=0) as taken, \
            pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken.port}"):
        MetricsServer(WorkerMetrics().registry, host="127.0.0.1", port=taken.port).start()


def _non_loopback_ipv4() -> str | None:
    """An address of this machine's own interfaces other than loopback (None on a loopback-only host)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


def test_trickling_clients_cannot_fill_the_server() -> None:
    """Clients still sending their heads are evictable too: a full house of them never locks a scrape out."""
    limits = ServerLimits(max_connections=16, header_timeout_s=600.0)  # only eviction can make room here
    with MetricsServer(WorkerMetrics().registry, host="127.0.0.1", port=0, limits=limits) as srv:
        slow = []
        try:
            for _ in range(limits.max_connections):
                s = connect(srv)
                s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                slow.append(s)
            # Let the server read those partial heads (a settling pause, not a measured time): the house is then
            # full of clients that have started a request.
            time.sleep(1.0)
            assert srv.open_connections == limits.max_connections
            assert scrape(srv)[0] == 200
            assert srv.open_connections <= limits.max_connections
        finally:
            for s in slow:
                s.close()


def test_a_server_that_cannot_serve_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no event loop support here")

    monkeypatch.setattr(asyncio, "start_server", refuse)
    with pytest.raises(OSError, match="metrics server could not start: no event loop support here"):
        MetricsServer(WorkerMetrics().registry, host="127.0.0.1", port=0).start()
