"""Who may use the console's API: nobody checked (local demo), a shared bearer token, or an upstream auth proxy.

* ``none``: anyone who reaches the port. Only sensible on loopback; :class:`ConsoleConfig` refuses it on any
  other address unless it is asked for explicitly.
* ``token``: ``Authorization: Bearer <token>`` must carry the shared token (compared in constant time).
* ``header``: an authenticating proxy in front (oauth2-proxy and the like) puts the signed-in user in a
  header. The header is believed only when the socket peer is one of the trusted proxies, because anyone
  who reaches the service directly could set it.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from livenexus_console.proxies import IPNetwork, is_trusted_peer

AUTH_MODES = ("none", "token", "header")
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
MAX_USER_CHARS = 256
DEFAULT_USER_HEADER = "X-Auth-Request-User"

# An HTTP header name (RFC 9110 token characters), as a setting.
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


@dataclass(frozen=True)
class AuthResult:
    """Outcome of :func:`check`."""

    ok: bool
    """True when the request may use the API."""
    user: str = ""
    """Who it is, when the mode says (header mode: the proxy's user; token mode: ``"token"``)."""
    reason: str = ""
    """Why not, for the 401 body (never echoes what the client sent)."""


def _printable(value: str) -> bool:
    return value.isprintable() and not any(ch in value for ch in "\r\n")


def check(
    mode: str,
    headers: Mapping[str, str],
    peer: str | None,
    token: str = "",
    user_header: str = DEFAULT_USER_HEADER,
    trusted: Sequence[IPNetwork] = (),
) -> AuthResult:
    """Whether a request with ``headers`` from socket peer ``peer`` is authenticated under ``mode``."""
    if mode == "none":
        return AuthResult(True, "anonymous")
    if mode == "token":
        raw = headers.get("Authorization", "")
        scheme, _, given = raw.strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given or len(given) > MAX_TOKEN_CHARS:
            return AuthResult(False, reason="send the console's access key as Authorization: Bearer <key>")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8")):
            return AuthResult(False, reason="the access key is not valid")
        return AuthResult(True, "token")
    if mode == "header":
        if not is_trusted_peer(peer, trusted):
            return AuthResult(False, reason="sign in through the console's login proxy")
        user = headers.get(user_header, "").strip()
        if not user or len(user) > MAX_USER_CHARS or not _printable(user):
            return AuthResult(False, reason="sign in through the console's login proxy")
        return AuthResult(True, user)
    return AuthResult(False, reason="the console's auth mode is not configured")
