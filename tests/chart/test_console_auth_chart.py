"""The console chart's exposure settings: an explicit auth mode, the access key Secret, trusted proxies and
read-only tokens, each fed back into the service's own config parser (rendered by the real helm binary)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.chart.test_console_chart import LK_URL, SECRET, container, helm_fails, parsed
from tests.operator.helpers import helm_template

BASE = ("--set", "console.enabled=true", "--set", f"console.livekit.url={LK_URL}",
        "--set", f"console.livekit.credentialsSecretRef.name={SECRET}")


def test_an_enabled_console_needs_an_explicit_auth_mode() -> None:
    # No default: "open to whoever reaches the Service" is never what an unset value means.
    assert "schema" in helm_fails(*BASE) or "console.auth.mode" in helm_fails(*BASE)
    assert "schema" in helm_fails(*BASE, "--set", "console.auth.mode=open")
    # Explicitly open is possible (a local demo cluster), and then the service agrees to bind all interfaces.
    cfg = parsed(container(helm_template(*BASE, "--set", "console.auth.mode=none")))
    assert cfg.auth_mode == "none" and cfg.host == "0.0.0.0"


def test_token_mode_reads_the_access_key_from_a_secret() -> None:
    assert "tokenSecretRef" in helm_fails(*BASE, "--set", "console.auth.mode=token")
    c = container(helm_template(*BASE, "--set", "console.auth.mode=token",
                                "--set", "console.auth.tokenSecretRef.name=console-key",
                                "--set", "console.auth.tokenSecretRef.key=key"))
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "LIVENEXUS_CONSOLE_AUTH_TOKEN"]
    assert ref == {"name": "console-key", "key": "key"}  # never a plain value in the pod spec
    assert all("value" not in e for e in c["env"] if e["name"] == "LIVENEXUS_CONSOLE_AUTH_TOKEN")


def test_header_mode_needs_the_proxies_that_may_name_the_user() -> None:
    assert "trustedProxies.cidrs" in helm_fails(*BASE, "--set", "console.auth.mode=header")
    docs = helm_template(*BASE, "--set", "console.auth.mode=header", "--set", "console.auth.userHeader=X-Email",
                         "--set", "console.trustedProxies.cidrs={10.244.0.0/16,fd00::/8}")
    cfg = parsed(container(docs))
    assert cfg.auth_mode == "header" and cfg.auth_user_header == "X-Email"
    assert cfg.trusted_proxies == (ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00::/8"))


def test_trusted_proxies_are_cidrs_or_a_hop_count() -> None:
    on = (*BASE, "--set", "console.auth.mode=none")
    assert parsed(container(helm_template(*on))).trusted_proxies == ()
    assert parsed(container(helm_template(*on, "--set", "console.trustedProxies.hops=2"))).proxy_hops == 2
    assert "not both" in helm_fails(*on, "--set", "console.trustedProxies.hops=1",
                                    "--set", "console.trustedProxies.cidrs={10.0.0.0/8}")


def test_tokens_are_read_only_and_short_unless_asked_otherwise() -> None:
    on = (*BASE, "--set", "console.auth.mode=none")
    cfg = parsed(container(helm_template(*on)))
    assert cfg.allow_microphone is False and cfg.token_ttl_s == 120
    assert cfg.agent_identity_prefix == "livenexus-agent"
    cfg = parsed(container(helm_template(*on, "--set", "console.allowMicrophone=true",
                                         "--set", "console.agentIdentityPrefix=lnx-agent")))
    assert cfg.allow_microphone is True and cfg.agent_identity_prefix == "lnx-agent"


@pytest.mark.parametrize("bad", [
    "console.trustForwarded=true",  # the old leftmost-X-Forwarded-For switch is gone, not silently ignored
    "console.auth.mode=off",
    "console.auth.userHeader=Bad Header",
    "console.auth.tokenSecretRef.key=",
    "console.trustedProxies.cidrs={not-an-ip}",
    "console.trustedProxies.hops=-1",
    "console.trustedProxies.hops=17",
    "console.tokenTtlSeconds=86400",
    "console.agentIdentityPrefix=-x",
    "console.allowMicrophone=maybe",
])
def test_schema_rejects_bad_exposure_values(bad: str) -> None:
    assert "schema" in helm_fails(*BASE, "--set", "console.auth.mode=none", "--set", bad)

