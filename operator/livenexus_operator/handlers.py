"""kopf handlers: every trigger runs the same idempotent reconcile of one TranscriptionRoom.

Children are server-side applied by name, so a restarted operator (resume), a repeated event or a
timer tick converge on the same objects instead of creating new ones. Deletion needs no handler work:
the children carry a controller ownerReference and the garbage collector removes them, which also
works while the operator is down (hence no finalizer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import kopf
import yaml

from livenexus_operator import config, kube
from livenexus_operator.metrics import METRICS
from livenexus_operator.render import SPEC_HASH_ANNOTATION, child_name, render
from livenexus_operator.scrape import ScrapeError, WorkerStats, scrape
from livenexus_operator.spec import GROUP, PLURAL, VERSION, RoomSpec, SpecError, WorkerTemplate
from livenexus_operator.status import Observation, build_status, tier_change

TIMER_TICK_S = 2.0
"""kopf's timer granularity; the real refresh period is ``OperatorConfig.status_interval_s``."""

RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's default progress storage also writes status.kopf, which our structural schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="livenexus.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="livenexus.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "livenexus.io/finalizer"
    # Scanning watches CRDs and namespaces, which would need cluster-wide RBAC the operator does not use.
    settings.scanning.disabled = True
    # Only explicit kopf.info/warn calls become Events; handler chatter stays in the log.
    settings.posting.level = logging.WARNING
    # Leader election is done on a Lease before kopf starts (see leader.py), not by kopf's peering.
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.connection_info()


async def load_template(cfg: config.OperatorConfig) -> WorkerTemplate:
    cm = await kube.get("v1", "ConfigMap", cfg.namespace, cfg.template_configmap)
    raw = (cm.get("data") or {}).get(cfg.template_key)
    if raw is None:
        raise SpecError(f"ConfigMap {cfg.namespace}/{cfg.template_configmap} has no key {cfg.template_key!r}")
    values = yaml.safe_load(raw) or {}
    if not isinstance(values, Mapping):
        raise SpecError(f"{cfg.template_key} in ConfigMap {cfg.template_configmap} is not a mapping")
    return WorkerTemplate.from_values(values)


async def check_secret(namespace: str, room: RoomSpec) -> tuple[str | None, str]:
    """(problem, resourceVersion): the Secret's keys are checked for presence, never read into memory long."""
    try:
        secret = await kube.get("v1", "Secret", namespace, room.secret_name)
    except kube.NotFound:
        return (
            f"Secret {namespace}/{room.secret_name} not found: create it with keys "
            f"{room.api_key_key!r} and {room.api_secret_key!r} (see spec.livekit.credentialsSecretRef)"
        ), ""
    data = secret.get("data") or {}
    missing = [k for k in (room.api_key_key, room.api_secret_key) if not data.get(k)]
    if missing:
        return (
            f"Secret {namespace}/{room.secret_name} has no (or an empty) key "
            f"{', '.join(repr(k) for k in missing)}; present keys: {sorted(data) or 'none'}"
        ), ""
    return None, str((secret.get("metadata") or {}).get("resourceVersion", ""))


async def scrape_worker(
    cfg: config.OperatorConfig, namespace: str, service: str, port: int
) -> WorkerStats | None:
    url = cfg.metrics_url(namespace, service, port)
    try:
        async with aiohttp.ClientSession() as session:
            return await scrape(session, url, cfg.scrape_timeout_s)
    except ScrapeError as exc:
        METRICS.scrape_errors.inc()
        logging.getLogger(__name__).debug("scrape failed: %s", exc)
        return None


def _event(body: kopf.Body, warn: bool, reason: str, message: str) -> None:
    (kopf.warn if warn else kopf.info)(body, reason=reason, message=message)


