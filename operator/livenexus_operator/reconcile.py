"""One idempotent reconcile of one TranscriptionRoom, independent of what triggered it.

It returns what to write instead of writing the room itself, so kopf handlers (which patch through
kopf) and the periodic refresher (which patches the status subresource directly) share every line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import yaml

from livenexus_operator import config, kube, sinks_admit
from livenexus_operator.metrics import METRICS
from livenexus_operator.policy import CREDENTIALS_LABEL, POLICY_KEY, Approval, RoomPolicy
from livenexus_operator.render import SPEC_HASH_ANNOTATION, child_name, render
from livenexus_operator.scrape import ScrapeError, WorkerStats, scrape
from livenexus_operator.spec import RoomSpec, SpecError, WorkerTemplate
from livenexus_operator.status import Observation, build_status, tier_change

log = logging.getLogger(__name__)

# Ready reasons (and Warning event reasons) when no worker may run with the room's credentials.
SECRET_MISSING = "SecretMissing"
SECRET_NOT_ALLOWED = "SecretNotAllowed"
URL_NOT_ALLOWED = "LiveKitUrlNotAllowed"


@dataclass
class Event:
    """A Kubernetes Event to record on the room."""

    warning: bool
    """Type Warning (else Normal)."""
    reason: str
    """CamelCase reason."""
    message: str
    """Human-readable message."""


@dataclass
class Outcome:
    """What one reconcile decided."""

    status: dict[str, Any] = field(default_factory=dict)
    """Status fields that differ from the room's current status (empty: nothing to write)."""
    events: list[Event] = field(default_factory=list)
    """Events to record."""
    problem: str | None = None
    """A condition that a retry may fix (missing Secret)."""
    permanent: str | None = None
    """A problem only a spec change can fix."""
    phase: str = ""
    """The phase the room is in after this reconcile."""


def _yaml_mapping(raw: str | None, what: str) -> Mapping[str, Any]:
    values = yaml.safe_load(raw or "") or {}
    if not isinstance(values, Mapping):
        raise SpecError(f"{what} is not a mapping")
    return values


async def load_settings(cfg: config.OperatorConfig) -> tuple[WorkerTemplate, RoomPolicy]:
    """The chart's worker template and room policy, from one read of their ConfigMap.

    A ConfigMap without a policy key (rendered by an older chart) gets the strict defaults.
    """
    cm = await kube.get("v1", "ConfigMap", cfg.namespace, cfg.template_configmap)
    data = cm.get("data") or {}
    raw = data.get(cfg.template_key)
    if raw is None:
        raise SpecError(f"ConfigMap {cfg.namespace}/{cfg.template_configmap} has no key {cfg.template_key!r}")
    where = f"ConfigMap {cfg.namespace}/{cfg.template_configmap}"
    template = WorkerTemplate.from_values(_yaml_mapping(raw, f"{cfg.template_key} in {where}"))
    policy = RoomPolicy.from_values(_yaml_mapping(data.get(POLICY_KEY), f"{POLICY_KEY} in {where}"))
    return template, policy


async def load_template(cfg: config.OperatorConfig) -> WorkerTemplate:
    return (await load_settings(cfg))[0]


async def check_secret(namespace: str, room: RoomSpec, policy: RoomPolicy) -> tuple[str | None, str, str]:
    """(problem, Ready reason, resourceVersion). Only label and key presence are looked at; values are not kept.

    The policy is checked before the keys: the names of keys in a Secret the room may not use are none of
    the room author's business.
    """
    try:
        secret = await kube.get("v1", "Secret", namespace, room.secret_name)
    except kube.NotFound:
        return (
            f"Secret {namespace}/{room.secret_name} not found: create it with keys {room.api_key_key!r} "
            f"and {room.api_secret_key!r} and the label {CREDENTIALS_LABEL}=true "
            "(spec.livekit.credentialsSecretRef)"
        ), SECRET_MISSING, ""
    meta = secret.get("metadata") or {}
    refused = policy.secret_problem(namespace, room.secret_name, meta.get("labels"))
    if refused:
        return refused, SECRET_NOT_ALLOWED, ""
    data = secret.get("data") or {}
    missing = [k for k in (room.api_key_key, room.api_secret_key) if not data.get(k)]
    if missing:
        return (
            f"Secret {namespace}/{room.secret_name} has no (or an empty) key "
            f"{', '.join(repr(k) for k in missing)}; present keys: {sorted(data) or 'none'}"
        ), SECRET_MISSING, ""
    return None, "", str(meta.get("resourceVersion", ""))


async def scrape_worker(cfg: config.OperatorConfig, service: Mapping[str, Any], port: int) -> WorkerStats | None:
    url = cfg.metrics_url(service, port)
    try:
        async with aiohttp.ClientSession() as session:
            return await scrape(session, url, cfg.scrape_timeout_s)
    except ScrapeError as exc:
        # Expected while the pod starts or is suspended; the status keeps the last known values.
        METRICS.scrape_errors.inc()
        log.debug("scrape failed: %s", exc)
        return None


