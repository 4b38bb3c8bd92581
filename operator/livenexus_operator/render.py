"""Pure rendering: (TranscriptionRoom, worker template) → the worker Deployment and its metrics Service.

No I/O here, so every property of the children is unit-testable and the handlers stay thin. The output
is a complete desired state for server-side apply: fields we stop rendering are removed by the API
server, which is what makes reconciliation level-triggered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livenexus_common.contract import API_VERSION, AUTOSCALE_ENV, KIND, RENDERED_ENV, Env, ladder_to_json
from livenexus_common.sinks import SINK_ENV
from livenexus_operator.autoscale import AutoscaleError, AutoscalePolicy
from livenexus_operator.podsecurity import security_contexts
from livenexus_operator.policy import Approval, PolicyError
from livenexus_operator.sinks_spec import sink_env, sink_volume
from livenexus_operator.spec import RoomSpec, WorkerTemplate

MANAGED_BY = "livenexus-operator"
WORKER_APP = "livenexus-worker"
CONTAINER = "worker"
SPEC_HASH_ANNOTATION = "livenexus.io/spec-hash"
ROOM_ANNOTATION = "livenexus.io/room"
CREDENTIALS_ANNOTATION = "livenexus.io/credentials-version"
SINK_SECRET_ANNOTATION = "livenexus.io/sink-secret-version"
ROOM_LABEL = "livenexus.io/room"

# Names the operator owns in the worker's environment (the contract's, plus HOME); extraEnv may not shadow
# them, and server-side apply rejects duplicate names in an env list anyway.
RESERVED_ENV = RENDERED_ENV | {"HOME"}

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Owner:
    """The identity of the TranscriptionRoom that owns the children."""

    name: str
    """metadata.name."""
    namespace: str
    """metadata.namespace."""
    uid: str
    """metadata.uid (ownerReferences need it; the garbage collector matches on it)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body.get("metadata") or {}
        return cls(str(meta.get("name", "")), str(meta.get("namespace", "")), str(meta.get("uid", "")))


