"""The chart's RBAC is exactly the operator's API calls (operator/livenexus_operator/api_calls.py), rendered by
the real helm binary. That each listed call is made, and nothing else, is checked against a real
kube-apiserver in tests/operator/test_render_rbac_cluster.py."""

from __future__ import annotations

from typing import Any

import pytest

from livenexus_operator.api_calls import API_CALLS, CLUSTER, LEASE, OWN, ROOMS, TEMPLATE, rules
from tests.operator.helpers import helm_template

RELEASE_NAMES = {TEMPLATE: "lnx-livenexus-worker-template", LEASE: "lnx-livenexus-operator"}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def granted(rule_list: list[dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    """(group, resource, resourceName or '') → verbs, refusing wildcards and non-resource rules."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for rule in rule_list:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                for name in rule.get("resourceNames") or [""]:
                    out.setdefault((group, res, name), set()).update(rule["verbs"])
    return out


def expected(*scopes: str) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for scope in scopes:
        for (group, res, name), verbs in rules(scope).items():
            out.setdefault((group, res, RELEASE_NAMES.get(name, name)), set()).update(verbs)
    return out


def self_role(docs: list[dict[str, Any]], namespace: str = "livenexus") -> dict[str, Any]:
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-self")
               and r["metadata"]["namespace"] == namespace]
    return role


def test_cluster_wide_install_grants_exactly_the_calls() -> None:
    docs = helm_template()
    (role,) = by_kind(docs, "ClusterRole")
    assert granted(role["rules"]) == expected(ROOMS, CLUSTER)
    assert granted(self_role(docs)["rules"]) == expected(OWN)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "livenexus"}]
    # Secrets: read one by name only, never list or watch (that would hand over every Secret's value).
    assert granted(role["rules"])[("", "secrets", "")] == {"get"}


def test_namespaced_install_has_roles_only() -> None:
    docs = helm_template("--set", "operator.watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")
             if not r["metadata"]["name"].endswith("-self")}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        # Cluster-scoped objects cannot be granted by a Role: their callers must do without them.
        assert granted(role["rules"]) == expected(ROOMS)
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")
                if not b["metadata"]["name"].endswith("-self")}
    assert set(bindings) == {"team-a", "team-b"}
    assert granted(self_role(docs)["rules"]) == expected(OWN)


def test_without_leader_election_no_lease_rights() -> None:
    docs = helm_template("--set", "operator.leaderElection.enabled=false")
    own = granted(self_role(docs)["rules"])
    assert not [k for k in own if k[1] == "leases"]
    assert own == {k: v for k, v in expected(OWN).items() if k[1] != "leases"}


def test_rbac_off_renders_no_rbac() -> None:
    docs = helm_template("--set", "rbac.create=false")
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]


@pytest.mark.parametrize("call", API_CALLS, ids=[f"{c.verb}-{c.resource}" for c in API_CALLS])
def test_every_call_says_who_makes_it_and_why(call: Any) -> None:
    assert call.by and call.why
    assert call.scope in (ROOMS, OWN, CLUSTER)
    assert call.verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    # The only thing the operator deletes is a TranscriptionRoom a policy created (uid precondition); never its
    # workers (garbage-collected through ownerReferences), Secrets or anything cluster-scoped.
    assert call.verb != "delete" or (call.resource == "transcriptionrooms" and call.feature == "policies")
    assert (call.scope == OWN) or not call.name, "resourceNames only for the operator's own objects"
