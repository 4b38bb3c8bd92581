"""Pure rendering of a TranscriptionRoom into the worker Deployment and Service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from livenexus_operator.render import (
    RESERVED_ENV,
    SPEC_HASH_ANNOTATION,
    child_name,
    label_value,
    render,
    worker_env,
)
from livenexus_operator.spec import RoomSpec, SpecError, Tier, WorkerTemplate
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.room.settings import WorkerSettings
from tests.operator.helpers import ROOT, room_body

TEMPLATE = WorkerTemplate.from_values({"image": {"repository": "reg.test/livenexus-worker", "tag": "1.2.3"}})


def container(children_deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = children_deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_for_worker(env: list[dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """What the kubelet would hand the container: plain values, secretKeyRefs resolved from ``secrets``."""
    out = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            out[e["name"]] = secrets[e["valueFrom"]["secretKeyRef"]["key"]]
    return out


def test_env_is_read_back_by_the_worker_settings_exactly() -> None:
    body = room_body(
        room="Daily Stand-up",
        model={"name": "base", "computeType": "int8_float32", "language": "auto", "beamSize": 3},
        vad={"aggressiveness": 3, "hangoverMs": 400},
        tiers={
            "ladder": [{"model": "base", "computeType": "int8", "beamSize": 4, "partialIntervalMs": 200},
                       {"model": "tiny", "beamSize": 1, "partialIntervalMs": 0}],
            "cpuHigh": 0.9, "cpuLow": 0.4, "lagHighMs": 1500, "lagLowMs": 200,
            "downWindowSeconds": 3, "upWindowSeconds": 30.5, "cooldownSeconds": 12,
        },
    )
    body["spec"]["livekit"]["credentialsSecretRef"].update(apiKeyKey="key-id", apiSecretKey="key-secret")
    dep = render(body, TEMPLATE).deployment
    env = env_for_worker(container(dep)["env"], {"key-id": "APIabc", "key-secret": "s3cr3t"})
    s = WorkerSettings.from_env(env)
    s.require_livekit()
    assert (s.livekit_url, s.api_key, s.api_secret, s.room) == (
        "wss://livekit.example.test", "APIabc", "s3cr3t", "Daily Stand-up")
    assert (s.model, s.compute_type, s.beam_size, s.language) == ("base", "int8_float32", 3, None)
    assert (s.vad_aggressiveness, s.vad_hangover_ms) == (3, 400)
    assert s.tiers == (TierSpec("base", "int8", 4, 200), TierSpec("tiny", "int8", 1, 0))
    assert (s.tier_cpu_high, s.tier_cpu_low, s.tier_lag_high_ms, s.tier_lag_low_ms) == (0.9, 0.4, 1500, 200)
    assert (s.tier_down_window_s, s.tier_up_window_s, s.tier_cooldown_s) == (3.0, 30.5, 12.0)
    assert s.metrics_port == 9300
    assert s.model_cache == "/opt/livenexus/models"


def test_defaults_derive_a_ladder_from_the_model_and_keep_the_language() -> None:
    env = env_for_worker(worker_env(RoomSpec.from_body(room_body(name="r1")), TEMPLATE), {"api-key": "k",
                                                                                         "api-secret": "s"})
    s = WorkerSettings.from_env(env)
    assert s.room == "r1"  # spec.room defaults to metadata.name
    assert s.language == "en"
    assert s.tiers == (TierSpec("base", "int8", 5, 250), TierSpec("base", "int8", 1, 250),
                       TierSpec("base", "int8", 1, 600), TierSpec("base", "int8", 1, 0))
    # Every tier uses the configured model: a model the image lacks can never be stepped down to.
    assert {t.model for t in s.tiers} == {"base"}


def test_every_env_name_is_one_the_worker_reads() -> None:
    sources = "".join(p.read_text() for p in (ROOT / "worker" / "livenexus_worker").rglob("*.py"))
    names = {e["name"] for e in worker_env(RoomSpec.from_body(room_body()), TEMPLATE)}
    assert names == RESERVED_ENV
    for name in names - {"HOME"}:
        assert re.search(rf"[\"']{name}[\"']", sources), f"{name} is set by the operator but read nowhere"


def test_credentials_come_only_from_secret_key_refs() -> None:
    body = room_body()
    dep = render(body, TEMPLATE).deployment
    env = {e["name"]: e for e in container(dep)["env"]}
    for name, key in (("LIVEKIT_API_KEY", "api-key"), ("LIVEKIT_API_SECRET", "api-secret")):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "lk-creds", "key": key, "optional": False}}


def test_deployment_shape() -> None:
    children = render(room_body(), TEMPLATE)
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


def test_security_context_is_locked_down_and_values_cannot_loosen_it() -> None:
    loose = WorkerTemplate.from_values({
        "securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": True,
                            "capabilities": {"add": ["NET_ADMIN"]}, "privileged": True},
        "podSecurityContext": {"runAsNonRoot": False, "runAsUser": 2000},
    })
    dep = render(room_body(), loose).deployment
    pod = dep["spec"]["template"]["spec"]
    sc = container(dep)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 2000  # values may still pick the uid
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    with pytest.raises(ValueError, match="uid 0"):
        render(room_body(), WorkerTemplate.from_values({"podSecurityContext": {"runAsUser": 0}}))


def test_suspend_scales_to_zero_without_rolling_the_template() -> None:
    running = render(room_body(), TEMPLATE)
    suspended = render(room_body(suspend=True), TEMPLATE)
    assert suspended.deployment["spec"]["replicas"] == 0
    assert suspended.spec_hash == running.spec_hash
    assert suspended.deployment["spec"]["template"] == running.deployment["spec"]["template"]


def test_spec_hash_follows_every_template_input() -> None:
    base = render(room_body(), TEMPLATE)
    assert render(room_body(), TEMPLATE).spec_hash == base.spec_hash  # deterministic
    annotations = base.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[SPEC_HASH_ANNOTATION] == base.spec_hash
    variants = [
        render(room_body(model={"name": "base", "beamSize": 2}), TEMPLATE),
        render(room_body(vad={"hangoverMs": 300}), TEMPLATE),
        render(room_body(room="other"), TEMPLATE),
        render(room_body(), TEMPLATE, credentials_version="42"),
        render(room_body(), WorkerTemplate.from_values({"image": "reg.test/livenexus-worker:1.2.4"})),
    ]
    hashes = {v.spec_hash for v in variants}
    assert base.spec_hash not in hashes and len(hashes) == len(variants)


def test_room_resources_override_the_chart_default() -> None:
    tmpl = WorkerTemplate.from_values({"resources": {"requests": {"cpu": "1"}}})
    assert container(render(room_body(), tmpl).deployment)["resources"] == {"requests": {"cpu": "1"}}
    own = {"limits": {"cpu": "3", "memory": "3Gi"}}
    assert container(render(room_body(resources=own), tmpl).deployment)["resources"] == own


def test_extra_env_cannot_shadow_the_contract() -> None:
    tmpl = WorkerTemplate.from_values({"extraEnv": [{"name": "LIVENEXUS_ROOM", "value": "hijack"},
                                                    {"name": "LIVENEXUS_THREADS", "value": "2"},
                                                    {"name": "LIVENEXUS_THREADS", "value": "4"}]})
    env = container(render(room_body(), tmpl).deployment)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    values = {e["name"]: e.get("value") for e in env}
    assert values["LIVENEXUS_ROOM"] == "standup"
    assert values["LIVENEXUS_THREADS"] == "2"


def test_model_volume_is_mounted_read_only_at_the_cache_path() -> None:
    tmpl = WorkerTemplate.from_values({"modelSource": {"cachePath": "/models",
                                                       "volume": {"persistentVolumeClaim": {"claimName": "m"}}}})
    dep = render(room_body(), tmpl).deployment
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
    assert spec.effective_ladder == (Tier("small", "int8", 1, 250),)


def test_worker_image_digest() -> None:
    tmpl = WorkerTemplate.from_values({"image": {"repository": "r/w", "tag": "sha256:" + "a" * 64}})
    assert tmpl.image == "r/w@sha256:" + "a" * 64
    assert Path(tmpl.model_source.cache_path).is_absolute()
