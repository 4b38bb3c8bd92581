"""Fixtures of the operator tests that need the real control plane (``kube_cluster`` from tests/servers)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from livenexus_operator import kube
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer
from tests.operator.clusterlib import Cluster, MetricsBoard, Release, Scene, cluster_from_fixture
from tests.operator.helpers import CHART


@pytest.fixture(scope="session")
def cluster(kube_cluster: object) -> Cluster:
    return cluster_from_fixture(kube_cluster)


@pytest.fixture(scope="session")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart installed with default values (one operator replica: it never starts, no kubelet), except that
    the room policy lets rooms use ws:// to 127.0.0.1."""
    name = f"lnx{secrets.token_hex(3)}"
    namespace = f"livenexus-{secrets.token_hex(3)}"
    helm = [cluster.helm, "--kubeconfig", str(cluster.kubeconfig)]
    proc = subprocess.run([*helm, "install", name, str(CHART), "--namespace", namespace, "--create-namespace",
                           "--set", "operator.replicas=1",
                           # The rooms of these tests reach livekit-server (or nothing) on 127.0.0.1 over ws://.
                           "--set", "operator.roomPolicy.livekit.insecureHosts={127.0.0.1}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = f"{name}-livenexus"
    yield Release(name, namespace, f"{full}-operator", f"{full}-worker-template", f"{full}-operator")
    subprocess.run([*helm, "uninstall", name, "--namespace", namespace, "--wait=false"], capture_output=True,
                   timeout=300)
    cluster.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def as_operator(cluster: Cluster, release: Release) -> Cluster:
    """Point the operator's client at the chart ServiceAccount's token (and only that)."""
    kube.configure(cluster.sa_config(release.namespace, release.service_account))
    return cluster


@pytest.fixture
def board() -> MetricsBoard:
    return MetricsBoard()


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace where worker pods must pass the "restricted" Pod Security Standard."""
    name = f"rooms-{secrets.token_hex(3)}"
    cluster.call("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    yield name
    cluster.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def scene(as_operator: Cluster, release: Release, ns: str, board: MetricsBoard) -> Scene:
    """One operator test's setup on the real control plane (see :class:`Scene`)."""
    return Scene(as_operator, release, ns, board)


@pytest.fixture
def creds(scene: Scene) -> dict[str, Any]:
    """The room credentials Secret ``lk`` in the test's namespace (what ``room()`` names by default)."""
    return scene.credentials()


@pytest.fixture
def worker() -> Iterator[tuple[WorkerMetrics, str]]:
    """A real worker metrics registry served on 127.0.0.1 (what the worker pod would serve), and its URL."""
    metrics = WorkerMetrics()
    with MetricsServer(metrics.registry, host="127.0.0.1", port=0) as server:
        yield metrics, f"{server.url}/metrics"
