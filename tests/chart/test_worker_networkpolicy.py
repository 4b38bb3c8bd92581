"""The worker NetworkPolicy, rendered by the real helm binary and matched against what the operator renders.

Selectors are checked against the labels and port names of a worker pod the operator's ``render`` produces and
of the chart's operator Deployment, so renaming a label or a port on either side fails here.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from livenexus_operator.render import render
from livenexus_operator.spec import WorkerTemplate
from tests.operator.helpers import CHART, approved, helm_binary, helm_template, room_body


def policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def worker_pod(docs: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "worker.yaml" in d.get("data", {})]
    tmpl = WorkerTemplate.from_values(yaml.safe_load(cm["data"]["worker.yaml"]))
    body = room_body(namespace=namespace)
    return dict(render(body, tmpl, approved(body)).deployment["spec"]["template"])


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # this test only knows matchLabels
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_default_policy_admits_only_operator_scrapes_on_the_metrics_port() -> None:
    docs = helm_template(namespace="livenexus", release="lnx")
    (pol,) = policies(docs)
    assert pol["metadata"]["namespace"] == "livenexus"
    spec = pol["spec"]
    assert spec["policyTypes"] == ["Ingress"], "egress (LiveKit, media) must stay open"

    pod = worker_pod(docs, "livenexus")
    assert matches(spec["podSelector"], pod["metadata"]["labels"])
    (container,) = pod["spec"]["containers"]
    (rule,) = spec["ingress"]
    (port,) = rule["ports"]
    assert port["protocol"] == "TCP"
    assert any(p["name"] == port["port"] for p in container["ports"]), (port, container["ports"])
    probes = [container[k]["httpGet"]["port"] for k in ("livenessProbe", "readinessProbe") if k in container]
    assert probes and all(p in (port["port"], next(c["containerPort"] for c in container["ports"]
                                                    if c["name"] == port["port"])) for p in probes)

    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "livenexus"}}
    (operator,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    assert matches(peer["podSelector"], operator["spec"]["template"]["metadata"]["labels"])
    console = [d for d in docs if d["kind"] == "Deployment" and "console" in d["metadata"]["name"]]
    for other in console:
        assert not matches(peer["podSelector"], other["spec"]["template"]["metadata"]["labels"])


def test_one_policy_per_namespace_rooms_can_be_in() -> None:
    docs = helm_template("--set", "operator.watchNamespaces={team-a,team-b}")
    assert sorted(p["metadata"]["namespace"] for p in policies(docs)) == ["team-a", "team-b"]
    docs = helm_template("--set", "operator.watchNamespaces={team-a}", "--set", "worker.networkPolicy.namespaces={x,y}")
    assert sorted(p["metadata"]["namespace"] for p in policies(docs)) == ["x", "y"]
    # Whatever namespace a room is in, its pods carry the labels the policy selects.
    pod = worker_pod(docs, "x")
    assert all(matches(p["spec"]["podSelector"], pod["metadata"]["labels"]) for p in policies(docs))


def test_extra_scrapers_are_added_and_the_policy_can_be_disabled() -> None:
    docs = helm_template("--set", "worker.networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring")
    (pol,) = policies(docs)
    assert pol["spec"]["ingress"][0]["from"][1] == {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}
    assert policies(helm_template("--set", "worker.networkPolicy.enabled=false")) == []


@pytest.mark.parametrize("bad", [
    "worker.networkPolicy.enabled=maybe",
    "worker.networkPolicy.namespaces={Bad_Namespace}",
    "worker.networkPolicy.metricsFrom[0].anything=1",
    "worker.networkPolicy.metricsFrom[0].ipBlock.except[0]=10.0.0.0/8",
    "worker.networkPolicy.ports=1",
])
def test_schema_rejects_malformed_policy_values(bad: str) -> None:
    proc = subprocess.run([helm_binary(), "template", "x", str(CHART), "--kube-version", "1.31.0", "--set", bad],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "schema" in proc.stderr.lower(), proc.stderr


@pytest.mark.kube
def test_a_real_apiserver_accepts_the_policies(kube_cluster: object) -> None:
    """Server-side dry run: the object is valid NetworkPolicy as the API server sees it (named port included)."""
    import secrets

    from tests.operator.clusterlib import cluster_from_fixture

    cluster = cluster_from_fixture(kube_cluster)
    ns = f"np-{secrets.token_hex(3)}"
    cluster.run("create", "namespace", ns)
    try:
        docs = policies(helm_template(
            "--set", f"operator.watchNamespaces={{{ns}}}",
            "--set", "worker.networkPolicy.metricsFrom[0].ipBlock.cidr=10.0.0.0/8",
            "--set", "worker.networkPolicy.metricsFrom[1].namespaceSelector.matchLabels.team=monitoring"))
        assert len(docs) == 1
        proc = cluster.run("apply", "--server-side", "--dry-run=server", "-o", "yaml", "-f", "-",
                           input=yaml.safe_dump_all(docs))
        applied = yaml.safe_load(proc.stdout)
        assert applied["kind"] == "NetworkPolicy" and applied["metadata"]["namespace"] == ns
        assert applied["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    finally:
        cluster.run("delete", "namespace", ns, "--wait=false", check=False)
