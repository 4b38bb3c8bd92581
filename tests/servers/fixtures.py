"""Session-scoped real servers, started once and shared by every test that asks for them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .kube import KubeControlPlane
from .livekit import LiveKitServer


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
