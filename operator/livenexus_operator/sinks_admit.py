"""Admission of a room's sinks under the room policy: the webhook URL and its signing-key Secret.

The signing key is a Secret the room names, so it falls under the credentials Secret's rule (opt-in label or
listed by the admin): whoever may create a room must not have the worker use any Secret of its namespace. The
URL follows the LiveKit URL rule: TLS, to allowedHosts when the admin lists any; plain http only to
admin-listed in-cluster or loopback hosts.
"""

from __future__ import annotations

from livenexus_operator import kube
from livenexus_operator.policy import CREDENTIALS_LABEL, RoomPolicy
from livenexus_operator.sinks_spec import SinksSpec

# Ready-condition reasons of a room refused for its sinks (the LiveKit ones are reconcile's).
SINK_SECRET_MISSING = "SinkSecretMissing"
SINK_SECRET_NOT_ALLOWED = "SinkSecretNotAllowed"
SINK_URL_NOT_ALLOWED = "SinkUrlNotAllowed"

def url_problem(sinks: SinksSpec, policy: RoomPolicy) -> str | None:
    """The room policy's verdict on the webhook URL (None when there is no webhook or it is allowed)."""
    if not sinks.webhook_url:
        return None
    problem = policy.url_problem(sinks.webhook_url)
    return f"spec.sinks.webhook.url: {problem}" if problem else None


async def check_secret(namespace: str, sinks: SinksSpec, policy: RoomPolicy) -> tuple[str | None, str, str]:
    """(problem, Ready reason, resourceVersion) of the webhook's signing-key Secret; values are not kept."""
    if not sinks.webhook_url:
        return None, "", ""
    try:
        secret = await kube.get("v1", "Secret", namespace, sinks.secret_name)
    except kube.NotFound:
        return (f"Secret {namespace}/{sinks.secret_name} (spec.sinks.webhook.secretRef) not found: create it with "
                f"key {sinks.secret_key!r} and the label {CREDENTIALS_LABEL}=true"), SINK_SECRET_MISSING, ""
    meta = secret.get("metadata") or {}
    refused = policy.secret_problem(namespace, sinks.secret_name, meta.get("labels"))
    if refused:
        return f"spec.sinks.webhook.secretRef: {refused}", SINK_SECRET_NOT_ALLOWED, ""
    if not (secret.get("data") or {}).get(sinks.secret_key):
        missing = f"Secret {namespace}/{sinks.secret_name} has no (or an empty) key {sinks.secret_key!r}"
        return missing, SINK_SECRET_MISSING, ""
    return None, "", str(meta.get("resourceVersion", ""))
