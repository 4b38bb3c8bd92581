"""Small pure pieces of the operator: its metrics, kopf credentials, Lease parameters, settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from livenexus_operator import kube
from livenexus_operator.config import OperatorConfig
from livenexus_operator.leader import LeaseElector
from livenexus_operator.metrics import OperatorMetrics


def test_rooms_by_phase_counts_each_room_once() -> None:
    m = OperatorMetrics()
    m.set_phase("a", "Pending")
    m.set_phase("b", "Pending")
    m.set_phase("a", "Running")  # a moves, it is not counted twice
    m.set_phase("c", "Error")
    m.set_phase("b", None)  # deleted
    text = generate_latest(m.registry).decode()
    assert 'livenexus_operator_rooms{phase="Running"} 1.0' in text
    assert 'livenexus_operator_rooms{phase="Pending"} 0.0' in text
    assert 'livenexus_operator_rooms{phase="Error"} 1.0' in text
    assert 'livenexus_operator_rooms{phase="Suspended"} 0.0' in text


@pytest.fixture
def restore_kube() -> Iterator[None]:
    """The client configuration is process-wide; cluster tests in the same session rely on theirs."""
    saved = kube._config
    yield
    if saved is not None:
        kube.configure(saved)


@pytest.mark.usefixtures("restore_kube")
def test_kopf_gets_the_same_token_as_the_client() -> None:
    kube.configure(kube.token_config("https://127.0.0.1:6443", "abc.def", "/ca.crt"))
    info = kube.connection_info()
    assert (info.server, info.scheme, info.token, info.ca_path) == ("https://127.0.0.1:6443", "Bearer", "abc.def",
                                                                    "/ca.crt")
    assert info.insecure is False
    # In-cluster configs store "bearer <token>" (lower case) and may rotate it through a refresh hook.
    cfg = kube.token_config("https://127.0.0.1:6443", "old", None)
    cfg.api_key = {"authorization": "bearer old"}
    cfg.refresh_api_key_hook = lambda c: c.api_key.update(authorization="bearer rotated")
    kube.configure(cfg)
    info = kube.connection_info()
    assert (info.scheme, info.token, info.insecure) == ("bearer", "rotated", True)


def test_lease_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseElector("ns", "lease", "me", lease_duration_s=10, renew_deadline_s=10)


def test_config_from_env() -> None:
    cfg = OperatorConfig.from_env({
        "LIVENEXUS_OPERATOR_NAMESPACE": "ops", "LIVENEXUS_WATCH_NAMESPACES": " a, b ,",
        "LIVENEXUS_LEADER_ELECTION": "false", "POD_NAME": "op-1", "LIVENEXUS_STATUS_INTERVAL_S": "2.5"})
    assert (cfg.namespace, cfg.watch_namespaces, cfg.leader_election, cfg.identity, cfg.status_interval_s) == (
        "ops", ("a", "b"), False, "op-1", 2.5)
    assert OperatorConfig.from_env({}).leader_election is True
