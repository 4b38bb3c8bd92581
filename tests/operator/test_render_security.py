"""The worker pod's security contexts: chart values may tighten them, never loosen them (podsecurity.py)."""

from __future__ import annotations

from typing import Any

import pytest

from livenexus_operator.podsecurity import security_contexts
from livenexus_operator.spec import SpecError

LOOSENING_POD: list[dict[str, Any]] = [
    {"seccompProfile": {"type": "Unconfined"}},
    {"seccompProfile": {"type": "Localhost", "localhostProfile": "anything.json"}},
    {"appArmorProfile": {"type": "Unconfined"}},
    {"runAsNonRoot": False},
    {"runAsUser": 0},
    {"runAsGroup": 0},
    {"fsGroup": 0},
    {"supplementalGroups": [0]},
    {"runAsUser": True},  # a bool is an int to Python, not a uid
    {"seLinuxOptions": {"type": "spc_t"}},
    {"sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}]},
    {"windowsOptions": {"hostProcess": True}},
]

LOOSENING_CONTAINER: list[dict[str, Any]] = [
    {"seccompProfile": {"type": "Unconfined"}},
    {"appArmorProfile": {"type": "Unconfined"}},
    {"allowPrivilegeEscalation": True},
    {"readOnlyRootFilesystem": False},
    {"privileged": True},
    {"runAsNonRoot": False},
    {"runAsUser": 0},
    {"capabilities": {"add": ["NET_ADMIN"]}},
    {"capabilities": {"drop": ["NET_RAW"]}},  # dropping less than ALL
    {"procMount": "Unmasked"},
    {"seLinuxOptions": {"type": "spc_t"}},
    {"windowsOptions": {"hostProcess": True}},
]


@pytest.mark.parametrize("values", LOOSENING_POD, ids=[next(iter(v)) + str(i) for i, v in enumerate(LOOSENING_POD)])
def test_pod_values_that_loosen_are_refused_naming_the_field(values: dict[str, Any]) -> None:
    (key,) = values
    with pytest.raises(SpecError, match=rf"worker\.podSecurityContext\.{key}"):
        security_contexts(values, {})


@pytest.mark.parametrize("values", LOOSENING_CONTAINER,
                         ids=[next(iter(v)) + str(i) for i, v in enumerate(LOOSENING_CONTAINER)])
def test_container_values_that_loosen_are_refused_naming_the_field(values: dict[str, Any]) -> None:
    (key,) = values
    with pytest.raises(SpecError, match=rf"worker\.securityContext\.{key}"):
        security_contexts({}, values)


def test_defaults_are_the_locked_down_pod() -> None:
    pod, container = security_contexts({}, {})
    assert pod == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                   "seccompProfile": {"type": "RuntimeDefault"}}
    assert container == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                         "privileged": False, "capabilities": {"drop": ["ALL"]},
                         "seccompProfile": {"type": "RuntimeDefault"}}


def test_tightening_values_are_kept() -> None:
    pod, container = security_contexts(
        {"runAsUser": 4242, "runAsGroup": 4242, "fsGroup": 4242, "supplementalGroups": [5000],
         "appArmorProfile": {"type": "RuntimeDefault"}, "seccompProfile": {"type": "RuntimeDefault"}},
        {"runAsUser": 4242, "procMount": "Default", "appArmorProfile": {"type": "RuntimeDefault"},
         "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    )
    assert (pod["runAsUser"], pod["supplementalGroups"], pod["appArmorProfile"]) == (
        4242, [5000], {"type": "RuntimeDefault"})
    assert (container["runAsUser"], container["procMount"]) == (4242, "Default")
    assert container["capabilities"] == {"drop": ["ALL"]} and container["seccompProfile"]["type"] == "RuntimeDefault"


def test_values_are_copied_not_shared() -> None:
    values = {"supplementalGroups": [5000]}
    pod, _ = security_contexts(values, {})
    pod["supplementalGroups"].append(0)
    assert values == {"supplementalGroups": [5000]}
