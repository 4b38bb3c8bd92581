"""Operator reliability against the real control plane: no status write without a change, deleted rooms leave
the operator's metrics, an overtaken status write is refused, and faults of the API server (429/503 through a
fault-injecting proxy, a restart of kube-apiserver) are backed off without duplicate workers.

The restart test runs last in this module (it stops the session's kube-apiserver for a few seconds).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from livenexus_operator import kube, refresher
from livenexus_operator.metrics import METRICS
from livenexus_operator.render import child_name
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.metrics import WorkerMetrics
from tests.operator.clusterlib import Cluster, Scene, apply, deployment, get_room, room, status_of, wait_for
from tests.servers.faultproxy import FaultProxy

pytestmark = [pytest.mark.kube, pytest.mark.slow]

TIER0, TIER1 = TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250)
HANDLED = "livenexus.io/last-handled-configuration"


def _value(metric: Any, **labels: str) -> float:
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            counted = sample.name.endswith(("_total", "_count")) or sample.name == family.name
            if counted and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total


@pytest.fixture
def restore_client(as_operator: Cluster) -> Iterator[None]:
    saved = kube._config
    yield
    assert saved is not None
    kube.configure(saved)


def _settled(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    live = get_room(cluster, ns, name)
    if not live or HANDLED not in (live["metadata"].get("annotations") or {}):
        return None
    st = live.get("status") or {}
    return live if st.get("observedGeneration") == live["metadata"]["generation"] and st.get("phase") else None


@pytest.mark.usefixtures("creds")
def test_an_unchanged_status_is_not_written_again(scene: Scene, worker: tuple[WorkerMetrics, str]) -> None:
    cluster, ns = scene.cluster, scene.ns
    metrics, url = worker
    scene.board.urls[(ns, child_name("quiet"))] = url
    metrics.set_tier(0, TIER0)
    metrics.observe_final(0.2)
    with scene.operator():
        apply(cluster, room(ns, "quiet"))
        wait_for(lambda: status_of(cluster, ns, "quiet").get("currentModel"), 30, "status from the worker's metrics")
        live = wait_for(lambda: _settled(cluster, ns, "quiet"), 30, "handled room")
        rv = live["metadata"]["resourceVersion"]
        refreshed = _value(METRICS.refresh_rooms)
        # Three more refreshes of this room (1 s interval): each scrapes the same numbers.
        wait_for(lambda: _value(METRICS.refresh_rooms) >= refreshed + 3, 30, "three refresh passes")
        again = get_room(cluster, ns, "quiet")
        assert again is not None
        assert again["metadata"]["resourceVersion"] == rv, "a refresh with nothing new must not write the room"
        assert _value(METRICS.status_writes, result="unchanged") >= 3

        # A real change is still written at the next refresh.
        metrics.set_tier(1, TIER1)
        wait_for(lambda: status_of(cluster, ns, "quiet").get("currentTier") == 1, 30, "tier 1 in status")


@pytest.mark.usefixtures("creds")
def test_a_deleted_room_leaves_the_operator_metrics(scene: Scene) -> None:
    cluster, ns = scene.cluster, scene.ns
    with scene.operator():
        apply(cluster, room(ns, "brief"))
        live = wait_for(lambda: _settled(cluster, ns, "brief"), 30, "handled room")
        uid = live["metadata"]["uid"]
        wait_for(lambda: METRICS.phase_of(uid), 30, "room counted in livenexus_operator_rooms")
        cluster.run("delete", "troom", "brief", "-n", ns, "--wait=true", "--timeout=60s")
        wait_for(lambda: METRICS.phase_of(uid) is None, 30, "deleted room to leave livenexus_operator_rooms")


@pytest.mark.usefixtures("creds")
def test_a_status_computed_from_an_overtaken_read_is_refused(scene: Scene) -> None:
    """What a deposed leader (or any slow reconcile) holds: a body someone else has written since."""
    cluster, ns = scene.cluster, scene.ns
    apply(cluster, room(ns, "contested"))
    stale = wait_for(lambda: get_room(cluster, ns, "contested"), 10, "room")
    path = refresher.room_path(ns, "contested")
    # The newer leader writes first (as admin here: any writer moves the resourceVersion).
    cluster.call("PATCH", path + "/status", body={"status": {"phase": "Running", "observedGeneration": 1}},
                 content_type="application/merge-patch+json")
    with pytest.raises(kube.Conflict):
        asyncio.run(refresher.write_status(stale, {"phase": "Error", "observedGeneration": 1}))
    assert status_of(cluster, ns, "contested")["phase"] == "Running"
    # From a fresh read the same write goes through.
    fresh = get_room(cluster, ns, "contested")
    assert fresh is not None
    assert asyncio.run(refresher.write_status(fresh, {"phase": "Error"})) == "written"
    assert status_of(cluster, ns, "contested")["phase"] == "Error"


def _deployments(cluster: Cluster, ns: str) -> dict[str, str]:
    items = cluster.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments").get("items") or []
    names = [d["metadata"]["name"] for d in items]
    assert len(names) == len(set(names))
    return {d["metadata"]["name"]: d["metadata"]["uid"] for d in items}


def _beam(cluster: Cluster, ns: str, name: str) -> str | None:
    dep = deployment(cluster, ns, name)
    if not dep:
        return None
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value") for e in env}.get("LIVENEXUS_BEAM_SIZE")


@pytest.mark.usefixtures("creds", "restore_client")
def test_throttling_and_server_errors_are_backed_off_without_duplicates(scene: Scene, kube_cluster: Any) -> None:
    cluster, release, ns = scene.cluster, scene.release, scene.ns
    proxy = FaultProxy(upstream=cluster.config.host, ca_path=kube_cluster.pki.ca_path,
                       cert=kube_cluster.pki.issue("faultproxy", "livenexus-fault-proxy", server=True)).start()
    try:
        kube.configure(kube.token_config(proxy.url, cluster.sa_token(release.namespace, release.service_account),
                                         str(kube_cluster.pki.ca_path)))
        with scene.operator():
            for name in ("r1", "r2", "r3"):
                apply(cluster, room(ns, name))
            for name in ("r1", "r2", "r3"):
                wait_for(lambda n=name: _settled(cluster, ns, n), 60, f"{name} handled")  # type: ignore[misc]
            before = _deployments(cluster, ns)
            assert set(before) == {child_name(n) for n in ("r1", "r2", "r3")}

            # 429 with Retry-After: 2 on every call about one room's children or status (what a reconcile of that
            # room sends and no other room's does); meanwhile a room is created and one edited.
            throttled = _value(METRICS.requeues, reason="throttled")
            start = proxy.seen()[-1].at
            proxy.fail(429, retry_after=2, match=lambda method, path: "/deployments/" in path
                       or path.endswith("/status"), cut_streams=False)
            apply(cluster, room(ns, "late"))
            cluster.run("patch", "troom", "r1", "-n", ns, "--type", "merge", "-p", '{"spec":{"model":{"beamSize":2}}}')
            wait_for(lambda: _value(METRICS.requeues, reason="throttled") >= throttled + 6, 60,
                     "the operator to be throttled a few times")
            refused = [s for s in proxy.seen(start) if s.status == 429]
            # Then 503 on everything, kopf's watches included (they are cut and re-opened).
            proxy.fail(503)
            server_errors = _value(METRICS.requeues, reason="server_error")
            wait_for(lambda: _value(METRICS.requeues, reason="server_error") > server_errors, 60,
                     "the operator to meet a 503")
            proxy.heal()

            wait_for(lambda: deployment(cluster, ns, "late"), 90, "the room created during the faults")
            wait_for(lambda: _beam(cluster, ns, "r1") == "2", 90, "the edit made during the faults")
            for name in ("r1", "r2", "r3", "late"):
                wait_for(lambda n=name: _settled(cluster, ns, n), 90, f"{name} settled")  # type: ignore[misc]
            after = _deployments(cluster, ns)
    finally:
        proxy.stop()

    # One Deployment per room, and the old ones are the same objects (patched, never recreated).
    assert set(after) == {child_name(n) for n in ("r1", "r2", "r3", "late")}
    assert all(after[k] == v for k, v in before.items())
    # No room is retried sooner than the server asked (Retry-After: 2). r1 is left out: its edit is a new
    # event that may legitimately follow a refused refresh of r1 at once.
    watched = {f"/{child_name(n)}" for n in ("r2", "r3", "late")}
    ours = [s for s in refused if any(s.path.endswith(w) for w in watched)]
    assert len({s.path for s in ours}) >= 2, "the fault did not reach the rooms' reconciles"
    by_request: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in ours:
        by_request[(s.method, s.path)].append(s.at)
    gaps = [b - a for times in by_request.values() for a, b in itertools.pairwise(times)]
    assert gaps and all(g >= 1.9 for g in gaps), sorted(gaps)[:5]


@pytest.mark.usefixtures("creds")
def test_an_apiserver_restart_is_survived_without_duplicates(scene: Scene, kube_cluster: Any) -> None:
    cluster, ns = scene.cluster, scene.ns
    with scene.operator():
        for name in ("a1", "a2"):
            apply(cluster, room(ns, name))
        for name in ("a1", "a2"):
            wait_for(lambda n=name: _settled(cluster, ns, n), 60, f"{name} handled")  # type: ignore[misc]
        before = _deployments(cluster, ns)

        unreachable = _value(METRICS.requeues, reason="unreachable")
        kube_cluster.stop_apiserver()
        try:
            wait_for(lambda: _value(METRICS.requeues, reason="unreachable") > unreachable, 60,
                     "a refresh to find the API server gone")
        finally:
            kube_cluster.start_apiserver()

        apply(cluster, room(ns, "a3"))
        wait_for(lambda: deployment(cluster, ns, "a3"), 120, "a room created after the restart")
        for name in ("a1", "a2", "a3"):
            wait_for(lambda n=name: _settled(cluster, ns, n), 60, f"{name} settled")  # type: ignore[misc]
        after = _deployments(cluster, ns)
    assert set(after) == {child_name(n) for n in ("a1", "a2", "a3")}
    assert all(after[k] == v for k, v in before.items())
