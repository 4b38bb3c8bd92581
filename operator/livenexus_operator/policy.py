"""What a TranscriptionRoom may point its worker at: the admin's room policy (chart ``operator.roomPolicy``).

Whoever may create a room chooses both the LiveKit URL the worker connects to and the Secret whose values
it uses there (the API key travels in the token's ``iss`` claim, in clear). Without a policy, a room could
name any Secret of its namespace and any server, and read that Secret off the wire. So:

* a Secret is usable only when it opts in (label ``livenexus.io/credentials: "true"``) or the admin lists it;
* a URL is usable only over TLS (``wss://``/``https://``), to the admin's ``allowedHosts`` when given;
  plain ``ws://``/``http://`` only to hosts the admin lists in ``insecureHosts``, and only when such a
  host is loopback, a private address or an in-cluster Service name.

The checks are pure; reconcile does the one read (the Secret) and hands :class:`Approval` to render, which
refuses to render without one that matches the spec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CREDENTIALS_LABEL = "livenexus.io/credentials"
"""Label a Secret carries (value ``"true"``) to be usable as a room's credentials."""
POLICY_KEY = "policy.yaml"
"""Key of the room policy in the worker-template ConfigMap (rendered from ``operator.roomPolicy``)."""
MAX_ENTRIES = 256
"""Bound on each list of the policy (it comes from a ConfigMap, which anyone with edit rights may change)."""

SECURE_SCHEMES = ("wss", "https")
INSECURE_SCHEMES = ("ws", "http")

# Deliberately narrower than RFC 3986: no userinfo, no percent-escapes, no backslash in the authority.
# WHATWG parsers (the LiveKit SDKs) read "wss://a.example\@b.example" as host a.example while urllib says
# b.example; anything ambiguous is refused rather than matched.
_URL = re.compile(
    r"^(?P<scheme>wss|ws|https|http)://"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[^\s\\]*)?$"
)
_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# RFC 6598 space: not "private" to Python, but some cluster networks (pods, Services) are carved from it.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_SECRET_ENTRY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class PolicyError(ValueError):
    """The room policy in the ConfigMap is malformed (an admin error; no room is admitted under it)."""


@dataclass(frozen=True)
class Approval:
    """The credentials Secret and URL one reconcile admitted; render refuses a spec that differs."""

    secret_name: str
    """The Secret (in the room's namespace) that was read and admitted."""
    secret_version: str
    """Its resourceVersion: a new version rolls the worker (env from a Secret is read at container start)."""
    livekit_url: str
    """The URL that was admitted."""
    webhook: tuple[str, str, str] = ("", "", "")
    """spec.sinks.webhook as admitted: (signing-key Secret, its resourceVersion, URL); empty without one."""


