"""Reading a pod's CPU and resize verdict, and building the pods/resize patch (pure, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from livenexus_operator.resize import ResizeUnsupported, pick_worker_pod, pod_cpu, resize_patch, resize_state


def pod(requests: dict[str, str], limits: dict[str, str], status_limits: dict[str, str] | None = None,
        conditions: list[dict[str, Any]] | None = None, **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "conditions": conditions or []}
    if status_limits is not None:
        status["containerStatuses"] = [{"name": "worker", "resources": {"limits": status_limits}}]
    return {"metadata": {"name": "w", "namespace": "n", "uid": "u1", **meta},
            "spec": {"containers": [{"name": "worker", "resources": {"requests": requests, "limits": limits}}]},
            "status": status}


def cpu_of(patch: dict[str, Any]) -> dict[str, Any]:
    (c,) = patch["spec"]["containers"]
    assert c["name"] == "worker" and set(c["resources"]) <= {"requests", "limits"}
    return dict(c["resources"])


def test_request_follows_the_limit_and_memory_is_never_touched() -> None:
    burstable = pod({"cpu": "500m", "memory": "1Gi"}, {"cpu": "500m", "memory": "2Gi"})
    assert cpu_of(resize_patch(burstable, 1500)) == {"limits": {"cpu": "1500m"}, "requests": {"cpu": "1500m"}}
    guaranteed = pod({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    assert cpu_of(resize_patch(guaranteed, 2000)) == {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}


def test_a_burstable_pod_is_never_made_guaranteed() -> None:
    # Memory request == limit and CPU request < limit: raising the CPU request to the limit would change
    # the QoS class, which the API server refuses for an in-place resize.
    p = pod({"cpu": "250m", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    res = cpu_of(resize_patch(p, 2000))
    assert res["limits"] == {"cpu": "2"} and res["requests"] == {"cpu": "500m"}  # the old 1/4 share
    # A request left out defaults to the limit (the API server fills it in): that pod is Guaranteed.
    defaulted = pod({"memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    assert cpu_of(resize_patch(defaulted, 2000)) == {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}


def test_allocated_comes_from_the_kubelet_once_it_reports() -> None:
    p = pod({"cpu": "1"}, {"cpu": "1"}, status_limits={"cpu": "500m"},
            conditions=[{"type": "PodResizePending", "status": "True", "reason": "Deferred"}])
    cpu = pod_cpu(p, 4000)
    assert (cpu.allocated_millis, cpu.desired_millis, cpu.resize, cpu.node_allocatable_millis) == (
        500, 1000, "Deferred", 4000)
    assert pod_cpu(pod({"cpu": "1"}, {"cpu": "1"})).allocated_millis == 1000  # not started: the spec


@pytest.mark.parametrize(("status", "state"), [
    ({"conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}]}, "Infeasible"),
    ({"conditions": [{"type": "PodResizeInProgress", "status": "True"}]}, "InProgress"),
    ({"conditions": [{"type": "PodResizePending", "status": "False", "reason": "Deferred"}]}, ""),
    ({"resize": "Deferred"}, "Deferred"),
    ({"resize": "Proposed"}, ""),
    ({"conditions": ["junk", {"type": "PodResizePending", "status": "True", "reason": "<script>"}]}, ""),
])
def test_resize_verdicts(status: dict[str, Any], state: str) -> None:
    assert resize_state({"status": status}) == state


@pytest.mark.parametrize("p", [
    pod({}, {"memory": "1Gi"}),  # no CPU limit: no quota to resize
    pod({"cpu": "1"}, {"cpu": "lots"}),
    {"spec": {"containers": [{"name": "sidecar"}]}},
])
def test_pods_that_cannot_be_resized_say_why(p: dict[str, Any]) -> None:
    with pytest.raises(ResizeUnsupported):
        pod_cpu(p)


def test_the_live_pod_is_picked() -> None:
    old = pod({}, {}, creationTimestamp="2026-01-01T00:00:00Z")
    new = pod({}, {}, creationTimestamp="2026-01-01T00:01:00Z")
    new["status"]["phase"] = "Pending"
    gone = pod({}, {}, creationTimestamp="2026-01-01T00:02:00Z", deletionTimestamp="2026-01-01T00:03:00Z")
    failed = pod({}, {}, creationTimestamp="2026-01-01T00:02:00Z")
    failed["status"]["phase"] = "Failed"
    assert pick_worker_pod([new, old, gone, failed]) is old  # Running beats the newer Pending one
    assert pick_worker_pod([gone, failed]) is None
