"""The operator, in-process as the chart's ServiceAccount, reconciling rooms on the real control plane.

No kubelet runs: worker pods are created (and must pass PodSecurity "restricted") but never start, so
worker metrics come from a real worker registry served on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from livenexus_operator.metrics import METRICS
from livenexus_operator.render import child_name, render
from livenexus_operator.spec import WorkerTemplate
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.metrics import WorkerMetrics
from tests.operator.clusterlib import (
    Scene,
    apply,
    condition,
    deployment,
    get_room,
    pod_hash,
    reasons,
    room,
    secret_manifest,
    status_of,
    wait_for,
)
from tests.operator.helpers import approved

pytestmark = [pytest.mark.kube, pytest.mark.slow]

LADDER = (TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250), TierSpec("base", "int8", 1, 600))


@pytest.mark.usefixtures("creds")
def test_room_becomes_a_worker_deployment_and_service(scene: Scene) -> None:
    cluster, release, ns = scene.cluster, scene.release, scene.ns
    # Cluster-wide, as the chart's default ClusterRole allows.
    with scene.operator(all_namespaces=True):
        apply(cluster, room(ns, "standup", room="Daily Stand-up", model={"beamSize": 3}))
        dep = wait_for(lambda: deployment(cluster, ns, "standup"), 30, "worker deployment")
        svc = wait_for(lambda: cluster.get("v1", "Service", ns, child_name("standup")), 30, "worker service")
        st = wait_for(lambda: (s := status_of(cluster, ns, "standup")).get("phase") and s, 30, "status")
        live = get_room(cluster, ns, "standup")
        assert live is not None
        cm = cluster.get("v1", "ConfigMap", release.namespace, release.template_configmap)
        assert cm is not None
        secret = cluster.get("v1", "Secret", ns, "lk")
        assert secret is not None
        expected = render(live, WorkerTemplate.from_values(yaml.safe_load(cm["data"]["worker.yaml"])),
                          approved(live, secret["metadata"]["resourceVersion"]))
        want, got = expected.deployment, dep
        assert got["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"]
        assert got["metadata"]["ownerReferences"][0]["uid"] == live["metadata"]["uid"]
        # No finalizer: a room must stay deletable while the operator is down or uninstalled.
        assert not live["metadata"].get("finalizers")
        assert got["metadata"]["labels"] == want["metadata"]["labels"]
        assert got["spec"]["replicas"] == 1 and got["spec"]["strategy"] == {"type": "Recreate"}
        assert got["spec"]["selector"] == want["spec"]["selector"]
        (c,) = got["spec"]["template"]["spec"]["containers"]
        (wc,) = want["spec"]["template"]["spec"]["containers"]
        for key in ("command", "args", "env", "ports", "securityContext", "volumeMounts", "image"):
            assert c[key] == wc[key], key
        assert pod_hash(got) == expected.spec_hash
        assert {e["name"]: e.get("value") for e in c["env"]}["LIVENEXUS_ROOM"] == "Daily Stand-up"
        assert svc["spec"]["selector"] == expected.service["spec"]["selector"]
        assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]

        # The ReplicaSet controller could create the pod: the template passes PodSecurity "restricted".
        pods = wait_for(lambda: cluster.call("GET", f"/api/v1/namespaces/{ns}/pods", query=[
            ("labelSelector", "app.kubernetes.io/instance=standup")]).get("items"), 30, "worker pod")
        assert len(pods) == 1

        assert st["phase"] == "Pending" and st["room"] == "Daily Stand-up"
        assert st["observedGeneration"] == live["metadata"]["generation"]
        assert st["workerRef"]["name"] == child_name("standup")
        assert condition(live, "Ready")["reason"] == "WorkerUnavailable"
        assert condition(live, "WorkerAvailable")["status"] == "False"
        assert condition(live, "Degraded")["status"] == "Unknown"
        wait_for(lambda: "WorkerCreated" in reasons(cluster, ns, "standup"), 15, "WorkerCreated event")


@pytest.mark.usefixtures("creds")
def test_status_follows_worker_metrics_and_tier_changes(scene: Scene, worker: tuple[WorkerMetrics, str]) -> None:
    cluster, ns = scene.cluster, scene.ns
    metrics, url = worker
    scene.board.urls[(ns, child_name("meeting"))] = url
    metrics.set_tier(0, LADDER[0])
    for _ in range(10):
        metrics.observe_final(0.15)
        metrics.observe_final(0.45)
    metrics.set_active_speakers(3)
    with scene.operator():
        apply(cluster, room(ns, "meeting"))
        st = wait_for(lambda: (s := status_of(cluster, ns, "meeting")).get("currentModel") and s, 30,
                      "status from metrics")
        # Hand-computed from the buckets: p50 ends (0.1, 0.2], p95 is 9/10 into (0.4, 0.5].
        assert st["finalLatencyP50Ms"] == pytest.approx(200.0)
        assert st["finalLatencyP95Ms"] == pytest.approx(490.0)
        assert (st["currentModel"], st["currentTier"], st["activeSpeakers"]) == ("base", 0, 3)
        assert condition({"status": st}, "Degraded")["status"] == "False"

        metrics.set_tier(1, LADDER[1])
        st = wait_for(lambda: (s := status_of(cluster, ns, "meeting")).get("currentTier") == 1 and s, 30,
                      "tier 1 in status")
        degraded = condition({"status": st}, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "TierDowngraded")
        assert st["currentTierName"] == LADDER[1].name
        wait_for(lambda: reasons(cluster, ns, "meeting").get("TierChanged") == "Warning", 15,
                 "Warning event for the step down")

        metrics.set_tier(0, LADDER[0])
        st = wait_for(lambda: (s := status_of(cluster, ns, "meeting")).get("currentTier") == 0 and s, 30,
                      "back to tier 0")
        assert condition({"status": st}, "Degraded")["status"] == "False"
    rooms = {s.labels["phase"]: s.value for s in METRICS.rooms.collect()[0].samples}
    assert rooms["Pending"] >= 1


@pytest.mark.usefixtures("creds")
def test_spec_change_rolls_and_suspend_scales_to_zero(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    with scene.operator():
        apply(cluster, room(ns, "roll"))
        first = wait_for(lambda: deployment(cluster, ns, "roll"), 30, "deployment")
        before = pod_hash(first)

        cluster.run("patch", "troom", "roll", "-n", ns, "--type", "merge", "-p", '{"spec":{"model":{"beamSize":2}}}')
        rolled = wait_for(lambda: (d := deployment(cluster, ns, "roll")) and pod_hash(d) != before and d, 30,
                          "new spec hash")
        env = {e["name"]: e.get("value") for e in rolled["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LIVENEXUS_BEAM_SIZE"] == "2"
        assert rolled["metadata"]["uid"] == first["metadata"]["uid"]  # patched in place, not replaced
        live = get_room(cluster, ns, "roll")
        assert live is not None
        wait_for(lambda: status_of(cluster, ns, "roll").get("observedGeneration") == live["metadata"]["generation"],
                 30, "observedGeneration to follow")
        wait_for(lambda: "WorkerUpdated" in reasons(cluster, ns, "roll"), 15, "WorkerUpdated event")

        rolled_hash = pod_hash(rolled)
        cluster.run("patch", "troom", "roll", "-n", ns, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
        down = wait_for(lambda: (d := deployment(cluster, ns, "roll")) and d["spec"]["replicas"] == 0 and d, 30,
                        "replicas 0")
        assert pod_hash(down) == rolled_hash  # suspending does not roll
        st = wait_for(lambda: (s := status_of(cluster, ns, "roll")).get("phase") == "Suspended" and s, 30,
                      "Suspended phase")
        assert condition({"status": st}, "Ready")["reason"] == "Suspended"
        wait_for(lambda: not cluster.call("GET", f"/api/v1/namespaces/{ns}/pods", query=[
            ("labelSelector", "app.kubernetes.io/instance=roll")]).get("items"), 60, "pods to go away")

        cluster.run("patch", "troom", "roll", "-n", ns, "--type", "merge", "-p", '{"spec":{"suspend":false}}')
        wait_for(lambda: (d := deployment(cluster, ns, "roll")) and d["spec"]["replicas"] == 1, 30, "replicas 1")


def test_missing_secret_is_a_condition_until_it_appears(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    with scene.operator():
        apply(cluster, room(ns, "nosecret", secret="later"))
        st = wait_for(lambda: (s := status_of(cluster, ns, "nosecret")).get("phase") and s, 30, "status")
        ready = condition({"status": st}, "Ready")
        assert (st["phase"], ready["status"], ready["reason"]) == ("Error", "False", "SecretMissing")
        assert f"Secret {ns}/later not found" in ready["message"]
        assert deployment(cluster, ns, "nosecret") is None
        wait_for(lambda: reasons(cluster, ns, "nosecret").get("SecretMissing") == "Warning", 15, "Warning event")

        apply(cluster, secret_manifest(ns, "later", **{"api-key": "k"}))
        st = wait_for(lambda: "api-secret" in condition(get_room(cluster, ns, "nosecret"), "Ready").get(
            "message", "") and status_of(cluster, ns, "nosecret"), 30, "missing-key message")
        assert condition({"status": st}, "Ready")["reason"] == "SecretMissing"
        assert deployment(cluster, ns, "nosecret") is None

        apply(cluster, secret_manifest(ns, "later", **{"api-key": "k", "api-secret": "s"}))
        wait_for(lambda: deployment(cluster, ns, "nosecret"), 30, "deployment once the secret is complete")
        wait_for(lambda: condition(get_room(cluster, ns, "nosecret"), "Ready").get("reason") == "WorkerUnavailable",
                 30, "Ready reason to move on")


@pytest.mark.usefixtures("creds")
def test_restart_drift_and_garbage_collection(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    with scene.operator():
        apply(cluster, room(ns, "steady"))
        first = wait_for(lambda: deployment(cluster, ns, "steady"), 30, "deployment")
        wait_for(lambda: status_of(cluster, ns, "steady").get("phase"), 30, "status")

    resumed_before = _count(METRICS.reconcile_duration, "resume")
    with scene.operator():
        wait_for(lambda: _count(METRICS.reconcile_duration, "resume") > resumed_before, 30, "resume reconcile")
        deps = cluster.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments").get("items")
        svcs = cluster.call("GET", f"/api/v1/namespaces/{ns}/services").get("items")
        assert [d["metadata"]["name"] for d in deps] == [child_name("steady")]
        assert [s["metadata"]["name"] for s in svcs] == [child_name("steady")]
        again = deployment(cluster, ns, "steady")
        assert again is not None
        assert again["metadata"]["uid"] == first["metadata"]["uid"]
        assert again["metadata"]["generation"] == first["metadata"]["generation"], "restart must not roll"

        # Drift: someone deletes the worker; the periodic reconcile puts it back.
        cluster.call("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/{child_name('steady')}")
        wait_for(lambda: (d := deployment(cluster, ns, "steady")) and d["metadata"]["uid"] != first["metadata"][
            "uid"], 30, "recreated deployment")

    # No operator running: deleting the room must still remove its children (garbage collector).
    cluster.run("delete", "troom", "steady", "-n", ns, "--wait=true", "--timeout=60s")
    wait_for(lambda: deployment(cluster, ns, "steady") is None
             and cluster.get("v1", "Service", ns, child_name("steady")) is None, 90, "children to be collected")


def _count(histogram: Any, trigger: str) -> float:
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("trigger") == trigger:
                return float(sample.value)
    return 0.0


@pytest.mark.usefixtures("creds")
def test_worker_template_change_reaches_running_rooms(scene: Scene) -> None:
    """`helm upgrade` of worker values rewrites the ConfigMap; the next refresh rolls every room's worker."""
    cluster, release, ns = scene.cluster, scene.release, scene.ns
    cm_path = f"/api/v1/namespaces/{release.namespace}/configmaps/{release.template_configmap}"
    original = cluster.call("GET", cm_path)["data"]["worker.yaml"]
    values = yaml.safe_load(original)
    values["image"] = "reg.test/livenexus-worker:9.9.9"
    try:
        with scene.operator():
            apply(cluster, room(ns, "fleet"))
            before = wait_for(lambda: deployment(cluster, ns, "fleet"), 30, "deployment")
            wait_for(lambda: status_of(cluster, ns, "fleet").get("phase"), 30, "status")
            cluster.call("PATCH", cm_path, body={"data": {"worker.yaml": yaml.safe_dump(values)}},
                         content_type="application/merge-patch+json")
            after = wait_for(lambda: (d := deployment(cluster, ns, "fleet"))
                             and d["spec"]["template"]["spec"]["containers"][0]["image"] == values["image"] and d,
                             30, "new image on the running room's worker")
            assert pod_hash(after) != pod_hash(before)
            wait_for(lambda: "WorkerUpdated" in reasons(cluster, ns, "fleet"), 15, "WorkerUpdated event")
    finally:
        cluster.call("PATCH", cm_path, body={"data": {"worker.yaml": original}},
                     content_type="application/merge-patch+json")
