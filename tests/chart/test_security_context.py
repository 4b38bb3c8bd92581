"""Chart values can tighten the operator's and the worker's security contexts, never loosen them.

The schema refuses loosening values at ``helm install``; the operator's template fixes the locked fields
even when the schema is skipped (``--skip-schema-validation``), and the worker template those values
reach through the ConfigMap is refused by the operator's render.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from livenexus_operator.render import render
from livenexus_operator.spec import SpecError, WorkerTemplate
from tests.operator.helpers import CHART, KUBE_VERSION, approved, helm_binary, helm_template, room_body

LOOSENING = [
    "operator.podSecurityContext.seccompProfile.type=Unconfined",
    "operator.securityContext.seccompProfile.type=Unconfined",
    "operator.securityContext.seccompProfile.type=Localhost",
    "operator.securityContext.capabilities.add={NET_ADMIN}",
    "operator.securityContext.privileged=true",
    "operator.podSecurityContext.runAsUser=0",
    "operator.podSecurityContext.runAsGroup=0",
    "operator.podSecurityContext.seLinuxOptions.type=spc_t",
    "operator.securityContext.procMount=Unmasked",
    "worker.podSecurityContext.seccompProfile.type=Unconfined",
    "worker.securityContext.seccompProfile.type=Unconfined",
    "worker.securityContext.allowPrivilegeEscalation=true",
    "worker.securityContext.runAsUser=0",
    "worker.podSecurityContext.fsGroup=0",
    "worker.podSecurityContext.windowsOptions.hostProcess=true",
    "worker.securityContext.capabilities.drop={NET_RAW}",
    "console.podSecurityContext.seccompProfile.type=Localhost",
    "console.securityContext.seccompProfile.type=Unconfined",
    "console.securityContext.capabilities.add={NET_RAW}",
    "console.podSecurityContext.sysctls[0].name=kernel.shm_rmid_forced",
]


def _template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("bad", LOOSENING)
def test_schema_refuses_loosening_values(bad: str) -> None:
    proc = _template("--set", bad)
    assert proc.returncode != 0, f"accepted {bad}"
    assert "schema" in proc.stderr, proc.stderr


def test_schema_accepts_tightening_values() -> None:
    proc = _template("--set", "operator.podSecurityContext.runAsUser=4242",
                     "--set", "operator.podSecurityContext.appArmorProfile.type=RuntimeDefault",
                     "--set", "worker.podSecurityContext.supplementalGroups={5000}",
                     "--set", "worker.securityContext.runAsUser=4242")
    assert proc.returncode == 0, proc.stderr


def _pod(docs: list[dict[str, Any]], component: str = "operator") -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"
              and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == f"livenexus-{component}"]
    pod: dict[str, Any] = dep["spec"]["template"]["spec"]
    return pod


FIXED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                   "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
CONSOLE_ON = ("--set", "console.enabled=true", "--set", "console.livekit.url=wss://lk.example.test",
              "--set", "console.livekit.credentialsSecretRef.name=lk", "--set", "console.auth.mode=token",
              "--set", "console.auth.tokenSecretRef.name=lk")


def test_operator_pod_is_fixed_even_without_the_schema() -> None:
    docs = helm_template(
        "--skip-schema-validation",
        "--set", "operator.podSecurityContext.runAsNonRoot=false",
        "--set", "operator.podSecurityContext.seccompProfile.type=Unconfined",
        "--set", "operator.podSecurityContext.sysctls[0].name=net.ipv4.ip_forward",
        "--set-string", "operator.podSecurityContext.sysctls[0].value=1",
        "--set", "operator.podSecurityContext.runAsUser=4242",
        "--set", "operator.securityContext.privileged=true",
        "--set", "operator.securityContext.allowPrivilegeEscalation=true",
        "--set", "operator.securityContext.readOnlyRootFilesystem=false",
        "--set", "operator.securityContext.capabilities.add={SYS_ADMIN}",
        "--set", "operator.securityContext.seccompProfile.type=Unconfined",
    )
    pod = _pod(docs)
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 4242, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = pod["containers"]
    assert c["securityContext"] == FIXED_CONTAINER


def test_console_pod_is_fixed_even_without_the_schema() -> None:
    docs = helm_template(
        *CONSOLE_ON, "--skip-schema-validation",
        "--set", "console.podSecurityContext.seccompProfile.type=Localhost",
        "--set", "console.podSecurityContext.seccompProfile.localhostProfile=open.json",
        "--set", "console.securityContext.privileged=true",
        "--set", "console.securityContext.capabilities.add={NET_RAW}",
        "--set", "console.securityContext.runAsUser=4343",
    )
    pod = _pod(docs, "console")
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"] == {**FIXED_CONTAINER, "runAsUser": 4343}


def test_operator_root_uid_fails_the_render_even_without_the_schema() -> None:
    proc = _template("--skip-schema-validation", "--set", "operator.podSecurityContext.runAsUser=0")
    assert proc.returncode != 0 and "non-root id" in proc.stderr


def test_worker_values_that_skip_the_schema_are_refused_by_the_operator() -> None:
    docs = helm_template("--skip-schema-validation", "--set", "worker.securityContext.seccompProfile.type=Unconfined")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "worker.yaml" in d.get("data", {})]
    template = WorkerTemplate.from_values(yaml.safe_load(cm["data"]["worker.yaml"]))
    with pytest.raises(SpecError, match=r"worker\.securityContext\.seccompProfile"):
        render(room_body(), template, approved(room_body()))
