"""Fault suite: hostile and malformed requests against a real ``livenexus-console`` process.

Every one gets a clear 4xx (a JSON ``code`` where the service answers itself), none is a 5xx or a traceback,
and afterwards the same process still mints a token for a well-formed request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from .helpers import ConsoleProcess

ACCESS_KEY = "fault-suite-access-key-" + "f" * 16
ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "k",
    "LIVEKIT_API_SECRET": "fault-secret-" + "z" * 30,
    "LIVENEXUS_CONSOLE_AUTH_TOKEN": ACCESS_KEY,
}
AUTH = {"Authorization": f"Bearer {ACCESS_KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def console() -> Iterator[ConsoleProcess]:
    # A generous rate limit: this suite is about malformed input, the limit has its own tests.
    proc = ConsoleProcess(["--rooms", "demo", "--auth", "token", "--burst", "1000", "--rate-per-minute", "6000"], ENV)
    try:
        yield proc
    finally:
        proc.stop()


def request(
    console: ConsoleProcess, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(console.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw(console: ConsoleProcess, data: bytes) -> int:
    """Send bytes as they are (what http.client would refuse to build) and return the status code."""
    parts = urlsplit(console.url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30) as s:
        # The server may answer and close before it has read everything: that is the point.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        # Read the status line only; the write side stays open (a half-closed request is just abandoned).
        reply = b""
        while b"\r\n" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1."), reply[:200]
    return int(reply.split(b" ", 2)[1])


def code_of(body: bytes) -> str:
    payload: Any = json.loads(body)
    assert "token" not in payload
    return str(payload["code"])


TOKEN_CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("nested 2000 deep", b"[" * 2000 + b"]" * 2000, JSON, 400, "bad_json"),
    ("nested object", b'{"room":' * 600 + b"1" + b"}" * 600, JSON, 413, "too_large"),
    ("not utf-8", b'\xff\xfe{"room":"demo"}', JSON, 400, "bad_json"),
    ("empty", b"", JSON, 400, "bad_json"),
    ("string", b'"demo"', JSON, 400, "bad_request"),
    ("number", b"12", JSON, 400, "bad_request"),
    ("NaN", b"NaN", JSON, 400, "bad_request"),
    ("room list", b'{"room": ["demo"]}', JSON, 400, "bad_room"),
    ("room object", b'{"room": {"$ne": ""}}', JSON, 400, "bad_room"),
    ("room null", b'{"room": null}', JSON, 400, "bad_room"),
    ("room bool", b'{"room": true}', JSON, 400, "bad_room"),
    ("room traversal", b'{"room": "../../demo"}', JSON, 400, "bad_room"),
    ("room newline", b'{"room": "demo\\nx"}', JSON, 400, "bad_room"),
    ("room too long", json.dumps({"room": "d" * 200}).encode(), JSON, 400, "bad_room"),
    ("name object", b'{"room": "demo", "name": {"a": 1}}', JSON, 400, "bad_name"),
    ("name list", b'{"room": "demo", "name": ["x"]}', JSON, 400, "bad_name"),
    ("body over 4 KB", json.dumps({"room": "demo", "name": "n" * 5000}).encode(), JSON, 413, "too_large"),
    ("form", b"room=demo", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415, "bad_content_type"),
    ("no content type", b'{"room": "demo"}', AUTH, 415, "bad_content_type"),
    # Spoofed identity headers are no substitute for the access key.
    ("no key, proxy user", b'{"room": "demo"}', {"Content-Type": "application/json", "X-Auth-Request-User": "admin",
                                                 "X-Forwarded-For": "127.0.0.1"}, 401, "unauthorized"),
    ("huge key", b'{"room": "demo"}', {"Content-Type": "application/json", "Authorization": "Bearer " + "a" * 8000},
     401, "unauthorized"),
    ("key in another scheme", b'{"room": "demo"}', {"Content-Type": "application/json",
                                                    "Authorization": f"Token {ACCESS_KEY}"}, 401, "unauthorized"),
]


@pytest.mark.parametrize(("what", "body", "headers", "status", "code"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
def test_malformed_token_requests_get_a_clear_4xx(
    console: ConsoleProcess, what: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    got, payload = request(console, "POST", "/api/token", body, headers)
    assert (got, code_of(payload)) == (status, code), payload[:200]


def test_protocol_level_abuse_is_refused(console: ConsoleProcess) -> None:
    host = f"Host: {urlsplit(console.url).netloc}\r\n".encode()
    auth = f"Authorization: Bearer {ACCESS_KEY}\r\n".encode()
    # A Content-Length far beyond the limit: refused from the header, the body is never read.
    assert raw(console, b"POST /api/token HTTP/1.1\r\n" + host + auth
               + b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{}") == 413
    # Chunked, no length: refused once more than the limit has arrived.
    chunk = b"a" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    assert raw(console, b"POST /api/token HTTP/1.1\r\n" + host + auth
               + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + chunks) == 413
    # Headers beyond the parser's bounds, a broken request line, a header with a bare CR.
    assert raw(console, b"GET /api/config HTTP/1.1\r\n" + host + b"X-Pad: " + b"p" * 20000 + b"\r\n\r\n") in (400, 431)
    assert raw(console, b"GET /api/config HTTP/1.1\r\n" + host + b"".join(
        b"X-Forwarded-For: 10.0.%d.%d\r\n" % (i // 256, i % 256) for i in range(2000)) + b"\r\n") in (400, 431)
    assert raw(console, b"NOT A REQUEST\r\n\r\n") == 400
    assert raw(console, b"GET /api/config HTTP/1.1\r\n" + host + b"X-Evil: a\rb\r\n\r\n") == 400
    # Wrong method on the API.
    assert request(console, "GET", "/api/token", headers=AUTH)[0] == 405
    assert request(console, "DELETE", "/api/config", headers=AUTH)[0] == 405


def test_spoofed_forwarding_headers_change_nothing(console: ConsoleProcess) -> None:
    """No trusted proxies configured: forwarding headers are ignored, good requests still work."""
    spoof = {**JSON, "X-Forwarded-For": "' OR 1=1 --, ::ffff:999.1.1.1, [::1]:x", "X-Real-IP": "10.0.0.1",
             "Forwarded": 'for="_hidden";proto=https'}
    status, body = request(console, "POST", "/api/token", b'{"room": "demo", "name": "Spoof"}', spoof)
    assert status == 200 and json.loads(body)["identity"].startswith("web-spoof-")


def test_the_service_keeps_serving_after_the_abuse(console: ConsoleProcess) -> None:
    # Runs after the cases above (file order): the same process answers, and never logged a traceback.
    assert console.proc.poll() is None
    assert request(console, "GET", "/healthz")[0] == 200
    status, body = request(console, "POST", "/api/token", b'{"room": "demo"}', JSON)
    assert status == 200 and json.loads(body)["room"] == "demo"
    logged = "".join(console.stderr)
    assert "Traceback" not in logged and "Error handling request" not in logged, logged[-3000:]
    assert ACCESS_KEY not in logged and ENV["LIVEKIT_API_SECRET"] not in logged
