"""In-place CPU resize of a room's worker pod: read its CPU state, build the patch, call ``pods/resize``.

The Deployment's template is never touched (that would roll the pod, the opposite of the point): the
running pod's spec is resized through its ``resize`` subresource (Kubernetes >= 1.33) and the kubelet
changes the container's CFS quota without a restart. A pod that is replaced starts again from the
template's resources and the autoscaler takes it from there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from livenexus_operator import kube
from livenexus_operator.autoscale import AutoscaleError, PodCpu, ResizeState, format_cpu, parse_cpu_millis
from livenexus_operator.render import CONTAINER, WORKER_APP, label_value

NODE_CACHE_S = 60.0
"""How long a node's allocatable CPU is reused (it changes only when the node is reconfigured)."""
_node_cache: dict[str, tuple[float, int | None]] = {}
_NODE_CACHE_MAX = 1024


class ResizeUnsupported(ValueError):
    """The pod cannot be resized by the autoscaler (no CPU limit on the worker container, no container)."""


def _container(pod: Mapping[str, Any], section: str, name: str = CONTAINER) -> Mapping[str, Any] | None:
    for c in (pod.get(section) or {}).get("containers" if section == "spec" else "containerStatuses") or []:
        if isinstance(c, Mapping) and c.get("name") == name:
            return c
    return None


def resize_state(pod: Mapping[str, Any]) -> ResizeState:
    """The kubelet's verdict on a pending resize: the PodResizePending / PodResizeInProgress conditions
    (1.33+), else the older ``status.resize`` field."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if not isinstance(cond, Mapping) or cond.get("status") != "True":
            continue
        if cond.get("type") == "PodResizePending" and cond.get("reason") in ("Deferred", "Infeasible"):
            return "Deferred" if cond.get("reason") == "Deferred" else "Infeasible"
        if cond.get("type") == "PodResizeInProgress":
            return "InProgress"
    legacy = (pod.get("status") or {}).get("resize")
    if legacy in ("Deferred", "Infeasible", "InProgress"):
        return "Deferred" if legacy == "Deferred" else "Infeasible" if legacy == "Infeasible" else "InProgress"
    return ""


def pod_cpu(pod: Mapping[str, Any], node_allocatable_millis: int | None = None) -> PodCpu:
    """The worker container's CPU limit as the spec wants it and as the kubelet applied it."""
    spec_c = _container(pod, "spec")
    if spec_c is None:
        raise ResizeUnsupported(f"pod has no container {CONTAINER!r}")
    limit = ((spec_c.get("resources") or {}).get("limits") or {}).get("cpu")
    if limit is None:
        raise ResizeUnsupported("the worker container has no CPU limit (no quota to resize); set one in "
                                "spec.resources or the chart's worker.resources")
    try:
        desired = parse_cpu_millis(limit, "limits.cpu")
        status_c = _container(pod, "status") or {}
        applied = ((status_c.get("resources") or {}).get("limits") or {}).get("cpu")
        allocated = parse_cpu_millis(applied, "status limits.cpu") if applied is not None else desired
    except AutoscaleError as exc:
        raise ResizeUnsupported(str(exc)) from exc
    return PodCpu(allocated, desired, resize_state(pod), node_allocatable_millis)


def _qos(requests: Mapping[str, Any], limits: Mapping[str, Any]) -> str:
    if not requests and not limits:
        return "BestEffort"
    guaranteed = all(
        k in limits and str(requests.get(k, limits[k])) == str(limits[k]) for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def resize_patch(pod: Mapping[str, Any], millis: int) -> dict[str, Any]:
    """Strategic-merge patch for ``pods/resize`` that sets the worker's CPU limit (and request) to ``millis``.

    The request follows the limit so the node reserves what the worker may use (which is also what makes a
    resize Deferred or Infeasible when the node is full), unless that would turn a Burstable pod Guaranteed:
    the QoS class cannot change in place, so the request then keeps its old share of the limit.
    """
    spec_c = _container(pod, "spec") or {}
    res = spec_c.get("resources") or {}
    requests, limits = dict(res.get("requests") or {}), dict(res.get("limits") or {})
    new_limits = {**limits, "cpu": format_cpu(millis)}
    new_requests = {**requests, "cpu": format_cpu(millis)}
    if _qos(new_requests, new_limits) != _qos(requests, limits):
        old_req = parse_cpu_millis(requests["cpu"], "requests.cpu") if "cpu" in requests else 0
        old_lim = parse_cpu_millis(limits["cpu"], "limits.cpu")
        share = max(1, min(millis - 1, round(millis * old_req / old_lim))) if old_req else 0
        if share:
            new_requests["cpu"] = format_cpu(share)
        else:
            new_requests.pop("cpu")
    resources: dict[str, Any] = {"limits": {"cpu": new_limits["cpu"]}}
    if "cpu" in new_requests:
        resources["requests"] = {"cpu": new_requests["cpu"]}
    return {"spec": {"containers": [{"name": CONTAINER, "resources": resources}]}}


def pick_worker_pod(pods: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The room's live worker pod: not terminating, not finished, Running first, then the newest."""
    live = [
        p for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    live.sort(key=lambda p: ((p.get("status") or {}).get("phase") == "Running",
                             str((p.get("metadata") or {}).get("creationTimestamp") or "")))
    return live[-1] if live else None


async def find_worker_pod(namespace: str, room_name: str) -> Mapping[str, Any] | None:
    selector = f"app.kubernetes.io/name={WORKER_APP},app.kubernetes.io/instance={label_value(room_name)}"
    out = await kube.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                             query=[("labelSelector", selector), ("limit", 16)])
    return pick_worker_pod([p for p in out.get("items") or [] if isinstance(p, Mapping)])


async def node_allocatable_millis(node: str) -> int | None:
    """The node's allocatable CPU; None when unknown (not scheduled, or the operator may not read nodes:
    with watchNamespaces it has Roles only, and the kubelet's Infeasible verdict then stands in for it)."""
    if not node:
        return None
    now = time.monotonic()
    cached = _node_cache.get(node)
    if cached is not None and now - cached[0] < NODE_CACHE_S:
        return cached[1]
    value: int | None = None
    try:
        obj = await kube.request("GET", f"/api/v1/nodes/{node}")
        raw = ((obj.get("status") or {}).get("allocatable") or {}).get("cpu")
        value = parse_cpu_millis(raw, "allocatable.cpu") if raw is not None else None
    except (kube.ApiError, kube.NotFound, AutoscaleError):
        value = None
    if len(_node_cache) >= _NODE_CACHE_MAX:
        _node_cache.clear()
    _node_cache[node] = (now, value)
    return value


async def resize_pod(pod: Mapping[str, Any], millis: int) -> dict[str, Any]:
    """PATCH the pod's ``resize`` subresource; preconditioned on its UID so a replacement pod of the same
    name (a StatefulSet-like reuse, or a race with the Deployment) is never resized by mistake."""
    meta = pod.get("metadata") or {}
    body = resize_patch(pod, millis)
    body["metadata"] = {"uid": meta.get("uid")}
    return await kube.request(
        "PATCH",
        f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}/resize",
        body=body,
        content_type="application/strategic-merge-patch+json",
        query=[("fieldManager", kube.FIELD_MANAGER)],
    )
