"""The operator's API calls, recorded from a real run against the real kube-apiserver as the chart's
ServiceAccount: every call it makes is listed in api_calls.py (which the chart's RBAC equals, see
tests/chart/test_security_rbac.py), and every listed call (autoscaler aside) is made."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from kopf._cogs.clients import api as kopf_api

from livenexus_operator import kube
from livenexus_operator.api_calls import API_CALLS, LEASE, OWN, TEMPLATE
from livenexus_operator.leader import LeaseElector
from tests.operator.clusterlib import Scene, apply, deployment, reasons, room, status_of, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

Request = tuple[str, str, str]
"""(method, path with query, content type)."""
Call = tuple[str, str, str, str, str]
"""(verb, group, resource, namespace, name) as RBAC sees a request."""


def classify(method: str, url: str, content_type: str) -> list[Call]:
    """What the API server authorizes for one request; [] for discovery and other non-resource paths."""
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    parts = [p for p in parsed.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return []
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return []
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    method = method.upper()
    if method == "GET":
        verb = "watch" if query.get("watch", [""])[0] in ("true", "1") else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    calls = [(verb, group, resource, namespace, name)]
    if content_type.startswith("application/apply-patch"):
        # Server-side apply of an object that does not exist yet is authorized as create as well.
        calls.append(("create", group, resource, namespace, name))
    return calls


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Request]]:
    """Every request of the operator: its own (kube.call with its credentials) and kopf's (kopf's client)."""
    seen: list[Request] = []
    own_call = kube.call
    kopf_request = kopf_api.request

    def call(method: str, path: str, body: Any = None, content_type: str | None = None,
             query: list[tuple[str, Any]] | None = None, api: Any = None) -> dict[str, Any]:
        if api is None:  # the tests' admin calls pass their own client
            seen.append((method, path + "?" + urllib.parse.urlencode(query or []), content_type or ""))
        return own_call(method, path, body, content_type, query, api)

    async def kopf_recorder(method: str, url: str, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        seen.append((method, url, str(headers.get("Content-Type", ""))))
        return await kopf_request(method, url, **kwargs)

    monkeypatch.setattr(kube, "call", call)
    monkeypatch.setattr(kopf_api, "request", kopf_recorder)
    yield seen


def test_operator_makes_exactly_the_listed_calls(scene: Scene, recorded: list[Request]) -> None:
    cluster, release, ns = scene.cluster, scene.release, scene.ns
    # Leader election from scratch: the Lease is created, renewed and released.
    cluster.call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{release.namespace}/leases/{release.lease}") \
        if cluster.get("coordination.k8s.io/v1", "Lease", release.namespace, release.lease) else None

    async def lead() -> None:
        elector = LeaseElector(release.namespace, release.lease, "rbac-test", lease_duration_s=3,
                               renew_deadline_s=2, retry_period_s=0.25)
        assert await elector.try_acquire_or_renew()
        assert await elector.try_acquire_or_renew()
        await elector.release()

    asyncio.run(lead())
    scene.credentials()
    with scene.operator():
        apply(cluster, room(ns, "audited"))
        wait_for(lambda: deployment(cluster, ns, "audited"), 30, "worker deployment")
        wait_for(lambda: status_of(cluster, ns, "audited").get("phase"), 30, "status")
        wait_for(lambda: "WorkerCreated" in reasons(cluster, ns, "audited"), 15, "event")

    made = {c for r in recorded for c in classify(*r)}
    declared = {(c.verb, c.group, c.resource) for c in API_CALLS}
    undeclared = sorted({c[:3] for c in made} - declared)
    assert not undeclared, f"calls missing from api_calls.py (and so from the RBAC): {undeclared}"
    unused = sorted({(c.verb, c.group, c.resource) for c in API_CALLS if not c.feature}
                    - {c[:3] for c in made})
    assert not unused, f"api_calls.py lists calls the operator never made (drop them and their RBAC): {unused}"
    # Calls in the operator's own namespace touch only the named objects the Role grants.
    names = {TEMPLATE: release.template_configmap, LEASE: release.lease}
    for verb, group, resource, namespace, name in made:
        if namespace == release.namespace:
            (spec,) = [c for c in API_CALLS if (c.verb, c.group, c.resource, c.scope) == (verb, group, resource, OWN)]
            assert not spec.name or name == names[spec.name], (verb, resource, name)
        else:
            assert namespace in (ns, ""), (verb, resource, namespace)
