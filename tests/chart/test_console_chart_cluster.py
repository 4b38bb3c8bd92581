"""The console chart against a real kube-apiserver: its ServiceAccount's reach, pod security admission and a
server-side dry run (the offline rendering checks are in test_console_chart.py)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from livenexus_console.rooms import KubeRooms, RoomsUnavailable, kube_lister
from livenexus_operator import kube
from tests.chart.test_console_chart import ON, SECRET, SECRET_DATA
from tests.operator.helpers import CHART, KUBE_VERSION


@pytest.fixture(scope="module")
def installed(kube_cluster: object) -> Iterator[tuple[Any, str, str]]:
    """The chart with the console on, installed into a namespace that enforces the "restricted" PSS."""
    from tests.operator.clusterlib import cluster_from_fixture, secret_manifest

    cluster = cluster_from_fixture(kube_cluster)
    name, ns = f"c{secrets.token_hex(3)}", f"console-{secrets.token_hex(3)}"
    cluster.call("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    cluster.call("POST", f"/api/v1/namespaces/{ns}/secrets", body=secret_manifest(ns, SECRET, **SECRET_DATA))
    helm = [cluster.helm, "--kubeconfig", str(cluster.kubeconfig)]
    proc = subprocess.run([*helm, "install", name, str(CHART), "--namespace", ns, "--set", "operator.replicas=0",
                           *ON], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "port-forward svc/" in proc.stdout  # NOTES tell how to reach the console
    assert f"access key in Secret {SECRET}" in proc.stdout  # and who may use it
    yield cluster, name, ns
    subprocess.run([*helm, "uninstall", name, "--namespace", ns, "--wait=false"], capture_output=True, timeout=300)
    cluster.run("delete", "namespace", ns, "--wait=false", check=False)


def _room(api: ApiClient, ns: str, name: str) -> None:
    body = {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionRoom",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecretRef": {"name": SECRET}}}}
    for attempt in range(40):  # a freshly installed CRD takes a moment before its endpoint serves
        try:
            kube.call("POST", f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms", body=body, api=api)
            return
        except kube.NotFound:
            time.sleep(0.25 * (attempt + 1) ** 0.5)
    raise AssertionError("the TranscriptionRoom endpoint never appeared")


@pytest.mark.kube
async def test_service_account_lists_rooms_of_its_namespace_and_nothing_else(
        installed: tuple[Any, str, str]) -> None:
    cluster, name, ns = installed
    _room(cluster.api, ns, "standup")
    _room(cluster.api, "default", "elsewhere")
    as_console = ApiClient(cluster.sa_config(ns, f"{name}-livenexus-console"))
    assert await KubeRooms(kube_lister(ns, api=as_console), ttl_s=0).rooms() == ("standup",)
    with pytest.raises(RoomsUnavailable, match="403"):
        await KubeRooms(kube_lister("default", api=as_console)).rooms()
    with pytest.raises(RoomsUnavailable, match="403"):
        await KubeRooms(kube_lister("", api=as_console)).rooms()
    for method, path in [
        ("GET", f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms/standup"),
        ("GET", f"/api/v1/namespaces/{ns}/secrets/{SECRET}"),
        ("GET", f"/api/v1/namespaces/{ns}/pods"),
    ]:
        with pytest.raises(Exception, match="403"):
            kube.call(method, path, api=as_console)


@pytest.mark.kube
def test_console_pods_pass_the_restricted_pod_security_standard(installed: tuple[Any, str, str]) -> None:
    """The controller-manager creates the pod only if admission (PSS "restricted") lets it in."""
    cluster, name, ns = installed
    selector = "app.kubernetes.io/name=livenexus-console"
    deadline = time.monotonic() + 60
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pods:
        pods = cluster.call("GET", f"/api/v1/namespaces/{ns}/pods", query=[("labelSelector", selector)])["items"]
        time.sleep(0.5)
    if not pods:
        events = cluster.call("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        raise AssertionError("no console pod was admitted: " + "; ".join(e.get("message", "") for e in events))
    spec = pods[0]["spec"]
    assert spec["serviceAccountName"] == f"{name}-livenexus-console"
    assert {v["name"] for v in spec["volumes"]} >= {"tmp"}


@pytest.mark.kube
def test_every_rendered_object_passes_server_side_dry_run(installed: tuple[Any, str, str]) -> None:
    cluster, _, ns = installed
    out = subprocess.run([cluster.helm, "template", "dry", str(CHART), "--namespace", ns, "--kube-version",
                          KUBE_VERSION, *ON, "--set", "console.ingress.enabled=true",
                          "--set", "console.ingress.host=console.example.test", "--show-only",
                          "templates/console-ingress.yaml", "--show-only", "templates/console-deployment.yaml",
                          "--show-only", "templates/console-service.yaml"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    proc = cluster.run("apply", "--dry-run=server", "-f", "-", input=out)
    assert proc.stdout.count("(server dry run)") == len(docs) == 3
