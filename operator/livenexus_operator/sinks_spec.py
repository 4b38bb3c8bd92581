"""A room's spec.sinks: parsed and rendered into the worker's environment and volumes (admission under the
room policy is :mod:`livenexus_operator.sinks_admit`; this module does no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livenexus_common.sinks import SinkEnv, webhook_url_problem

TRANSCRIPTS_PATH = "/transcripts"
"""Where the transcripts volume is mounted; each room writes ``<namespace>/<room>.jsonl`` under it."""
VOLUME = "transcripts"


class SinksError(ValueError):
    """spec.sinks cannot be used as written."""


@dataclass(frozen=True)
class SinksSpec:
    """spec.sinks with the CRD's defaults applied."""

    webhook_url: str = ""
    """spec.sinks.webhook.url; empty: no webhook."""
    secret_name: str = ""
    """spec.sinks.webhook.secretRef.name."""
    secret_key: str = "hmac-key"
    """spec.sinks.webhook.secretRef.key."""
    timeout_s: float = 5.0
    """spec.sinks.webhook.timeoutSeconds."""
    max_queue: int = 1000
    """spec.sinks.webhook.maxQueue."""
    file: bool = False
    """spec.sinks.file.enabled."""

    @classmethod
    def from_spec(cls, raw: Any) -> SinksSpec:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise SinksError("sinks must be an object")
        hook, file = raw.get("webhook") or {}, raw.get("file") or {}
        if not isinstance(hook, Mapping) or not isinstance(file, Mapping):
            raise SinksError("sinks.webhook and sinks.file must be objects")
        enabled = file.get("enabled", False)
        if not isinstance(enabled, bool):
            raise SinksError("sinks.file.enabled must be a boolean")
        if not hook:
            return cls(file=enabled)
        url, ref = hook.get("url"), hook.get("secretRef") or {}
        if not isinstance(url, str) or not url or not isinstance(ref, Mapping):
            raise SinksError("sinks.webhook needs url and secretRef")
        problem = webhook_url_problem(url, allow_http=True)  # the scheme rule is the room policy's (admit)
        if problem:
            raise SinksError(problem)
        name, key = ref.get("name"), ref.get("key", "hmac-key")
        if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
            raise SinksError("sinks.webhook.secretRef needs name (and a non-empty key)")
        timeout, queue = hook.get("timeoutSeconds", 5.0), hook.get("maxQueue", 1000)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0.5 <= timeout <= 60:
            raise SinksError(f"sinks.webhook.timeoutSeconds must be in [0.5, 60], got {timeout!r}")
        if isinstance(queue, bool) or not isinstance(queue, int) or not 1 <= queue <= 100000:
            raise SinksError(f"sinks.webhook.maxQueue must be an integer in [1, 100000], got {queue!r}")
        return cls(url, name, key, float(timeout), queue, enabled)


@dataclass(frozen=True)
class TranscriptsVolume:
    """Chart values ``worker.transcripts``: where file sinks write."""

    pvc: str = ""
    """PersistentVolumeClaim (in each room's namespace) mounted at /transcripts; empty: an emptyDir."""
    size_limit: str = "1Gi"
    """sizeLimit of that emptyDir (it lives as long as the pod: a PVC is what keeps transcripts)."""
    max_file_bytes: int = 1 << 30
    """Rotation size of each room's JSONL file."""

    @classmethod
    def from_values(cls, raw: Any) -> TranscriptsVolume:
        raw = raw if isinstance(raw, Mapping) else {}
        size = raw.get("maxFileBytes", 1 << 30)
        if isinstance(size, bool) or not isinstance(size, int) or not 4096 <= size <= 1 << 40:
            raise SinksError(f"worker.transcripts.maxFileBytes must be an integer in [4096, 2^40], got {size!r}")
        return cls(str(raw.get("pvc") or ""), str(raw.get("sizeLimit") or "1Gi"), size)


def sink_env(sinks: SinksSpec, volume: TranscriptsVolume, namespace: str) -> list[dict[str, Any]]:
    """The LIVENEXUS_SINK_* variables of a room's worker (none without sinks)."""
    env: list[dict[str, Any]] = []
    if sinks.webhook_url:
        env += [
            {"name": SinkEnv.WEBHOOK_URL, "value": sinks.webhook_url},
            {"name": SinkEnv.WEBHOOK_SECRET,
             "valueFrom": {"secretKeyRef": {"name": sinks.secret_name, "key": sinks.secret_key, "optional": False}}},
            {"name": SinkEnv.WEBHOOK_TIMEOUT_S, "value": f"{sinks.timeout_s:g}"},
            {"name": SinkEnv.WEBHOOK_MAX_QUEUE, "value": str(sinks.max_queue)},
        ]
        if sinks.webhook_url.startswith("http://"):
            env.append({"name": SinkEnv.WEBHOOK_ALLOW_HTTP, "value": "1"})  # admitted by the room policy
    if sinks.file:
        env += [
            {"name": SinkEnv.FILE_DIR, "value": f"{TRANSCRIPTS_PATH}/{namespace}"},
            {"name": SinkEnv.FILE_MAX_BYTES, "value": str(volume.max_file_bytes)},
        ]
    return env


def sink_volume(sinks: SinksSpec, volume: TranscriptsVolume) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(Volume, VolumeMount) of the transcripts, or None when the room writes no file."""
    if not sinks.file:
        return None
    source: dict[str, Any] = ({"persistentVolumeClaim": {"claimName": volume.pvc}} if volume.pvc
                              else {"emptyDir": {"sizeLimit": volume.size_limit}})
    return {"name": VOLUME, **source}, {"name": VOLUME, "mountPath": TRANSCRIPTS_PATH}
