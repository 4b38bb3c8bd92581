"""Settings of the console's token service, from command-line flags with environment fallbacks.

The LiveKit API secret is only ever read from the environment (a flag would show in ``ps``), is excluded
from ``repr`` and never leaves the process except as the HMAC key of the tokens it signs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# A LiveKit room name as we accept it from a browser: printable, no slashes or whitespace, bounded.
ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@=+-]{0,127}$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the flag or variable."""


def default_static_dir() -> Path:
    """``console/dist`` of the source checkout this package comes from (editable installs), else ./console/dist."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "console" / "dist"
        if (parent / "console" / "package.json").is_file():
            return candidate
    return Path.cwd() / "console" / "dist"


def parse_rooms(raw: str) -> tuple[str, ...]:
    """``"demo, other"`` → ``("demo", "other")``; every name must be a valid room name."""
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        if not ROOM_NAME_RE.match(name):
            raise ConfigError(f"invalid room name {name!r} in the room list")
        if name not in names:
            names.append(name)
    return tuple(names)


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ConfigError(f"LiveKit URL must be ws(s):// or http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class ConsoleConfig:
    """Everything the token service needs; build with :meth:`from_env` or directly in tests."""

    livekit_url: str
    """URL of the LiveKit server as the *browser* reaches it (sent to the page; may differ from the worker's)."""
    api_key: str
    """LIVEKIT_API_KEY: issuer of the minted tokens."""
    api_secret: str = field(repr=False)
    """LIVEKIT_API_SECRET: signs the tokens; never logged, never sent to a client."""
    host: str = "127.0.0.1"
    """Bind address (loopback unless told otherwise)."""
    port: int = 8080
    """Bind port; 0 picks a free one (the real URL is printed on start)."""
    rooms: tuple[str, ...] = ()
    """Static room allow-list (local use); empty together with ``kube`` means no room can be joined."""
    kube: bool = False
    """Allow exactly the rooms of the TranscriptionRoom objects in the cluster (in-cluster use)."""
    namespace: str = ""
    """Namespace whose TranscriptionRooms count; empty: all namespaces."""
    rooms_cache_s: float = 10.0
    """How long a TranscriptionRoom listing is reused before the API server is asked again."""
    token_ttl_s: int = 900
    """Lifetime of a minted token (it only has to outlive the join; LiveKit refreshes it afterwards)."""
    rate_per_minute: float = 6.0
    """Token-bucket refill: tokens minted per client IP per minute, sustained."""
    burst: int = 5
    """Token-bucket capacity: tokens one client IP may mint back to back."""
    trust_forwarded: bool = False
    """Take the client IP from the first X-Forwarded-For hop (only behind a proxy that sets it)."""
    static_dir: Path = field(default_factory=default_static_dir)
    """The built page (``npm run build`` in console/ writes ``console/dist``)."""

    def __post_init__(self) -> None:
        _ws_url(self.livekit_url)
        if not self.api_key or not self.api_secret:
            raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if not 60 <= self.token_ttl_s <= 86400:
            raise ConfigError(f"token TTL must be in [60, 86400] seconds, got {self.token_ttl_s}")
        if self.rate_per_minute <= 0 or self.burst < 1:
            raise ConfigError("rate must be > 0 per minute and burst >= 1")
        if self.rooms_cache_s < 0:
            raise ConfigError("rooms cache seconds must be >= 0")
        for name in self.rooms:
            if not ROOM_NAME_RE.match(name):
                raise ConfigError(f"invalid room name {name!r}")

    @property
    def public_livekit_url(self) -> str:
        """The LiveKit URL as a WebSocket URL (the page's ``Room.connect`` accepts both, browsers prefer ws)."""
        url = _ws_url(self.livekit_url)
        if url.startswith("http://"):
            return "ws://" + url[len("http://") :]
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        return url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ConsoleConfig:
        """Environment variables (LIVEKIT_*, LIVENEXUS_CONSOLE_*) with explicit ``overrides`` winning.

        ``overrides`` whose value is None are ignored, so argparse defaults of None fall through to the env.
        """
        e = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            raw = e.get(name, "").strip()
            try:
                return float(raw) if raw else default
            except ValueError as exc:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from exc

        values: dict[str, object] = {
            "livekit_url": e.get("LIVENEXUS_CONSOLE_LIVEKIT_URL") or e.get("LIVEKIT_URL", ""),
            "api_key": e.get("LIVEKIT_API_KEY", ""),
            "api_secret": e.get("LIVEKIT_API_SECRET", ""),
            "host": e.get("LIVENEXUS_CONSOLE_HOST", "127.0.0.1"),
            "port": int(num("LIVENEXUS_CONSOLE_PORT", 8080)),
            "rooms": parse_rooms(e.get("LIVENEXUS_CONSOLE_ROOMS", "")),
            "kube": e.get("LIVENEXUS_CONSOLE_KUBE", "").strip().lower() in ("1", "true", "yes"),
            "namespace": e.get("LIVENEXUS_CONSOLE_NAMESPACE", ""),
            "token_ttl_s": int(num("LIVENEXUS_CONSOLE_TOKEN_TTL", 900)),
            "rate_per_minute": num("LIVENEXUS_CONSOLE_RATE_PER_MINUTE", 6.0),
            "burst": int(num("LIVENEXUS_CONSOLE_BURST", 5)),
            "trust_forwarded": e.get("LIVENEXUS_CONSOLE_TRUST_FORWARDED", "").strip().lower() in ("1", "true", "yes"),
        }
        if e.get("LIVENEXUS_CONSOLE_DIST"):
            values["static_dir"] = Path(e["LIVENEXUS_CONSOLE_DIST"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["livekit_url"]:
            raise ConfigError("LIVEKIT_URL (or LIVENEXUS_CONSOLE_LIVEKIT_URL, or --livekit-url) must be set")
        return cls(**values)  # type: ignore[arg-type]
