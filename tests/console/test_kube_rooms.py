"""The console's in-cluster room list against the real kube-apiserver: TranscriptionRooms in, room names out."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, Configuration

from livenexus_console.rooms import KubeRooms, RoomsUnavailable, kube_lister
from livenexus_operator import kube
from tests.operator.helpers import CRD_FILE

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def admin(kube_cluster: Any) -> ApiClient:
    cfg = Configuration()
    kubernetes.config.load_kube_config(config_file=str(kube_cluster.kubeconfig), client_configuration=cfg)
    api = ApiClient(cfg)
    body = yaml.safe_load(CRD_FILE.read_text())
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}"
    try:
        kube.call("GET", path, api=api)
    except kube.NotFound:
        kube.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=body, api=api)
    return api


@pytest.fixture
def namespaces(admin: ApiClient) -> Iterator[list[str]]:
    names = [f"console-{secrets.token_hex(3)}" for _ in range(2)]
    for n in names:
        kube.call(
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}},
            api=admin,
        )
    yield names
    for n in names:
        kube.call("DELETE", f"/api/v1/namespaces/{n}", api=admin)


def create_room(api: ApiClient, namespace: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "livenexus.io/v1alpha1",
        "kind": "TranscriptionRoom",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecretRef": {"name": "lk"}}, **spec},
    }
    for attempt in range(40):  # a fresh CRD takes a moment before its REST endpoint serves
        try:
            kube.call(
                "POST", f"/apis/livenexus.io/v1alpha1/namespaces/{namespace}/transcriptionrooms", body=body, api=api
            )
            return
        except kube.NotFound:
            time.sleep(0.25 * (attempt + 1) ** 0.5)
    raise AssertionError("the TranscriptionRoom endpoint never appeared")


async def test_rooms_come_from_transcriptionrooms(admin: ApiClient, namespaces: list[str]) -> None:
    one, two = namespaces
    create_room(admin, one, "standup", room="daily-standup")
    create_room(admin, one, "retro")
    create_room(admin, one, "paused", suspend=True)
    create_room(admin, two, "elsewhere")
    scoped = await KubeRooms(kube_lister(one, api=admin), ttl_s=0).rooms()
    assert scoped == ("daily-standup", "retro")
    everywhere = await KubeRooms(kube_lister("", api=admin), ttl_s=0).rooms()
    assert {"daily-standup", "retro", "elsewhere"} <= set(everywhere) and "paused" not in everywhere


async def test_unauthorised_listing_is_unavailable(admin: ApiClient, namespaces: list[str]) -> None:
    cfg = kube.token_config(admin.configuration.host, "not-a-valid-token", admin.configuration.ssl_ca_cert)
    with pytest.raises(RoomsUnavailable, match="401"):
        await KubeRooms(kube_lister(namespaces[0], api=ApiClient(cfg))).rooms()


async def test_without_a_client_the_kubeconfig_is_used(
        kube_cluster: Any, admin: ApiClient, namespaces: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a pod (no in-cluster service account) the console falls back to the kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube_cluster.kubeconfig))
    create_room(admin, namespaces[0], "planning")
    assert await KubeRooms(kube_lister(namespaces[0]), ttl_s=0).rooms() == ("planning",)
