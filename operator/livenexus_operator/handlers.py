"""kopf bindings: spec changes go through kopf handlers; status is kept current by a refresher task.

Children are server-side applied by name, so a restarted operator (resume), a repeated event or a
refresh converge on the same objects instead of creating new ones. Deletion needs no handler: the
children carry a controller ownerReference and the garbage collector removes them.

Why a refresher task and not ``@kopf.timer``: kopf puts a finalizer on every object that has a timer
or daemon, so a room could not be deleted while the operator is down or uninstalled. The refresher
walks a kopf index (which needs no finalizer) and patches the status subresource itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from livenexus_common.contract import GROUP, PLURAL, VERSION
from livenexus_operator import config, kube
from livenexus_operator.metrics import METRICS
from livenexus_operator.reconcile import Outcome, reconcile

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)
REFRESH_TICK_S = 1.0
"""How often the refresher looks for rooms due a refresh (each is refreshed every status_interval_s)."""
REFRESH_CONCURRENCY = 8
"""Rooms refreshed at once (each refresh waits on API calls and one scrape)."""

_last_reconciled: dict[tuple[str, str], float] = {}
"""(namespace, name) → monotonic time of its last reconcile by any path."""


@kopf.on.startup()
async def configure_kopf(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf's default progress storage also writes status.kopf, which our structural schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="livenexus.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="livenexus.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "livenexus.io/finalizer"
    # Scanning watches CRDs and namespaces, which would need cluster-wide RBAC the operator does not use.
    settings.scanning.disabled = True
    # Events are recorded by reconcile (kube.post_event) from both paths; kopf's log-derived ones are noise.
    settings.posting.enabled = False
    # Leader election is done on a Lease before kopf starts (see leader.py), not by kopf's peering.
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # kopf hands every index to activity handlers by the indexing function's name.
    memo["refresher"] = asyncio.create_task(_refresh_forever(kwargs["room_index"]), name="livenexus status refresher")


@kopf.on.cleanup()
async def stop_refresher(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("refresher")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.connection_info()


@kopf.index(*RESOURCE)
def room_index(*, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], bool]:
    """Every room kopf sees (in its namespaces), for the refresher."""
    return {(namespace or "", name): True}


async def _record(body: Mapping[str, Any], out: Outcome) -> None:
    for ev in out.events:
        await kube.post_event(body, ev.warning, ev.reason, ev.message)
    meta = body.get("metadata") or {}
    METRICS.set_phase(str(meta.get("uid")), out.phase or None)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
async def on_change(body: kopf.Body, patch: kopf.Patch, reason: str, **_: Any) -> None:
    cfg = config.current()
    meta = body.get("metadata") or {}
    _last_reconciled[(str(meta.get("namespace")), str(meta.get("name")))] = time.monotonic()
    try:
        out = await reconcile(body, str(reason))
    except Exception as exc:
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=cfg.retry_delay_s) from exc
    for key, value in out.status.items():
        patch.status[key] = value
    await _record(body, out)
    if out.permanent:
        raise kopf.PermanentError(out.permanent)
    if out.problem:
        raise kopf.TemporaryError(out.problem, delay=cfg.retry_delay_s)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(*, namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> None:
    # Children go with the owner through the garbage collector; only our own bookkeeping is left.
    _last_reconciled.pop((namespace or "", name), None)
    METRICS.set_phase(str(meta.get("uid")), None)


async def refresh_room(namespace: str, name: str) -> None:
    """Re-reconcile one room from a fresh read and patch its status subresource."""
    path = kube.object_path(f"{GROUP}/{VERSION}", "TranscriptionRoom", namespace, name)
    try:
        body = await kube.request("GET", path)
    except kube.NotFound:
        _last_reconciled.pop((namespace, name), None)
        return
    meta = body.get("metadata") or {}
    # A spec change not yet handled belongs to the kopf handlers (retries, progress); deletions to the GC.
    if meta.get("deletionTimestamp") or (body.get("status") or {}).get("observedGeneration") != meta.get("generation"):
        return
    out = await reconcile(body, "refresh")
    if out.status:
        await kube.request(
            "PATCH", path + "/status", body={"status": out.status}, content_type="application/merge-patch+json"
        )
    await _record(body, out)


async def _refresh_forever(index: Mapping[tuple[str, str], Any]) -> None:
    sem = asyncio.Semaphore(REFRESH_CONCURRENCY)

    async def one(key: tuple[str, str]) -> None:
        async with sem:
            try:
                await refresh_room(*key)
            except Exception as exc:  # the next round retries; one room must not stop the others
                log.warning("status refresh of %s/%s failed: %s", key[0], key[1], exc)

    while True:
        await asyncio.sleep(REFRESH_TICK_S)
        interval = config.current().status_interval_s
        now = time.monotonic()
        due = [k for k in list(index) if now - _last_reconciled.get(k, 0.0) >= interval]
        for key in due:
            _last_reconciled[key] = now
        if due:
            await asyncio.gather(*(one(k) for k in due))
