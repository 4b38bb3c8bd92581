"""Who may use the console's API (auth modes), what a token lets a visitor do, and the exposure settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from livekit.api import TokenVerifier

from livenexus_console import RateLimiter
from livenexus_console.config import ConfigError, ConsoleConfig
from livenexus_console.proxies import parse_networks

from .apptools import KEY, SECRET, ClientFactory, make_config, post_token

ACCESS_KEY = "console-access-" + "q" * 24
BEARER = {"Authorization": f"Bearer {ACCESS_KEY}"}


async def test_token_mode_guards_the_api_but_not_the_page(make_client: ClientFactory, tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<!doctype html><title>LiveNexus</title>")
    client = await make_client(auth_mode="token", auth_token=ACCESS_KEY)
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": ACCESS_KEY},
                    {"Authorization": f"Basic {ACCESS_KEY}"}, {"Authorization": f"Bearer {ACCESS_KEY}x"},
                    {"Authorization": "Bearer " + "k" * 5000}):
        resp = await client.get("/api/config", headers=headers)
        assert resp.status == 401, headers
        body = await resp.json()
        assert body["code"] == "unauthorized" and body["auth"] == "token" and "rooms" not in body
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert ACCESS_KEY not in await resp.text()
        denied = await post_token(client, {"room": "demo"}, headers)
        assert denied.status == 401 and "token" not in await denied.json()
    ok = await client.get("/api/config", headers=BEARER)
    assert ok.status == 200 and (await ok.json())["rooms"] == ["demo", "other"]
    minted = await post_token(client, {"room": "demo"}, {"Authorization": f"bearer  {ACCESS_KEY} "})
    assert minted.status == 200
    # The page itself and the health probe hold nothing secret and stay reachable.
    assert (await client.get("/")).status == 200 and (await client.get("/healthz")).status == 200


async def test_failed_logins_spend_the_rate_limit(make_client: ClientFactory) -> None:
    limiter = RateLimiter(capacity=3, rate_per_s=1 / 600)
    client = await make_client(auth_mode="token", auth_token=ACCESS_KEY, limiter=limiter)
    wrong = {"Authorization": "Bearer guess-guess-guess-1"}
    assert [(await client.get("/api/config", headers=wrong)).status for _ in range(4)] == [401, 401, 401, 429]
    limited = await client.get("/api/config", headers=BEARER)
    assert limited.status == 200  # a good key is never throttled; only failures spend tokens here
    assert (await post_token(client, {"room": "demo"}, BEARER)).status == 429  # but token minting still is


async def test_header_mode_believes_only_the_trusted_proxy(make_client: ClientFactory) -> None:
    # The test client connects from 127.0.0.1.
    behind = await make_client(auth_mode="header", trusted_proxies=parse_networks("127.0.0.1/32"))
    user = {"X-Auth-Request-User": "ada@example.test"}
    assert (await behind.get("/api/config", headers=user)).status == 200
    assert (await post_token(behind, {"room": "demo"}, user)).status == 200
    for bad in ({}, {"X-Auth-Request-User": ""}, {"X-Auth-Request-User": "u" * 300},
                {"X-Forwarded-User": "ada"}):
        resp = await behind.get("/api/config", headers=bad)
        assert resp.status == 401, bad
        assert "WWW-Authenticate" not in resp.headers and (await resp.json())["auth"] == "header"
    # Reached directly (the peer is not the proxy): a user header is just a claim anyone can make.
    direct = await make_client(auth_mode="header", trusted_proxies=parse_networks("10.0.0.0/8"))
    assert (await direct.get("/api/config", headers=user)).status == 401
    assert (await post_token(direct, {"room": "demo"}, user)).status == 401


async def test_read_only_tokens_can_only_subscribe(make_client: ClientFactory) -> None:
    client = await make_client(allow_microphone=False)
    config = await (await client.get("/api/config")).json()
    assert config["microphone"] is False and config["agentIdentityPrefix"] == "livenexus-agent"
    body = await (await post_token(client, {"room": "demo"})).json()
    v = TokenVerifier(KEY, SECRET).verify(body["token"]).video
    assert v.room_join is True and v.room == "demo" and v.can_subscribe is True
    assert v.can_publish is False and not v.can_publish_sources and v.can_publish_data is False
    assert not v.can_update_own_metadata and not v.room_admin and not v.agent and not v.hidden


def _config(tmp_path: Path, **kw: Any) -> ConsoleConfig:
    return make_config(tmp_path, **kw)


def test_exposure_settings_are_validated(tmp_path: Path) -> None:
    # Any non-loopback address needs a mode: an open console has to be asked for by name.
    with pytest.raises(ConfigError, match="auth"):
        _config(tmp_path, host="0.0.0.0")
    assert _config(tmp_path, host="0.0.0.0", auth_mode="none").auth_mode == "none"
    assert _config(tmp_path, host="127.0.0.2").auth_mode == "none" and _config(tmp_path, host="::1").auth_mode == "none"
    with pytest.raises(ConfigError, match="auth mode"):
        _config(tmp_path, auth_mode="off")
    for weak in ("", "short", "has spaces in the middle of it", "x" * 5000):
        with pytest.raises(ConfigError, match="AUTH_TOKEN"):
            _config(tmp_path, auth_mode="token", auth_token=weak)
    with pytest.raises(ConfigError, match="trusted-proxies"):
        _config(tmp_path, auth_mode="header")
    with pytest.raises(ConfigError, match="header name"):
        _config(tmp_path, auth_mode="header", trusted_proxies=parse_networks("10.0.0.0/8"), auth_user_header="A B")
    with pytest.raises(ConfigError, match="not both"):
        _config(tmp_path, trusted_proxies=parse_networks("10.0.0.0/8"), proxy_hops=1)
    with pytest.raises(ConfigError, match="hops"):
        _config(tmp_path, proxy_hops=99)
    with pytest.raises(ConfigError, match="all-namespaces"):
        _config(tmp_path, kube=True)
    with pytest.raises(ConfigError, match="all-namespaces"):
        _config(tmp_path, kube=True, namespace="a", all_namespaces=True)
    with pytest.raises(ConfigError, match="TTL"):
        _config(tmp_path, token_ttl_s=86400)
    with pytest.raises(ConfigError, match="prefix"):
        _config(tmp_path, agent_identity_prefix="")
    assert ACCESS_KEY not in repr(_config(tmp_path, auth_mode="token", auth_token=ACCESS_KEY))


def test_exposure_settings_from_the_environment() -> None:
    env = {"LIVEKIT_URL": "ws://lk:7880", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    cfg = ConsoleConfig.from_env({
        **env, "LIVENEXUS_CONSOLE_AUTH": "token", "LIVENEXUS_CONSOLE_AUTH_TOKEN": ACCESS_KEY,
        "LIVENEXUS_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/8", "LIVENEXUS_CONSOLE_MICROPHONE": "0",
    })
    assert (cfg.auth_mode, cfg.auth_token, cfg.allow_microphone) == ("token", ACCESS_KEY, False)
    assert cfg.trusted_proxies == parse_networks("10.0.0.0/8") and cfg.token_ttl_s == 120
    # The old switch trusted the leftmost hop, which the client writes: refused with the way forward.
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_TRUST_FORWARDED": "1"})
    with pytest.raises(ConfigError, match="MICROPHONE"):
        ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_MICROPHONE": "perhaps"})
    with pytest.raises(ConfigError, match="not-a-cidr"):
        ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/8,not-a-cidr"})
    with pytest.raises(ConfigError, match="auth mode"):
        ConsoleConfig.from_env({**env, "LIVENEXUS_CONSOLE_HOST": "0.0.0.0"})


def test_the_page_trusts_the_prefix_every_worker_identity_has() -> None:
    # The worker's own identities (the default one and a per-pod one) must pass the console's prefix rule.
    from livenexus_common.contract import AGENT_IDENTITY_PREFIX
    from livenexus_worker.room.settings import IDENTITY_PREFIX

    env = {"LIVEKIT_URL": "ws://lk:7880", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    assert ConsoleConfig.from_env(env).agent_identity_prefix == AGENT_IDENTITY_PREFIX == IDENTITY_PREFIX
