"""The token service in-process through aiohttp's test client: a config for tests and a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from livenexus_console import ConsoleConfig, RateLimiter, build_app

KEY = "console-test-key"
SECRET = "s3cr3t-" + "x" * 40


def make_config(tmp_path: Path, **kw: Any) -> ConsoleConfig:
    values: dict[str, Any] = {
        "livekit_url": "ws://127.0.0.1:7880",
        "api_key": KEY,
        "api_secret": SECRET,
        "rooms": ("demo", "other"),
        "static_dir": tmp_path / "dist",
        "burst": 100,
        "rate_per_minute": 600.0,
    }
    values.update(kw)
    return ConsoleConfig(**values)


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(source: Any = None, limiter: RateLimiter | None = None, **kw: Any) -> TestClient[Any, Any]:
        client = TestClient(TestServer(build_app(make_config(tmp_path, **kw), rooms=source, limiter=limiter)))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()


async def post_token(client: TestClient[Any, Any], body: Any, headers: Mapping[str, str] | None = None) -> Any:
    return await client.post("/api/token", json=body, headers=headers)
