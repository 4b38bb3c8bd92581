"""kopf bindings: spec changes go through kopf handlers; status is kept current by the refresher task.

Children are server-side applied by name, so a restarted operator (resume), a repeated event or a
refresh converge on the same objects instead of creating new ones. Deletion needs no handler: the
children carry a controller ownerReference and the garbage collector removes them; the refresher forgets
the room (metrics, schedule, lock) once it is gone from the index (kopf drops it on the watch's DELETED
event, and again on any re-list, so a deletion missed while the watch was down is forgotten as well).

Status is written by :func:`refresher.write_status` on both paths (never through kopf's patch), so every
write is fenced by the Lease and conditional on the resourceVersion it was computed from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from livenexus_common.contract import GROUP, PLURAL, VERSION
from livenexus_operator import autoscale_loop as _autoscale_loop  # noqa: F401  (its kopf startup/cleanup)
from livenexus_operator import config, kube, refresher
from livenexus_operator import dispatch_loop as _dispatch_loop  # noqa: F401  (policy index, startup/cleanup)
from livenexus_operator.background import stop_task
from livenexus_operator.leader import NotLeader
from livenexus_operator.metrics import METRICS
from livenexus_operator.reconcile import reconcile
from livenexus_operator.requeue import backoff_delay

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)
MAX_SYNC_THREADS = 2
"""Threads for sync handlers (none are left: every handler and the index are async)."""


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
    cfg = config.current()
    # At most this many rooms are handled at once (kopf serialises each room already): a resume of 1,000
    # rooms after a restart, or a burst of creates, queues up instead of opening 1,000 reconciles.
    settings.queueing.worker_limit = cfg.worker_limit
    # A worker keeps its slot this long after its room's last event; kopf's 5 s would cap throughput at
    # worker_limit / 5 events per second (each status write is an event too).
    settings.queueing.idle_timeout = 0.5
    settings.execution.max_workers = MAX_SYNC_THREADS
    # kopf's own API calls (watches, annotation patches) retry 429/5xx with these delays and never sooner
    # than the server's Retry-After; after the last one the error surfaces and kopf's error throttling holds.
    settings.networking.error_backoffs = (1, 2, 4, 8, 16, 32)
    # kopf hands every index to activity handlers by the indexing function's name.
    memo["refresher"] = asyncio.create_task(
        refresher.refresh_forever(kwargs["room_index"]), name="livenexus status refresher"
    )


@kopf.on.cleanup()
async def stop_refresher(memo: kopf.Memo, **_: Any) -> None:
    await stop_task(memo, "refresher")


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.connection_info()


@kopf.index(*RESOURCE)
async def room_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Every room kopf sees (in its namespaces), with its latest body: the refresher reads it instead of a GET."""
    return {(namespace or "", name): refresher.slim_body(body)}


def _retry_delay(exc: BaseException, retry: int) -> float:
    """Exponential (jittered) for a server that is failing or throttling us; the fixed retry delay otherwise."""
    cfg = config.current()
    reason, server, retry_after = refresher.classify(exc)
    METRICS.requeues.labels(reason=reason).inc()
    if reason == "conflict":
        return refresher.CONFLICT_RETRY_S
    if server:
        return backoff_delay(retry + 1, min(1.0, cfg.retry_delay_s), cfg.retry_max_s, retry_after)
    return cfg.retry_delay_s


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
async def on_change(body: kopf.Body, reason: str, retry: int, **_: Any) -> None:
    cfg = config.current()
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    async with refresher.LOCKS(key):
        try:
            out = await reconcile(body, str(reason))
            await refresher.write_status(body, out.status)
        except NotLeader as exc:
            raise kopf.TemporaryError(str(exc), delay=cfg.retry_delay_s) from exc
        except Exception as exc:
            delay = _retry_delay(exc, retry)
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=delay) from exc
        await refresher.record(body, out)
        # A missing Secret is retried by the refresher, not by kopf: kopf keeps a worker slot (of
        # worker_limit) asleep for every room awaiting a retry, and rooms may wait for their Secret for days.
        refresher.SCHEDULE.reconciled(key, time.monotonic(), cfg.retry_delay_s if out.problem else None)
    if out.permanent:
        raise kopf.PermanentError(out.permanent)
