"""Console values the chart must refuse to render (its values schema and template checks), by the real helm
binary: a console turned on without its LiveKit URL or Secret, or with settings that would weaken the pod."""

from __future__ import annotations

import pytest

from tests.chart.test_console_chart import ON, helm_fails


@pytest.mark.parametrize("missing", ["console.livekit.url", "console.livekit.credentialsSecretRef.name"])
def test_enabled_console_requires_url_and_secret(missing: str) -> None:
    args = [arg for flag, value in zip(ON[::2], ON[1::2], strict=True) if not value.startswith(missing + "=")
            for arg in (flag, value)]
    assert missing.rsplit(".", 1)[-1] in helm_fails(*args)


@pytest.mark.parametrize("bad", [
    "console.unknownKey=1",
    "console.service.type=ExternalName",
    "console.service.port=0",
    "console.port=70000",
    "console.securityContext.readOnlyRootFilesystem=false",
    "console.securityContext.allowPrivilegeEscalation=true",
    "console.securityContext.privileged=true",
    "console.securityContext.capabilities.add={NET_ADMIN}",
    "console.securityContext.seccompProfile.type=Unconfined",
    "console.podSecurityContext.runAsNonRoot=false",
    "console.podSecurityContext.runAsUser=0",
    "console.livekit.url=ftp://lk.example.test",
    "console.livekit.credentialsSecretRef.apiKeyKey=",
    "console.rooms.namespace=Not_A_Namespace",
    "console.rooms.static={bad room}",
    "console.tokenTtlSeconds=10",
    "console.rateLimit.burst=0",
    "console.ingress.pathType=Anything",
    "console.ingress.unknown=1",
    "console.image.pullPolicy=Sometimes",
    "console.staticDir=relative/dir",
])
def test_values_schema_rejects_bad_console_values(bad: str) -> None:
    assert "schema" in helm_fails(*ON, "--set", bad)


def test_values_schema_rejects_an_enabled_console_without_url_even_if_templates_change() -> None:
    assert "schema" in helm_fails("--set", "console.enabled=true")
