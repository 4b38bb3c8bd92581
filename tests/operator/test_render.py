"""Pure rendering of a TranscriptionRoom into the worker Deployment and Service."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from livenexus_common.contract import RENDERED_ENV, Env, TierSpec, ladder_to_json, model_ladder
from livenexus_operator.render import (
    RESERVED_ENV,
    SPEC_HASH_ANNOTATION,
    Children,
    child_name,
    label_value,
    render,
    worker_env,
)
from livenexus_operator.spec import RoomSpec, SpecError, WorkerTemplate
from tests.operator.helpers import approved, room_body

TEMPLATE = WorkerTemplate.from_values({"image": {"repository": "reg.test/livenexus-worker", "tag": "1.2.3"}})


def rendered(body: dict[str, Any], template: WorkerTemplate = TEMPLATE, version: str = "") -> Children:
    """render() with the Approval reconcile gives a room whose Secret and URL passed the policy."""
    return render(body, template, approved(body, version))


def container(children_deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = children_deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_env_names_are_the_contracts() -> None:
    """Every variable the operator renders is a contract name (HOME aside), and it renders all of them."""
    env = worker_env(RoomSpec.from_body(room_body()), TEMPLATE)
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert set(names) == RENDERED_ENV | {"HOME"} == RESERVED_ENV


def test_default_ladder_is_the_models_variants() -> None:
    """Without spec.tiers.ladder, LIVENEXUS_TIERS holds the cheaper variants of spec.model (no ``tiny``)."""
    env = {e["name"]: e.get("value") for e in worker_env(RoomSpec.from_body(room_body(name="r1")), TEMPLATE)}
    assert env[Env.TIERS] == ladder_to_json(model_ladder("base", "int8", 5))
    assert {t["model"] for t in json.loads(env[Env.TIERS])} == {"base"}


def test_credentials_come_only_from_secret_key_refs() -> None:
    body = room_body()
    dep = rendered(body, TEMPLATE).deployment
    env = {e["name"]: e for e in container(dep)["env"]}
    for name, key in (("LIVEKIT_API_KEY", "api-key"), ("LIVEKIT_API_SECRET", "api-secret")):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "lk-creds", "key": key, "optional": False}}


def test_deployment_shape() -> None:
    children = rendered(room_body(), TEMPLATE)
    dep, svc = children.deployment, children.service
    assert dep["metadata"]["name"] == svc["metadata"]["name"] == "standup-worker"
    assert dep["metadata"]["namespace"] == "team-a"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    for obj in (dep, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionRoom", "name": "standup",
                       "uid": "0b6c3b1e-1111-2222-3333-444455556666", "controller": True,
                       "blockOwnerDeletion": True}
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "livenexus-worker"
        assert labels["app.kubernetes.io/instance"] == "standup"
        assert labels["app.kubernetes.io/managed-by"] == "livenexus-operator"
        assert labels["livenexus.io/room"] == "standup"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}]
    c = container(dep)
    assert c["image"] == "reg.test/livenexus-worker:1.2.3"
    assert [c["command"][0], *c["args"]] == ["livenexus-worker", "run"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9300, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics"


def test_security_context_is_locked_down_and_values_may_only_tighten_it() -> None:
    tight = WorkerTemplate.from_values({
        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 2001,
                            "capabilities": {"drop": ["ALL", "NET_RAW"]}},
        "podSecurityContext": {"runAsUser": 2000, "fsGroupChangePolicy": "OnRootMismatch"},
    })
    dep = rendered(room_body(), tight).deployment
    pod = dep["spec"]["template"]["spec"]
    sc = container(dep)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 2001
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 2000  # values may still pick the uid
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Loosening values are refused with the field named (tests/operator/test_render_security.py has them all).
    with pytest.raises(SpecError, match=r"podSecurityContext\.runAsUser=0"):
        rendered(room_body(), WorkerTemplate.from_values({"podSecurityContext": {"runAsUser": 0}}))


def test_suspend_scales_to_zero_without_rolling_the_template() -> None:
    running = rendered(room_body(), TEMPLATE)
    suspended = rendered(room_body(suspend=True), TEMPLATE)
    assert suspended.deployment["spec"]["replicas"] == 0
    assert suspended.spec_hash == running.spec_hash
    assert suspended.deployment["spec"]["template"] == running.deployment["spec"]["template"]


def test_spec_hash_follows_every_template_input() -> None:
    base = rendered(room_body(), TEMPLATE)
    assert rendered(room_body(), TEMPLATE).spec_hash == base.spec_hash  # deterministic
    annotations = base.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[SPEC_HASH_ANNOTATION] == base.spec_hash
    variants = [
        rendered(room_body(model={"name": "base", "beamSize": 2}), TEMPLATE),
        rendered(room_body(vad={"hangoverMs": 300}), TEMPLATE),
        rendered(room_body(room="other"), TEMPLATE),
        rendered(room_body(), TEMPLATE, "42"),
        rendered(room_body(), WorkerTemplate.from_values({"image": "reg.test/livenexus-worker:1.2.4"})),
    ]
    hashes = {v.spec_hash for v in variants}
    assert base.spec_hash not in hashes and len(hashes) == len(variants)


def test_room_resources_override_the_chart_default() -> None:
    tmpl = WorkerTemplate.from_values({"resources": {"requests": {"cpu": "1"}}})
    assert container(rendered(room_body(), tmpl).deployment)["resources"] == {"requests": {"cpu": "1"}}
    own = {"limits": {"cpu": "3", "memory": "3Gi"}}
    assert container(rendered(room_body(resources=own), tmpl).deployment)["resources"] == own


def test_extra_env_cannot_shadow_the_contract() -> None:
    tmpl = WorkerTemplate.from_values({"extraEnv": [{"name": "LIVENEXUS_ROOM", "value": "hijack"},
                                                    {"name": "LIVENEXUS_THREADS", "value": "2"},
                                                    {"name": "LIVENEXUS_THREADS", "value": "4"}]})
    env = container(rendered(room_body(), tmpl).deployment)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    values = {e["name"]: e.get("value") for e in env}
    assert values["LIVENEXUS_ROOM"] == "standup"
    assert values["LIVENEXUS_THREADS"] == "2"


def test_model_volume_is_mounted_read_only_at_the_cache_path() -> None:
    tmpl = WorkerTemplate.from_values({"modelSource": {"cachePath": "/models",
                                                       "volume": {"persistentVolumeClaim": {"claimName": "m"}}}})
    dep = rendered(room_body(), tmpl).deployment
    c = container(dep)
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "m"}} in dep["spec"]["template"]["spec"][
        "volumes"]
    assert {"name": "LIVENEXUS_MODEL_CACHE", "value": "/models"} in c["env"]


@pytest.mark.parametrize("name", ["a" * 120, "team.a.room", "9lives", "x"])
def test_child_names_are_valid_dns_labels_and_distinct(name: str) -> None:
    child = child_name(name)
    assert len(child) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", child)
    assert child_name(name + "b") != child


@pytest.mark.parametrize("text", ["Daily Stand-up!", "ü" * 10, "a" * 100, "-x-", "plain"])
def test_label_values_are_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value)
    assert value
    if text == "plain":
        assert value == "plain"


def test_invalid_specs_are_reported_not_rendered() -> None:
    with pytest.raises(SpecError, match="cpuLow"):
        RoomSpec.from_body(room_body(tiers={"cpuHigh": 0.3, "cpuLow": 0.5}))
    with pytest.raises(SpecError, match="computeType"):
        RoomSpec.from_body(room_body(model={"computeType": "fp16"}))
    with pytest.raises(SpecError, match="url"):
        RoomSpec.from_body(room_body(livekit={"credentialsSecretRef": {"name": "x"}}))


def test_explicit_ladder_passes_through() -> None:
    spec = RoomSpec.from_body(room_body(tiers={"ladder": [{"model": "small"}]}))
    assert spec.effective_ladder == (TierSpec("small", "int8", 1, 250),)


@pytest.mark.parametrize("bad", [5, "a b", "../$(x)", "x" * 254])
def test_a_ladder_entrys_partial_model_must_be_a_model_name(bad: object) -> None:
    ok = RoomSpec.from_body(room_body(tiers={"ladder": [{"model": "base", "partialModel": "tiny.en"}]}))
    assert ok.effective_ladder[0].partial_model == "tiny.en"
    with pytest.raises(SpecError, match="partialModel"):
        RoomSpec.from_body(room_body(tiers={"ladder": [{"model": "base", "partialModel": bad}]}))


def test_worker_image_digest() -> None:
    tmpl = WorkerTemplate.from_values({"image": {"repository": "r/w", "tag": "sha256:" + "a" * 64}})
    assert tmpl.image == "r/w@sha256:" + "a" * 64
    assert Path(tmpl.model_source.cache_path).is_absolute()
