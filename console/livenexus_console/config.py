"""Settings of the console's token service, from command-line flags with environment fallbacks.

The LiveKit API secret is only ever read from the environment (a flag would show in ``ps``), is excluded
from ``repr`` and never leaves the process except as the HMAC key of the tokens it signs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from livenexus_common.contract import AGENT_IDENTITY_PREFIX
from livenexus_console.auth import AUTH_MODES, DEFAULT_USER_HEADER, HEADER_NAME_RE, MAX_TOKEN_CHARS, MIN_TOKEN_CHARS
from livenexus_console.proxies import IPNetwork, parse_networks

# A LiveKit room name as we accept it from a browser: printable, no slashes or whitespace, bounded.
ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@=+-]{0,127}$")
# The worker's identity prefix as the page matches it (D makes identities "livenexus-agent-<suffix>").
IDENTITY_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TOKEN_TTL_S = 3600
MAX_PROXY_HOPS = 16


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


def is_loopback(host: str) -> bool:
    """True for a bind address only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes or 0/false/no (any case); anything else is an error, not a guess."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ConfigError(f"{name} must be 1/true/yes or 0/false/no, got {raw!r}")


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
    """Namespace whose TranscriptionRooms count (with ``kube``, required unless ``all_namespaces``)."""
    all_namespaces: bool = False
    """List the TranscriptionRooms of every namespace: only ever on explicit request."""
    rooms_cache_s: float = 10.0
    """How long a TranscriptionRoom listing is reused before the API server is asked again."""
    token_ttl_s: int = 120
    """Lifetime of a minted token (it only has to outlive the join; LiveKit refreshes it afterwards)."""
    rate_per_minute: float = 6.0
    """Token-bucket refill: tokens minted per client IP per minute, sustained."""
    burst: int = 5
    """Token-bucket capacity: tokens one client IP may mint back to back."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Proxies (addresses/CIDRs) whose X-Forwarded-For entries count; the client is the first hop not in them."""
    proxy_hops: int = 0
    """Or: how many proxies stand in front; the client is that many X-Forwarded-For entries from the right."""
    auth_mode: str = ""
    """``none`` | ``token`` | ``header``; empty means ``none`` on a loopback address and is refused elsewhere."""
    auth_token: str = field(default="", repr=False)
    """The shared access key of ``token`` mode (environment only, never logged)."""
    auth_user_header: str = DEFAULT_USER_HEADER
    """Header in which the trusted auth proxy names the signed-in user (``header`` mode)."""
    allow_microphone: bool = True
    """Visitors may publish their microphone; off: read-only tokens (subscribe, nothing to publish)."""
    agent_identity_prefix: str = AGENT_IDENTITY_PREFIX
    """The page shows transcripts only from agent participants whose identity starts with this."""
    static_dir: Path = field(default_factory=default_static_dir)
    """The built page (``npm run build`` in console/ writes ``console/dist``)."""

    def __post_init__(self) -> None:
        _ws_url(self.livekit_url)
        if not self.api_key or not self.api_secret:
            raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if not 60 <= self.token_ttl_s <= MAX_TOKEN_TTL_S:
            raise ConfigError(f"token TTL must be in [60, {MAX_TOKEN_TTL_S}] seconds, got {self.token_ttl_s}")
        if self.rate_per_minute <= 0 or self.burst < 1:
            raise ConfigError("rate must be > 0 per minute and burst >= 1")
        if self.rooms_cache_s < 0:
            raise ConfigError("rooms cache seconds must be >= 0")
        for name in self.rooms:
            if not ROOM_NAME_RE.match(name):
                raise ConfigError(f"invalid room name {name!r}")
        if self.kube and self.all_namespaces == bool(self.namespace):
            raise ConfigError("TranscriptionRooms need exactly one of --namespace NS or --all-namespaces")
        if not IDENTITY_PREFIX_RE.match(self.agent_identity_prefix):
            raise ConfigError(f"invalid agent identity prefix {self.agent_identity_prefix!r}")
        self._check_proxies_and_auth()

    def _check_proxies_and_auth(self) -> None:
        if not 0 <= self.proxy_hops <= MAX_PROXY_HOPS:
            raise ConfigError(f"proxy hops must be in [0, {MAX_PROXY_HOPS}], got {self.proxy_hops}")
        if self.proxy_hops and self.trusted_proxies:
            raise ConfigError("give trusted proxies as CIDRs or as a hop count, not both")
        mode = self.auth_mode
        if not mode:
            if not is_loopback(self.host):
                raise ConfigError(
                    f"listening on {self.host} needs an auth mode: --auth token or header "
                    "(or --auth none, explicitly, to let anyone who reaches it in)"
                )
            object.__setattr__(self, "auth_mode", "none")  # frozen: resolve the implicit default once
        elif mode not in AUTH_MODES:
            raise ConfigError(f"auth mode must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
        if mode == "token":
            token = self.auth_token
            if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not token.isprintable() or " " in token:
                raise ConfigError(
                    f"auth mode token needs LIVENEXUS_CONSOLE_AUTH_TOKEN: {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} "
                    "printable characters without spaces"
                )
        if mode == "header":
            if not self.trusted_proxies:
                raise ConfigError("auth mode header needs --trusted-proxies (only they may name the user)")
            if not HEADER_NAME_RE.match(self.auth_user_header):
                raise ConfigError(f"invalid user header name {self.auth_user_header!r}")

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
            "token_ttl_s": int(num("LIVENEXUS_CONSOLE_TOKEN_TTL", 120)),
            "rate_per_minute": num("LIVENEXUS_CONSOLE_RATE_PER_MINUTE", 6.0),
            "burst": int(num("LIVENEXUS_CONSOLE_BURST", 5)),
            "all_namespaces": env_flag(e, "LIVENEXUS_CONSOLE_ALL_NAMESPACES", False),
            "proxy_hops": int(num("LIVENEXUS_CONSOLE_PROXY_HOPS", 0)),
            "auth_mode": e.get("LIVENEXUS_CONSOLE_AUTH", "").strip(),
            "auth_token": e.get("LIVENEXUS_CONSOLE_AUTH_TOKEN", "").strip(),
            "auth_user_header": e.get("LIVENEXUS_CONSOLE_AUTH_USER_HEADER", "").strip() or DEFAULT_USER_HEADER,
            "allow_microphone": env_flag(e, "LIVENEXUS_CONSOLE_MICROPHONE", True),
            "agent_identity_prefix": e.get("LIVENEXUS_CONSOLE_AGENT_PREFIX", "").strip() or AGENT_IDENTITY_PREFIX,
        }
        if env_flag(e, "LIVENEXUS_CONSOLE_TRUST_FORWARDED", False):
            raise ConfigError(
                "LIVENEXUS_CONSOLE_TRUST_FORWARDED is gone (it let any client pick its rate-limit key): "
                "set LIVENEXUS_CONSOLE_TRUSTED_PROXIES (CIDRs) or LIVENEXUS_CONSOLE_PROXY_HOPS"
            )
        try:
            values["trusted_proxies"] = parse_networks(e.get("LIVENEXUS_CONSOLE_TRUSTED_PROXIES", ""))
        except ValueError as exc:
            raise ConfigError(f"LIVENEXUS_CONSOLE_TRUSTED_PROXIES: {exc}") from exc
        if e.get("LIVENEXUS_CONSOLE_DIST"):
            values["static_dir"] = Path(e["LIVENEXUS_CONSOLE_DIST"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["livekit_url"]:
            raise ConfigError("LIVEKIT_URL (or LIVENEXUS_CONSOLE_LIVEKIT_URL, or --livekit-url) must be set")
        return cls(**values)  # type: ignore[arg-type]