async def reconcile(body: kopf.Body, patch: kopf.Patch, trigger: str) -> str | None:
    """Converge one room; returns a retryable problem (missing Secret) or None; status goes into ``patch``."""
    cfg = config.current()
    started = time.monotonic()
    meta = body.get("metadata") or {}
    namespace, name, _uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
    generation = int(meta.get("generation") or 0)
    previous: Mapping[str, Any] = body.get("status") or {}
    worker = child_name(name)
    problem: str | None = None
    try:
        try:
            room = RoomSpec.from_body(body)
        except SpecError as exc:
            obs = Observation(
                generation, str(meta.get("name")), False, spec_problem=str(exc), namespace=namespace
            )
            _write_status(body, patch, obs, previous)
            METRICS.reconcile_errors.labels(reason="InvalidSpec").inc()
            raise kopf.PermanentError(f"invalid spec: {exc}") from exc

        base = Observation(
            generation, room.room, room.suspend, namespace=namespace, ladder_size=len(room.effective_ladder)
        )
        problem, secret_version = await check_secret(namespace, room)
        if problem:
            exists = await _exists("apps/v1", "Deployment", namespace, worker)
            obs = replace(base, secret_problem=problem, worker_name=worker if exists else "")
            _write_status(body, patch, obs, previous)
            METRICS.reconcile_errors.labels(reason="SecretMissing").inc()
            return problem

        template = await load_template(cfg)
        children = render(body, template, secret_version)
        old_hash = await _current_hash(namespace, worker)
        deployment = await kube.apply(children.deployment)
        await kube.apply(children.service)
        if old_hash is None:
            _event(body, False, "WorkerCreated", f"created worker deployment {worker} for room {room.room!r}")
        elif old_hash != children.spec_hash:
            _event(
                body,
                False,
                "WorkerUpdated",
                f"worker {worker} spec changed ({old_hash} → {children.spec_hash})",
            )

        available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
        stats = None
        if not room.suspend:
            stats = await scrape_worker(
                cfg, namespace, children.service["metadata"]["name"], template.metrics_port
            )
        obs = replace(base, worker_name=worker, available_replicas=available, stats=stats)
        changed = tier_change(previous, stats)
        if changed is not None and stats is not None:
            old, new = changed
            _event(
                body,
                new > old,
                "TierChanged",
                f"worker moved from tier {old} to tier {new} ({stats.tier_name}, model {stats.model})",
            )
        _write_status(body, patch, obs, previous)
        return None
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except Exception as exc:
        METRICS.reconcile_errors.labels(reason=type(exc).__name__).inc()
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=cfg.retry_delay_s) from exc
    finally:
        METRICS.reconcile_duration.labels(trigger=trigger).observe(time.monotonic() - started)


async def _exists(api_version: str, kind: str, namespace: str, name: str) -> bool:
    try:
        await kube.get(api_version, kind, namespace, name)
    except kube.NotFound:
        return False
    return True


async def _current_hash(namespace: str, name: str) -> str | None:
    """The live pod template's spec hash; None when the Deployment does not exist."""
    try:
        dep = await kube.get("apps/v1", "Deployment", namespace, name)
    except kube.NotFound:
        return None
    annotations = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    return str(annotations.get(SPEC_HASH_ANNOTATION, ""))


def _write_status(body: kopf.Body, patch: kopf.Patch, obs: Observation, previous: Mapping[str, Any]) -> None:
    status = build_status(obs, previous)
    old_phase = previous.get("phase")
    if old_phase != status["phase"]:
        ready = next((c for c in status["conditions"] if c["type"] == "Ready"), None)
        detail = f": {ready['message']}" if ready else ""
        _event(
            body,
            status["phase"] == "Error",
            "PhaseChanged",
            f"{old_phase or 'None'} → {status['phase']}{detail}",
        )
    if obs.secret_problem and not _had_reason(previous, "SecretMissing"):
        _event(body, True, "SecretMissing", obs.secret_problem)
    # Only changed keys go into the patch: an unchanged status then causes no write and no watch event.
    for key, value in status.items():
        if previous.get(key) != value:
            patch.status[key] = value
    METRICS.set_phase(str((body.get("metadata") or {}).get("uid")), status["phase"])


def _had_reason(status: Mapping[str, Any], reason: str) -> bool:
    return any(c.get("type") == "Ready" and c.get("reason") == reason for c in status.get("conditions") or [])


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
async def on_change(body: kopf.Body, patch: kopf.Patch, reason: str, memo: kopf.Memo, **_: Any) -> None:
    problem = await reconcile(body, patch, str(reason))
    memo["last_refresh"] = time.monotonic()
    if problem:
        raise kopf.TemporaryError(problem, delay=config.current().retry_delay_s)


@kopf.timer(*RESOURCE, interval=TIMER_TICK_S, initial_delay=TIMER_TICK_S)
async def refresh(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Keep status current and undo drift (a deleted or edited child) between spec changes."""
    cfg = config.current()
    if time.monotonic() - float(memo.get("last_refresh", 0.0)) < cfg.status_interval_s:
        return
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    # A spec change not yet handled belongs to the update handler (which has retries and events).
    if status.get("observedGeneration") != meta.get("generation"):
        return
    memo["last_refresh"] = time.monotonic()
    try:
        problem = await reconcile(body, patch, "timer")
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        logger.warning("status refresh: %s", exc)
        return
    if problem:
        logger.warning("status refresh: %s", problem)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(meta: kopf.Meta, logger: kopf.Logger, **_: Any) -> None:
    # Children go with the owner through the garbage collector; only our own bookkeeping is left.
    METRICS.set_phase(str(meta.get("uid")), None)
    logger.info("room deleted; the garbage collector removes its worker")
