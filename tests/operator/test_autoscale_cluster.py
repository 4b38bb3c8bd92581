"""The autoscaler in the in-process operator, as the chart's ServiceAccount, on the real control plane.

No kubelet runs, so the worker pod never starts: its metrics come from a real worker registry on 127.0.0.1
whose CPU signal the test sets, and the kubelet's resize verdicts are written into the pod's status by the
admin, as the kubelet would. What is real: the pods/resize subresource (its validation, the chart's RBAC
for it), the Deployment's pod staying the same object, the room's status and the Events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from livenexus_operator import autoscale_loop
from livenexus_operator.render import child_name
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.cpu import CpuSample
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer
from tests.operator.clusterlib import Cluster, MetricsBoard, Scene, apply, events_for, room, status_of, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RESOURCES = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
POLICY = {"enabled": True, "minCpu": "500m", "maxCpu": "1500m", "step": "500m", "upAfterSeconds": 1,
          "downAfterSeconds": 2, "cooldownSeconds": 0}


@dataclass
class Knob:
    """A CPU sampler whose pressure the test sets (what the worker's CpuSampler would read)."""

    value: float = 0.0

    def sample(self) -> CpuSample:
        return CpuSample(at=0.0, interval_s=1.0, usable_cores=0.5, quota_limited=True, process=self.value,
                         busy=None, stall=None, pressure=self.value)

    def rss_bytes(self) -> int:
        return 1


@pytest.fixture
def worker(board: MetricsBoard, ns: str) -> Iterator[Knob]:
    knob = Knob()
    metrics = WorkerMetrics(sampler=knob)  # type: ignore[arg-type]
    metrics.set_tier(0, TierSpec())
    with MetricsServer(metrics.registry, host="127.0.0.1", port=0) as server:
        board.urls[(ns, child_name("busy"))] = f"{server.url}/metrics"
        yield knob


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autoscale_loop, "TICK_S", 0.4)


def worker_pod(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    items = cluster.call("GET", f"/api/v1/namespaces/{ns}/pods",
                         query=[("labelSelector", "app.kubernetes.io/instance=busy")]).get("items") or []
    return items[0] if len(items) == 1 else None


def cpu(pod: dict[str, Any] | None) -> tuple[str, str, str]:
    res = (pod or {}).get("spec", {}).get("containers", [{}])[0].get("resources", {})
    return (str(res.get("requests", {}).get("cpu")), str(res.get("limits", {}).get("cpu")),
            str(res.get("limits", {}).get("memory")))


def messages(cluster: Cluster, ns: str, reason: str) -> list[str]:
    return [str(e.get("message")) for e in events_for(cluster, ns, "busy") if e.get("reason") == reason]


def test_overload_resizes_the_pod_in_place_up_to_max_then_down_to_min(scene: Scene, worker: Knob) -> None:
    cluster, ns = scene.cluster, scene.ns
    scene.credentials()
    with scene.operator():
        apply(cluster, room(ns, "busy", resources=RESOURCES, autoscaling=POLICY))
        pod = wait_for(lambda: worker_pod(cluster, ns), 30, "worker pod")
        uid = pod["metadata"]["uid"]
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["LIVENEXUS_AUTOSCALE_MAX_CPU"] == "1.5"
        st = wait_for(lambda: (status_of(cluster, ns, "busy").get("autoscaling") or {}).get("cpu"), 60, "status")
        assert st == "500m"

        worker.value = 0.97  # overloaded: one step, then the next, then held at maxCpu
        wait_for(lambda: cpu(worker_pod(cluster, ns)) == ("1", "1", "512Mi"), 60, "resize to 1 CPU")
        wait_for(lambda: cpu(worker_pod(cluster, ns)) == ("1500m", "1500m", "512Mi"), 60, "resize to 1500m")
        wait_for(lambda: messages(cluster, ns, "ResizeDeferred"), 60, "ResizeDeferred at maxCpu")
        assert "maxCpu 1500m" in messages(cluster, ns, "ResizeDeferred")[0]
        resized = messages(cluster, ns, "Resized")
        # The API lists Events by name, not by time: check the two steps, in either order.
        assert len(resized) == 2 and any("from 500m to 1 CPU" in m for m in resized), resized
        auto = status_of(cluster, ns, "busy")["autoscaling"]
        assert auto["cpu"] == auto["desiredCpu"] == "1500m"
        assert auto["lastDecision"]["action"] == "Up" and auto["lastDecision"]["toCpu"] == "1500m"

        worker.value = 0.05  # calm: back down one step at a time to minCpu, never below
        wait_for(lambda: cpu(worker_pod(cluster, ns))[1] == "500m", 90, "back to 500m")
        wait_for(lambda: status_of(cluster, ns, "busy")["autoscaling"].get("cpu") == "500m", 60, "status 500m")
        assert status_of(cluster, ns, "busy")["autoscaling"]["lastDecision"]["action"] == "Down"
        assert len(messages(cluster, ns, "Resized")) == 4
        pod = worker_pod(cluster, ns)
        assert pod is not None and pod["metadata"]["uid"] == uid  # the same pod all along, never replaced
        # The Deployment's template (what a replacement pod would get) was never touched.
        dep = cluster.get("apps/v1", "Deployment", ns, child_name("busy"))
        assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["resources"] == RESOURCES


def test_a_resize_the_node_cannot_grant_is_withdrawn_and_not_retried(scene: Scene, worker: Knob) -> None:
    cluster, ns = scene.cluster, scene.ns
    scene.credentials()
    with scene.operator():
        apply(cluster, room(ns, "busy", resources=RESOURCES, autoscaling=POLICY))
        pod = wait_for(lambda: worker_pod(cluster, ns), 30, "worker pod")
        worker.value = 0.97
        wait_for(lambda: cpu(worker_pod(cluster, ns))[1] == "1", 60, "resize to 1 CPU")
        # What a kubelet on a full node answers: it keeps running 500m and marks the resize Infeasible.
        name = pod["metadata"]["name"]
        status = {"status": {
            "conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible",
                            "message": "Node didn't have enough capacity: cpu"}],
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": False,
                                   "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}},
                                   "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}}],
        }}
        cluster.call("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", body=status,
                     content_type="application/strategic-merge-patch+json")
        wait_for(lambda: cpu(worker_pod(cluster, ns))[1] == "500m", 30, "the resize withdrawn")
        wait_for(lambda: messages(cluster, ns, "ResizeDeferred"), 30, "ResizeDeferred event")
        assert "Infeasible" in messages(cluster, ns, "ResizeDeferred")[0]
        # Still overloaded, but the node refused 1 CPU: the worker's tier downgrade takes over, no retry loop.
        cluster.call("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status",
                     body={"status": {"conditions": [{"type": "PodResizePending", "status": "False"}]}},
                     content_type="application/strategic-merge-patch+json")
        wait_for(lambda: (status_of(cluster, ns, "busy").get("autoscaling") or {}).get("desiredCpu") == "500m",
                 30, "status after the withdrawal")
        for _ in range(3):
            autoscale_loop_ticks = len(messages(cluster, ns, "Resized"))
            assert autoscale_loop_ticks == 1 and cpu(worker_pod(cluster, ns))[1] == "500m"
            wait_for(lambda: True, 1, "a few ticks")
            __import__("time").sleep(1.0)