def _hosts(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise PolicyError(f"roomPolicy.livekit.{key} must be a list of at most {MAX_ENTRIES} host names")
    out = []
    for item in value:
        host = item.strip().lower().rstrip(".").strip("[]") if isinstance(item, str) else ""
        if not host or len(host) > 253 or not (_HOST_NAME.match(host) or _is_ip(host)):
            raise PolicyError(
                f"roomPolicy.livekit.{key}: {item!r} is not a host name, '*.domain' or an IP address "
                "(no scheme, port or path)"
            )
        out.append(host)
    return tuple(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def in_cluster_host(host: str) -> bool:
    """Loopback, a private/link-local address, ``localhost``, or a cluster Service name.

    Service names: a single label (the pod's own namespace), ``<svc>.<ns>.svc`` or ``….svc.<cluster domain>``.
    A pattern ``*.suffix`` counts when any name under the suffix would.
    """
    name = host[2:] if host.startswith("*.") else host
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return ip.is_loopback or ip.is_private or ip.is_link_local or ip in _SHARED_ADDRESS_SPACE
    if name == "localhost":
        return True
    labels = name.split(".")
    if host.startswith("*."):
        labels = ["x", *labels]
    return len(labels) == 1 or "svc" in labels[1:]


@dataclass(frozen=True)
class RoomPolicy:
    """The admin's limits on what rooms may use (chart values ``operator.roomPolicy``)."""

    allowed_hosts: tuple[str, ...] = ()
    """Hosts a room may reach over TLS (exact, or ``*.domain`` for names under it); empty: any host."""
    insecure_hosts: tuple[str, ...] = ()
    """Hosts a room may reach over plain ws:// or http:// (each must also be loopback/private/in-cluster)."""
    credential_secrets: tuple[str, ...] = ()
    """Secrets usable without the opt-in label: ``name`` (any namespace) or ``namespace/name``."""

    @classmethod
    def from_values(cls, raw: Mapping[str, Any] | None) -> RoomPolicy:
        """Parse the ConfigMap's ``policy.yaml`` (None or empty: the strict defaults)."""
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise PolicyError("roomPolicy must be a mapping")
        livekit = raw.get("livekit") or {}
        if not isinstance(livekit, Mapping):
            raise PolicyError("roomPolicy.livekit must be a mapping")
        secrets = raw.get("credentialSecrets") or []
        if not isinstance(secrets, list) or len(secrets) > MAX_ENTRIES:
            raise PolicyError(f"roomPolicy.credentialSecrets must be a list of at most {MAX_ENTRIES} names")
        for entry in secrets:
            if not isinstance(entry, str) or len(entry) > 317 or not _SECRET_ENTRY.match(entry):
                raise PolicyError(f"roomPolicy.credentialSecrets: {entry!r} is not 'name' or 'namespace/name'")
        return cls(
            allowed_hosts=_hosts(livekit, "allowedHosts"),
            insecure_hosts=_hosts(livekit, "insecureHosts"),
            credential_secrets=tuple(secrets),
        )

    def url_problem(self, url: str) -> str | None:
        """Why the worker may not connect to ``url`` under this policy; None when it may."""
        m = _URL.match(url)
        if m is None:
            return (
                f"LiveKit URL {url!r} is not a plain scheme://host[:port][/path] URL (no user info, "
                "percent-escapes or backslashes before the path)"
            )
        scheme, host = m["scheme"], m["host"].lower().rstrip(".").strip("[]")
        if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
            return f"LiveKit URL {url!r} has an invalid port"
        if scheme in INSECURE_SCHEMES:
            listed = any(_host_matches(host, p) for p in self.insecure_hosts)
            if not listed:
                return (
                    f"LiveKit URL {url!r} is not encrypted: use wss:// (or https://); an admin may allow "
                    f"{scheme}:// to {host} with operator.roomPolicy.livekit.insecureHosts when it is "
                    "loopback or inside the cluster"
                )
            if not in_cluster_host(host):
                return (
                    f"LiveKit URL {url!r}: {scheme}:// is only allowed to loopback, private or in-cluster "
                    f"hosts, and {host} is none of them (use wss://)"
                )
            return None
        if self.allowed_hosts and not any(
            _host_matches(host, p) for p in (*self.allowed_hosts, *self.insecure_hosts)
        ):
            return (
                f"LiveKit host {host} is not in operator.roomPolicy.livekit.allowedHosts "
                f"({', '.join(self.allowed_hosts)})"
            )
        return None

    def secret_problem(self, namespace: str, name: str, labels: Mapping[str, Any] | None) -> str | None:
        """Why Secret ``namespace/name`` may not be used as credentials; None when it may."""
        if (labels or {}).get(CREDENTIALS_LABEL) == "true":
            return None
        if name in self.credential_secrets or f"{namespace}/{name}" in self.credential_secrets:
            return None
        return (
            f"Secret {namespace}/{name} is not marked as LiveKit credentials: label it "
            f"{CREDENTIALS_LABEL}=true (kubectl label secret -n {namespace} {name} {CREDENTIALS_LABEL}=true) "
            "or have an admin list it in operator.roomPolicy.credentialSecrets"
        )
