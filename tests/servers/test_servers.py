"""The real servers themselves: livekit-server answers its API; the control plane serves, persists and collects."""

from __future__ import annotations

import time

import pytest

from .kube import KubeControlPlane
from .livekit import LiveKitServer


@pytest.mark.livekit
async def test_livekit_server_api(livekit_server: LiveKitServer) -> None:
    from livekit import api

    async with api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), livekit_server.api_key,
                              livekit_server.api_secret) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="smoke"))
        names = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
        assert room.name == "smoke" and "smoke" in names
        await lk.room.delete_room(api.DeleteRoomRequest(room="smoke"))
    bad = api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), livekit_server.api_key, "x" * 40)
    with pytest.raises(Exception, match=r"401|unauthenticated|invalid"):
        await bad.room.list_rooms(api.ListRoomsRequest())
    await bad.aclose()


@pytest.mark.kube
def test_control_plane_version_namespaces_and_gc(kube_cluster: KubeControlPlane) -> None:
    from kubernetes import client, config

    assert kube_cluster.version == "v1.34.4"
    api_client = config.new_client_from_config(str(kube_cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="smoke")))
    owner = core.create_namespaced_config_map("smoke", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map("smoke", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="child", owner_references=[ref])))
    core.delete_namespaced_config_map("owner", "smoke")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [c.metadata.name for c in core.list_namespaced_config_map("smoke").items]
        if "child" not in names:
            break
        time.sleep(0.5)
    assert "child" not in names, "garbage collector did not remove the owned ConfigMap"
    core.delete_namespace("smoke")
