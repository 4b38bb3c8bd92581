"""The TranscriptionPolicy CRD (generated from the TranscriptionRoom one) and the chart's policy values."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from livenexus_operator.transcription_policy import POLICY_PLURAL
from tests.operator.helpers import CHART, CRD_FILE, ROOT, helm_binary, helm_template

POLICY_CRD = CRD_FILE.parent / "transcriptionpolicies.yaml"
POLICY_VALUES = ["--set", "operator.policies.livekit.url=http://livekit.livekit.svc:7880",
                 "--set", "operator.policies.livekit.credentialsSecret.name=livekit-webhook"]


def schema(path: Any) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    (version,) = doc["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_generated_file_is_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-policy-crd.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_template_is_the_room_spec_without_room_and_suspend() -> None:
    room_spec = schema(CRD_FILE)["properties"]["spec"]
    template = schema(POLICY_CRD)["properties"]["spec"]["properties"]["template"]
    assert set(template["properties"]) == set(room_spec["properties"]) - {"room", "suspend"}
    for name, sub in template["properties"].items():
        assert sub == room_spec["properties"][name], name
    assert template["required"] == room_spec["required"]


def test_identity_status_and_printer_columns() -> None:
    doc = yaml.safe_load(POLICY_CRD.read_text())
    assert doc["metadata"]["name"] == f"{POLICY_PLURAL}.livenexus.io" and doc["spec"]["scope"] == "Namespaced"
    (version,) = doc["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Active", "Waiting", "Max", "Ready", "Age"]


@pytest.mark.parametrize("spec,ok", [
    ({"template": {"livekit": {"url": "ws://x:1", "credentialsSecretRef": {"name": "lk"}}}}, True),
    ({}, False),
    ({"template": {"livekit": {"url": "ftp://x", "credentialsSecretRef": {"name": "lk"}}}}, False),
    ({"template": {"livekit": {"url": "ws://x:1", "credentialsSecretRef": {"name": "lk"}}},
      "match": {"roomPattern": "x" * 257}}, False),
    ({"template": {"livekit": {"url": "ws://x:1", "credentialsSecretRef": {"name": "lk"}}}, "maxRooms": -1}, False),
])
def test_schema_validates_specs(spec: dict[str, Any], ok: bool) -> None:
    body = {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionPolicy", "metadata": {}, "spec": spec}
    s = schema(POLICY_CRD)
    if ok:
        jsonschema.validate(body, s)
    else:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, s)


def test_chart_without_policies_renders_no_webhook() -> None:
    docs = helm_template()
    assert not [d for d in docs if d["kind"] in ("Ingress",) and "webhook" in d["metadata"]["name"]]
    assert not [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-webhook")]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "LIVENEXUS_LIVEKIT_API_SECRET" not in env


def test_chart_with_policies_passes_the_secret_by_reference_and_exposes_only_the_webhook() -> None:
    docs = helm_template(*POLICY_VALUES, "--set", "operator.policies.webhook.ingress.enabled=true",
                         "--set", "operator.policies.webhook.ingress.host=hooks.example.com")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["LIVENEXUS_LIVEKIT_URL"]["value"] == "http://livekit.livekit.svc:7880"
    for name, key in (("LIVENEXUS_LIVEKIT_API_KEY", "api-key"), ("LIVENEXUS_LIVEKIT_API_SECRET", "api-secret")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "livekit-webhook", "key": key}
        assert "value" not in env[name]
    assert {"name": "webhook", "containerPort": 9402, "protocol": "TCP"} in container["ports"]
    (svc,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-webhook")]
    assert svc["spec"]["ports"] == [{"name": "webhook", "port": 80, "targetPort": "webhook", "protocol": "TCP"}]
    (ing,) = [d for d in docs if d["kind"] == "Ingress" and d["metadata"]["name"].endswith("-webhook")]
    (path,) = ing["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/livekit/webhook" and path["pathType"] == "Exact"


@pytest.mark.parametrize("bad", [
    "operator.policies.livekit.url=file:///etc/passwd",
    "operator.policies.webhook.port=80",
    "operator.policies.resyncIntervalSeconds=1",
    "operator.policies.livekit.credentialsSecret.name=Bad_Name",
    "operator.policies.unknown=1",
])
def test_values_schema_rejects_bad_policy_values(bad: str) -> None:
    proc = subprocess.run([helm_binary(), "template", "x", str(CHART), "--set", bad], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "schema" in proc.stderr