async def _current_hash(namespace: str, name: str) -> str | None:
    """The live pod template's spec hash; None when the Deployment does not exist."""
    try:
        dep = await kube.get("apps/v1", "Deployment", namespace, name)
    except kube.NotFound:
        return None
    meta = ((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION, ""))


def _conclude(out: Outcome, obs: Observation, previous: Mapping[str, Any]) -> Outcome:
    status = build_status(obs, previous)
    out.phase = status["phase"]
    old_phase = previous.get("phase")
    if old_phase != status["phase"]:
        ready = next((c for c in status["conditions"] if c["type"] == "Ready"), None)
        detail = f": {ready['message']}" if ready else ""
        out.events.append(
            Event(status["phase"] == "Error", "PhaseChanged", f"{old_phase or 'None'} → {status['phase']}{detail}")
        )
    previous_ready: Mapping[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    if obs.secret_problem and previous_ready.get("reason") != obs.secret_reason:
        out.events.append(Event(True, obs.secret_reason, obs.secret_problem))
    # Only changed keys are written: an unchanged status then causes no write and no watch event.
    out.status = {k: v for k, v in status.items() if previous.get(k) != v}
    return out


async def reconcile(body: Mapping[str, Any], trigger: str) -> Outcome:
    """Converge one room's children and compute its status. API failures propagate (callers retry)."""
    cfg = config.current()
    started = time.monotonic()
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    generation = int(meta.get("generation") or 0)
    previous: Mapping[str, Any] = body.get("status") or {}
    worker = child_name(name)
    out = Outcome()
    try:
        try:
            room = RoomSpec.from_body(body)
        except SpecError as exc:
            out.permanent = f"invalid spec: {exc}"
            METRICS.reconcile_errors.labels(reason="InvalidSpec").inc()
            return _conclude(
                out, Observation(generation, name, False, spec_problem=str(exc), namespace=namespace), previous
            )

        base = Observation(
            generation, room.room, room.suspend, namespace=namespace, ladder_size=len(room.effective_ladder)
        )
        template, policy = await load_settings(cfg)
        # The URL is checked first: a room refused for its URL never has its Secret read.
        out.problem = policy.url_problem(room.livekit_url)
        reason, secret_version = URL_NOT_ALLOWED, ""
        if not out.problem:
            out.problem, reason, secret_version = await check_secret(namespace, room, policy)
        hook_version = ""
        if not out.problem and room.sinks.webhook_url:  # the sinks' Secret and URL, under the same policy
            out.problem, reason = sinks_admit.url_problem(room.sinks, policy), sinks_admit.SINK_URL_NOT_ALLOWED
            if not out.problem:
                out.problem, reason, hook_version = await sinks_admit.check_secret(namespace, room.sinks, policy)
        if out.problem:
            # An existing worker keeps the credentials and URL it was admitted with: render never runs
            # for a refused spec, so nothing of the refused values reaches a pod.
            METRICS.reconcile_errors.labels(reason=reason).inc()
            exists = await _current_hash(namespace, worker) is not None
            obs = replace(base, secret_problem=out.problem, secret_reason=reason, worker_name=worker if exists else "")
            return _conclude(out, obs, previous)

        hook = ("", "", "")
        if room.sinks.webhook_url:
            hook = (room.sinks.secret_name, hook_version, room.sinks.webhook_url)
        children = render(body, template, Approval(room.secret_name, secret_version, room.livekit_url, hook))
        old_hash = await _current_hash(namespace, worker)
        deployment = await kube.apply(children.deployment)
        service = await kube.apply(children.service)
        if old_hash is None:
            out.events.append(Event(False, "WorkerCreated", f"created worker {worker} for room {room.room!r}"))
        elif old_hash != children.spec_hash:
            out.events.append(
                Event(False, "WorkerUpdated", f"worker {worker} template changed ({old_hash} → {children.spec_hash})")
            )

        available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
        stats = None
        if not room.suspend:
            stats = await scrape_worker(cfg, service, template.metrics_port)
        changed = tier_change(previous, stats)
        if changed is not None and stats is not None:
            old, new = changed
            out.events.append(
                Event(
                    new > old,
                    "TierChanged",
                    f"worker moved from tier {old} to tier {new} ({stats.tier_name}, model {stats.model})",
                )
            )
        obs = replace(base, worker_name=worker, available_replicas=available, stats=stats)
        return _conclude(out, obs, previous)
    except Exception as exc:
        METRICS.reconcile_errors.labels(reason=type(exc).__name__).inc()
        raise
    finally:
        METRICS.reconcile_duration.labels(trigger=trigger).observe(time.monotonic() - started)
