"""The Helm chart rendered by the real helm binary: RBAC, security, the worker template, manifest drift."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from livenexus_operator.api_calls import CLUSTER, ROOMS, rules
from livenexus_operator.config import OperatorConfig
from livenexus_operator.render import render
from livenexus_operator.spec import WorkerTemplate
from tests.operator.helpers import CHART, CRD_FILE, ROOT, approved, helm_binary, helm_template, room_body

# Everything the operator's code calls (api_calls.py); the chart must grant exactly this and nothing more.
EXPECTED_RULES = {(group, res): verbs for (group, res, _), verbs in rules(ROOMS).items()}
# Cluster-scoped objects (the autoscaler reads the worker's node): ClusterRole only.
CLUSTER_ONLY_RULES = {(group, res): verbs for (group, res, _), verbs in rules(CLUSTER).items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def flatten_rules(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


def test_helm_lint() -> None:
    proc = subprocess.run([helm_binary(), "lint", str(CHART), "--strict"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cluster_wide_rbac_is_least_privilege() -> None:
    docs = helm_template()
    (role,) = by_kind(docs, "ClusterRole")
    assert flatten_rules(role["rules"]) == EXPECTED_RULES | CLUSTER_ONLY_RULES
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "livenexus"}]
    (self_role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "livenexus"]
    own = flatten_rules(self_role["rules"])
    assert own == {("", "configmaps"): {"get"}, ("coordination.k8s.io", "leases"): {"get", "update", "create"}}
    named = {r["resources"][0]: r.get("resourceNames") for r in self_role["rules"] if "create" not in r["verbs"]}
    assert named["configmaps"] == ["lnx-livenexus-worker-template"]
    assert named["leases"] == ["lnx-livenexus-operator"]


def test_watch_namespaces_use_namespaced_roles_only() -> None:
    docs = helm_template("--set", "operator.watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    assert set(roles) == {"team-a", "team-b", "livenexus"}
    for ns in ("team-a", "team-b"):
        assert flatten_rules(roles[ns]["rules"]) == EXPECTED_RULES
    (dep,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert OperatorConfig.from_env({k: v for k, v in env.items() if v is not None}).watch_namespaces == (
        "team-a", "team-b")


def test_operator_pod_is_locked_down_and_configured() -> None:
    docs = helm_template()
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["command"] == ["livenexus-operator"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    cfg = OperatorConfig.from_env({k: v for k, v in env.items() if v is not None})
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if "worker.yaml" in d.get("data", {})]
    assert cfg.template_configmap == cm["metadata"]["name"]
    assert cfg.leader_election is True and cfg.lease_name == "lnx-livenexus-operator"
    assert cfg.watch_namespaces == ()
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # Liveness only once it has started: a slow first start under load must not crash-loop it.
    assert c["startupProbe"]["httpGet"] == c["livenessProbe"]["httpGet"]
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    assert {"name": "metrics", "containerPort": cfg.metrics_port, "protocol": "TCP"} in c["ports"]


def test_worker_template_configmap_drives_rendering() -> None:
    docs = helm_template("--set", "worker.image.repository=reg.test/w", "--set", "worker.nodeSelector.pool=cpu",
                         "--set", "worker.extraEnv[0].name=LIVENEXUS_THREADS",
                         "--set-string", "worker.extraEnv[0].value=2")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if "worker.yaml" in d.get("data", {})]
    tmpl = WorkerTemplate.from_values(yaml.safe_load(cm["data"]["worker.yaml"]))
    assert tmpl.image == "reg.test/w:0.1.0"
    dep = render(room_body(), tmpl, approved(room_body())).deployment
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert {"name": "LIVENEXUS_THREADS", "value": "2"} in pod["containers"][0]["env"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}


@pytest.mark.parametrize("bad", [
    "worker.securityContext.readOnlyRootFilesystem=false",
    "operator.securityContext.allowPrivilegeEscalation=true",
    "operator.podSecurityContext.runAsNonRoot=false",
    "worker.metricsPort=70000",
    "operator.watchNamespaces={Not_A_Namespace}",
    "unknownTopLevelKey=1",
])
def test_values_schema_rejects_unsafe_or_wrong_values(bad: str) -> None:
    proc = subprocess.run([helm_binary(), "template", "x", str(CHART), "--set", bad], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "schema" in proc.stderr


def test_crd_ships_with_the_chart_only_from_crds_dir() -> None:
    docs = helm_template("--include-crds")
    crds = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    files = [yaml.safe_load(f.read_text()) for f in sorted(CRD_FILE.parent.glob("*.yaml"))]
    assert crds == {d["metadata"]["name"]: d for d in files}
    assert crds["transcriptionrooms.livenexus.io"] == yaml.safe_load(CRD_FILE.read_text())
    assert not by_kind(helm_template(), "CustomResourceDefinition")


def test_manifests_match_the_chart() -> None:
    env = {"LIVENEXUS_HELM": helm_binary(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["bash", str(ROOT / "hack" / "gen-manifests.sh"), "--check"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace" and "CustomResourceDefinition" in kinds and "Deployment" in kinds
