"""Session-scoped real servers, started once and shared by every test that asks for them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .kube import KubeControlPlane
from .livekit import LiveKitServer
from .node import KubeNode, NodeUnavailable, unavailable


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServer]:
    server = LiveKitServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeControlPlane]:
    cp = KubeControlPlane().start()
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def kube_node() -> Iterator[KubeNode]:
    """A real one-node cluster (containerd, kubelet, kube-proxy, scheduler); skips where the host cannot."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    node = KubeNode()
    try:
        node.start()
    except NodeUnavailable as e:
        node.stop()
        pytest.skip(str(e))
    except BaseException:
        node.stop()
        raise
    yield node
    node.stop()
