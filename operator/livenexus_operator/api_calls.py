"""Every Kubernetes API call the operator makes: the source of the RBAC the chart grants.

``charts/livenexus/templates/rbac.yaml`` must grant exactly :func:`rules` (``tests/chart/test_security_rbac.py``
renders it with helm and compares), and a real operator run against a real kube-apiserver, its own calls
(``kube.call``) and kopf's (kopf's ``api.request``) recorded, must make every one of these calls and no
other. A new API call therefore needs a line here and the matching rule in rbac.yaml, or a test fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ROOMS = "rooms"
"""Where TranscriptionRooms are reconciled: a ClusterRole, or a Role in each of ``operator.watchNamespaces``."""
OWN = "own"
"""The operator's own namespace (the ``-self`` Role), limited to the named objects."""
CLUSTER = "cluster"
"""Cluster-scoped objects: only in the ClusterRole (without one, callers must cope with a 403)."""

AUTOSCALE = "autoscale"
"""ApiCall.feature of the autoscaler's calls."""
POLICIES = "policies"
"""ApiCall.feature of the calls only policies cause (tests/operator/test_policy_cluster.py makes them)."""

TEMPLATE = "template"
"""resourceNames: the worker-template ConfigMap."""
LEASE = "lease"
"""resourceNames: the leader Lease."""


@dataclass(frozen=True)
class ApiCall:
    """One kind of request the operator makes."""

    verb: str
    """RBAC verb (get, list, watch, create, update, patch, delete)."""
    group: str
    """API group ('' for core)."""
    resource: str
    """Plural resource, with ``/subresource`` when it is one."""
    scope: str
    """:data:`ROOMS` or :data:`OWN`."""
    by: str
    """Who makes it: ``module.function`` or ``kopf``."""
    why: str
    """What it is for."""
    name: str = ""
    """For :data:`OWN`: :data:`TEMPLATE` or :data:`LEASE` (granted by resourceName); '' for any name."""
    feature: str = ""
    """'' for calls every operator makes; :data:`AUTOSCALE` for those only rooms with spec.autoscaling cause
    (the RBAC test's recorded run does not exercise them; the autoscaler's own cluster tests do); :data:`POLICIES`
    for those of TranscriptionPolicies."""


API_CALLS: tuple[ApiCall, ...] = (
    ApiCall("list", "livenexus.io", "transcriptionrooms", ROOMS, "kopf", "initial list of the watch"),
    ApiCall("watch", "livenexus.io", "transcriptionrooms", ROOMS, "kopf", "events for the handlers and the index"),
    ApiCall("patch", "livenexus.io", "transcriptionrooms", ROOMS, "kopf", "progress and diff-base annotations"),
    ApiCall("patch", "livenexus.io", "transcriptionrooms/status", ROOMS, "kopf, refresher (kube.patch_status)",
            "status from the handlers and from the periodic refresh"),
    ApiCall("list", "livenexus.io", "transcriptionpolicies", ROOMS, "kopf", "initial list of the policy index"),
    ApiCall("watch", "livenexus.io", "transcriptionpolicies", ROOMS, "kopf", "events for the policy index"),
    ApiCall("patch", "livenexus.io", "transcriptionpolicies/status", ROOMS, "dispatch_loop.Dispatcher",
            "active and waiting rooms of a policy", feature=POLICIES),
    ApiCall("create", "livenexus.io", "transcriptionrooms", ROOMS, "dispatch_loop.Dispatcher._create",
            "a policy's room on its first audio track (POST: never overwrites)", feature=POLICIES),
    ApiCall("delete", "livenexus.io", "transcriptionrooms", ROOMS, "dispatch_loop.Dispatcher._delete",
            "a policy's room that ended (uid precondition)", feature=POLICIES),
    ApiCall("get", "apps", "deployments", ROOMS, "reconcile._current_hash", "spec hash of the live worker"),
    ApiCall("patch", "apps", "deployments", ROOMS, "kube.apply", "server-side apply of the worker"),
    # A server-side apply that creates the object is authorized as create too.
    ApiCall("create", "apps", "deployments", ROOMS, "kube.apply", "server-side apply of a missing worker"),
    ApiCall("patch", "", "services", ROOMS, "kube.apply", "server-side apply of the metrics Service"),
    ApiCall("create", "", "services", ROOMS, "kube.apply", "server-side apply of a missing Service"),
    ApiCall("get", "", "secrets", ROOMS, "reconcile.check_secret", "opt-in label and key presence (never list)"),
    ApiCall("create", "", "events", ROOMS, "kube.post_event", "events on the rooms"),
    # In-place CPU autoscaling (rooms with spec.autoscaling only).
    ApiCall("get", "", "services", ROOMS, "autoscale_loop", "the worker's metrics URL", feature=AUTOSCALE),
    ApiCall("list", "", "pods", ROOMS, "resize.find_worker_pod", "the room's worker pod, by label", feature=AUTOSCALE),
    ApiCall("patch", "", "pods/resize", ROOMS, "resize.resize_pod", "in-place CPU resize", feature=AUTOSCALE),
    ApiCall("get", "", "nodes", CLUSTER, "resize.node_allocatable_millis", "the node's allocatable CPU",
            feature=AUTOSCALE),
    ApiCall("get", "", "configmaps", OWN, "reconcile.load_settings", "worker template and room policy", TEMPLATE),
    ApiCall("get", "coordination.k8s.io", "leases", OWN, "leader.LeaseElector", "read the Lease", LEASE),
    ApiCall("update", "coordination.k8s.io", "leases", OWN, "leader.LeaseElector", "renew, take over, release",
            LEASE),
    # create cannot be limited by resourceNames: the name is not known at authorization time.
    ApiCall("create", "coordination.k8s.io", "leases", OWN, "leader.LeaseElector", "first holder creates it"),
)


def rules(scope: str, calls: Iterable[ApiCall] = API_CALLS) -> dict[tuple[str, str, str], set[str]]:
    """(group, resource, resourceName or '') → verbs, for one scope."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for call in calls:
        if call.scope == scope:
            out.setdefault((call.group, call.resource, call.name), set()).add(call.verb)
    return out