@dataclass(frozen=True)
class Children:
    """Desired state of everything one room owns."""

    deployment: dict[str, Any]
    """apps/v1 Deployment running the worker."""
    service: dict[str, Any]
    """v1 Service exposing the worker's metrics port."""
    spec_hash: str
    """Hash of the pod template (also on the pod template as an annotation)."""


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def child_name(cr_name: str) -> str:
    """Name of the Deployment and the Service: ``<cr>-worker`` when that is a valid DNS-1035 label.

    Service names must be DNS-1035 labels (≤63 chars, leading letter, no dots) while CR names are
    DNS-1123 subdomains; anything else is squashed and suffixed with a hash so two rooms never collide.
    """
    plain = f"{cr_name}-worker"
    if _DNS_LABEL.match(plain) and len(plain) <= 63:
        return plain
    base = re.sub(r"[^a-z0-9-]", "-", cr_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = "r-" + base
    return f"{base[:45].rstrip('-')}-worker-{_short_hash(cr_name)}"


def label_value(text: str) -> str:
    """``text`` when it is a valid label value, otherwise a valid, collision-resistant stand-in."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    squashed = re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip("-_.")[:54].rstrip("-_.")
    return f"{squashed}-{_short_hash(text)}" if squashed else _short_hash(text, 16)


def selector_labels(owner: Owner) -> dict[str, str]:
    return {"app.kubernetes.io/name": WORKER_APP, "app.kubernetes.io/instance": label_value(owner.name)}


def standard_labels(owner: Owner, room: RoomSpec) -> dict[str, str]:
    return {
        **selector_labels(owner),
        "app.kubernetes.io/component": "transcriber",
        "app.kubernetes.io/part-of": "livenexus",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        ROOM_LABEL: label_value(room.room),
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def autoscale_env(room: RoomSpec, template: WorkerTemplate) -> list[dict[str, Any]]:
    """LIVENEXUS_AUTOSCALE_*: set only when the room is autoscaled, so other rooms' pods do not change."""
    try:
        policy = AutoscalePolicy.resolve(room.autoscaling, template.autoscaling, cpu_high=room.cpu_high,
                                         cpu_low=room.cpu_low, lag_high_ms=room.lag_high_ms,
                                         lag_low_ms=room.lag_low_ms)
    except AutoscaleError:
        return []  # the autoscaler reports it in status.autoscaling and never resizes such a room
    if not policy.enabled:
        return []
    return [
        {"name": Env.AUTOSCALE_MAX_CPU, "value": _number(policy.max_millis / 1000.0)},
        {"name": Env.AUTOSCALE_GRACE_S, "value": _number(policy.worker_grace_s)},
    ]


def worker_env(room: RoomSpec, template: WorkerTemplate) -> list[dict[str, Any]]:
    """The worker's environment, variable for variable as ``WorkerSettings.from_env`` reads it."""

    def secret(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": room.secret_name, "key": key, "optional": False}}

    env: list[dict[str, Any]] = [
        {"name": Env.LIVEKIT_URL, "value": room.livekit_url},
        {"name": Env.LIVEKIT_API_KEY, "valueFrom": secret(room.api_key_key)},
        {"name": Env.LIVEKIT_API_SECRET, "valueFrom": secret(room.api_secret_key)},
        {"name": Env.ROOM, "value": room.room},
        {"name": Env.MODEL, "value": room.model},
        {"name": Env.COMPUTE_TYPE, "value": room.compute_type},
        {"name": Env.BEAM_SIZE, "value": str(room.beam_size)},
        {"name": Env.LANGUAGE, "value": room.language},
        {"name": Env.VAD_AGGRESSIVENESS, "value": str(room.vad_aggressiveness)},
        {"name": Env.VAD_HANGOVER_MS, "value": str(room.vad_hangover_ms)},
        {"name": Env.TIERS, "value": ladder_to_json(room.effective_ladder)},
        {"name": Env.TIER_CPU_HIGH, "value": _number(room.cpu_high)},
        {"name": Env.TIER_CPU_LOW, "value": _number(room.cpu_low)},
        {"name": Env.TIER_LAG_HIGH_MS, "value": str(room.lag_high_ms)},
        {"name": Env.TIER_LAG_LOW_MS, "value": str(room.lag_low_ms)},
        {"name": Env.TIER_DOWN_WINDOW_S, "value": _number(room.down_window_s)},
        {"name": Env.TIER_UP_WINDOW_S, "value": _number(room.up_window_s)},
        {"name": Env.TIER_COOLDOWN_S, "value": _number(room.cooldown_s)},
        {"name": Env.METRICS_PORT, "value": str(template.metrics_port)},
        {"name": Env.MODEL_CACHE, "value": template.model_source.cache_path},
        # The root filesystem is read-only; anything that insists on writing under $HOME gets the emptyDir.
        {"name": "HOME", "value": "/tmp"},
    ]
    env += autoscale_env(room, template)
    # Only the operator may say an autoscaler stands behind the pod (extraEnv never names these).
    seen = {e["name"] for e in env} | AUTOSCALE_ENV | SINK_ENV  # nor the sinks (sink_env, after these)
    for extra in template.extra_env:
        name = str(extra.get("name", ""))
        if name and name not in RESERVED_ENV and name not in seen:
            env.append(dict(extra))
            seen.add(name)
    return env


def _probe(path: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "metrics", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def pod_template(
    owner: Owner, room: RoomSpec, template: WorkerTemplate, credentials_version: str = "", sink_secret_version: str = ""
) -> dict[str, Any]:
    """The worker's pod template, with the spec-hash annotation computed over everything else in it."""
    pod_sc, container_sc = security_contexts(template.pod_security_context, template.security_context)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": template.tmp_size_limit}}]
    if template.model_source.volume is not None:
        mounts.append({"name": "models", "mountPath": template.model_source.cache_path, "readOnly": True})
        volumes.append({"name": "models", **copy.deepcopy(dict(template.model_source.volume))})
    transcripts = sink_volume(room.sinks, template.transcripts)
    if transcripts is not None:
        volumes.append(transcripts[0])
        mounts.append(transcripts[1])
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": template.image,
        "imagePullPolicy": template.image_pull_policy,
        "command": ["livenexus-worker"],
        "args": ["run"],
        "env": worker_env(room, template) + sink_env(room.sinks, template.transcripts, owner.namespace),
        "ports": [{"name": "metrics", "containerPort": template.metrics_port, "protocol": "TCP"}],
        # Model loading happens before /healthz exists; the startup probe gives it two minutes before
        # liveness may kill the pod. Readiness additionally waits for the LiveKit connection.
        "startupProbe": _probe("/healthz", 2, 60),
        "livenessProbe": _probe("/healthz", 10, 3, 5),
        "readinessProbe": _probe("/readyz", 5, 3),
        "resources": copy.deepcopy(
            dict(room.resources if room.resources is not None else template.resources)
        ),
        "securityContext": container_sc,
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": template.termination_grace_period_seconds,
        "securityContext": pod_sc,
        "containers": [container],
        "volumes": volumes,
    }
    if template.service_account_name:
        spec["serviceAccountName"] = template.service_account_name
    if template.priority_class_name:
        spec["priorityClassName"] = template.priority_class_name
    if template.image_pull_secrets:
        spec["imagePullSecrets"] = [dict(s) for s in template.image_pull_secrets]
    if template.node_selector:
        spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        spec["tolerations"] = [copy.deepcopy(dict(t)) for t in template.tolerations]
    if template.affinity:
        spec["affinity"] = copy.deepcopy(dict(template.affinity))
    annotations = {**template.pod_annotations, ROOM_ANNOTATION: room.room}
    if credentials_version:
        # Env from a Secret is read once at container start: a new Secret version must roll the pod.
        annotations[CREDENTIALS_ANNOTATION] = credentials_version
    if sink_secret_version:
        annotations[SINK_SECRET_ANNOTATION] = sink_secret_version  # the signing key is env from a Secret too
    labels = {**template.pod_labels, **standard_labels(owner, room)}
    tmpl: dict[str, Any] = {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}
    tmpl["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(tmpl)
    return tmpl


def spec_hash(pod_tmpl: Mapping[str, Any]) -> str:
    """Stable hash of a pod template, ignoring any spec-hash annotation already on it."""
    clean = copy.deepcopy(dict(pod_tmpl))
    meta = dict(clean.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SPEC_HASH_ANNOTATION}
    meta["annotations"] = annotations
    clean["metadata"] = meta
    return hashlib.sha256(json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def render(body: Mapping[str, Any], template: WorkerTemplate, approval: Approval) -> Children:
    """Desired Deployment and Service for one TranscriptionRoom body whose credentials and URL were admitted.

    ``approval`` comes from the room policy check in reconcile (it needs a read of the Secret); a spec that
    names another Secret or URL than the approved ones is refused, so no path renders an unchecked worker.
    """
    owner = Owner.from_body(body)
    if not (owner.name and owner.namespace and owner.uid):
        raise ValueError("body lacks metadata.name/namespace/uid")
    room = RoomSpec.from_body(body)
    if (room.secret_name, room.livekit_url) != (approval.secret_name, approval.livekit_url):
        raise PolicyError(
            f"room {owner.namespace}/{owner.name} names Secret {room.secret_name!r} and URL {room.livekit_url!r}, "
            f"but {approval.secret_name!r} and {approval.livekit_url!r} were approved"
        )
    hook = room.sinks
    if hook.webhook_url and (hook.secret_name, hook.webhook_url) != (approval.webhook[0], approval.webhook[2]):
        raise PolicyError(
            f"room {owner.namespace}/{owner.name}: spec.sinks.webhook ({hook.secret_name!r}, {hook.webhook_url!r}) "
            "was not approved"
        )
    name = child_name(owner.name)
    labels = standard_labels(owner, room)
    meta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "annotations": {ROOM_ANNOTATION: room.room},
        "ownerReferences": [owner_reference(owner)],
    }
    pod = pod_template(owner, room, template, approval.secret_version,
                       approval.webhook[1] if hook.webhook_url else "")
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": copy.deepcopy(meta),
        "spec": {
            "replicas": 0 if room.suspend else 1,
            # Recreate: a rolling update would briefly run two agents in the same room, and both would
            # publish every transcript.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(owner)},
            "template": pod,
        },
    }
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": copy.deepcopy(meta),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner),
            "ports": [
                {"name": "metrics", "port": template.metrics_port, "targetPort": "metrics", "protocol": "TCP"}
            ],
        },
    }
    return Children(deployment, service, pod["metadata"]["annotations"][SPEC_HASH_ANNOTATION])
