"""Keeping every room's status current: the periodic refresher, and the one guarded way status is written.

The refresher is a task over a kopf index, not a ``@kopf.timer`` (a timer would put a finalizer on every
room). Per room it reads the body kopf's watch already holds (no GET), reconciles, and writes the status
only when something other than the scrape stamp changed. Every write, here or from the kopf handlers,
goes through :func:`write_status`: it needs the Lease (``leader.FENCE``) and carries the resourceVersion
the status was computed from, so a write based on an overtaken read (a deposed leader, a spec change
handled meanwhile) is refused by the API server instead of landing.

Rooms are locked one by one (:data:`LOCKS`), shared with the kopf handlers: kopf never runs two handlers
for one room at once, but without the lock a refresh could run beside a spec-change reconcile of the same
room and apply its older rendering after the newer one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from livenexus_common.contract import GROUP, VERSION
from livenexus_operator import config, kube
from livenexus_operator.leader import FENCE, NotLeader
from livenexus_operator.metrics import METRICS
from livenexus_operator.reconcile import Outcome, reconcile
from livenexus_operator.requeue import RefreshSchedule
from livenexus_operator.status import needs_write

log = logging.getLogger(__name__)

RoomKey = tuple[str, str]
REFRESH_TICK_S = 1.0
"""How often the refresher looks for rooms that are due."""
CONFLICT_RETRY_S = 1.0
"""A refused (409) write is retried this soon: the newer body is usually in the index by then."""


class RoomLocks:
    """One asyncio.Lock per room; entries of rooms that are gone are dropped, so this stays O(rooms)."""

    def __init__(self) -> None:
        self._locks: dict[RoomKey, asyncio.Lock] = {}

    def __call__(self, key: RoomKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def keep_only(self, live: set[RoomKey]) -> None:
        for key in [k for k, lock in self._locks.items() if k not in live and not lock.locked()]:
            del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


LOCKS = RoomLocks()
SCHEDULE: RefreshSchedule[RoomKey] = RefreshSchedule(interval_s=15.0)
"""Replaced by :func:`refresh_forever` with the configured interval and backoff bounds."""


def room_path(namespace: str, name: str) -> str:
    return kube.object_path(f"{GROUP}/{VERSION}", "TranscriptionRoom", namespace, name)


def slim_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the index keeps of a room: everything reconcile reads, without managedFields (most of the bytes)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": meta,
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def latest_body(index: Mapping[RoomKey, Any], key: RoomKey) -> dict[str, Any] | None:
    """The newest body the watch delivered for ``key`` (a name reused right after a delete may hold two)."""
    try:
        store = index[key]
    except KeyError:
        return None
    bodies = [b for b in store if isinstance(b, dict)]
    if not bodies:
        return None
    return max(bodies, key=lambda b: str((b.get("metadata") or {}).get("creationTimestamp") or ""))


async def write_status(body: Mapping[str, Any], changes: Mapping[str, Any]) -> str:
    """Write ``changes`` to the room's status if they are worth it; 'written' or 'unchanged'.

    Raises :class:`~livenexus_operator.leader.NotLeader` (fenced) or :class:`kube.Conflict` (the room
    moved since ``body`` was read); neither writes anything.
    """
    previous: Mapping[str, Any] = body.get("status") or {}
    if not needs_write(changes, previous, config.current().status_heartbeat_s):
        METRICS.status_writes.labels(result="unchanged").inc()
        return "unchanged"
    meta = body.get("metadata") or {}
    try:
        FENCE.check()
    except NotLeader:
        METRICS.status_writes.labels(result="fenced").inc()
        raise
    try:
        path = room_path(str(meta.get("namespace")), str(meta.get("name")))
        await kube.patch_status(path, changes, str(meta.get("resourceVersion") or ""))
    except kube.Conflict:
        METRICS.status_writes.labels(result="conflict").inc()
        raise
    METRICS.status_writes.labels(result="written").inc()
    return "written"


async def record(body: Mapping[str, Any], out: Outcome) -> None:
    """Events and the phase gauge, once the status that goes with them is stored."""
    for ev in out.events:
        await kube.post_event(body, ev.warning, ev.reason, ev.message)
    METRICS.set_phase(str((body.get("metadata") or {}).get("uid")), out.phase or None)


def classify(exc: BaseException) -> tuple[str, bool, float | None]:
    """(requeue reason, whether the server side is at fault, Retry-After) of a failed refresh."""
    if isinstance(exc, kube.Conflict):
        return "conflict", False, None
    if isinstance(exc, kube.ApiError):
        if exc.status == 429:
            return "throttled", True, exc.retry_after
        if exc.status >= 500:
            return "server_error", True, exc.retry_after
        return "error", False, None
    if kube.transient(exc):
        return "unreachable", True, None
    return "error", False, None


async def refresh_room(index: Mapping[RoomKey, Any], key: RoomKey, schedule: RefreshSchedule[RoomKey]) -> str:
    """Reconcile one room from the index and write its status; returns what happened (for tests/logs)."""
    async with LOCKS(key):
        body = latest_body(index, key)
        if body is None:
            schedule.forget(key)
            return "gone"
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        # A spec change not yet handled belongs to the kopf handlers (retries, progress); deletions to the GC.
        if meta.get("deletionTimestamp") or status.get("observedGeneration") != meta.get("generation"):
            schedule.reconciled(key, time.monotonic())
            return "skipped"
        try:
            out = await reconcile(body, "refresh")
            result = await write_status(body, out.status)
        except NotLeader:
            schedule.reconciled(key, time.monotonic())
            return "fenced"
        except Exception as exc:
            reason, server, retry_after = classify(exc)
            now = time.monotonic()
            if reason == "conflict":
                schedule.postpone(key, now + CONFLICT_RETRY_S)
            else:
                delay = schedule.failed(key, now, retry_after, server=server)
                log.warning("status refresh of %s/%s failed (%s, retry in %.1fs): %s", *key, reason, delay, exc)
            METRICS.requeues.labels(reason=reason).inc()
            return reason
        await record(body, out)
        schedule.reconciled(key, time.monotonic(), config.current().retry_delay_s if out.problem else None)
        METRICS.refresh_rooms.inc()
        return result


async def refresh_keys(index: Mapping[RoomKey, Any], keys: list[RoomKey], schedule: RefreshSchedule[RoomKey]) -> None:
    """Refresh ``keys`` with the configured concurrency; rooms reached after a pause began are put back."""
    sem = asyncio.Semaphore(config.current().refresh_concurrency)

    async def one(key: RoomKey) -> None:
        async with sem:
            now = time.monotonic()
            if schedule.paused(now):
                schedule.postpone(key, schedule.paused_until)
                return
            try:
                await refresh_room(index, key, schedule)
            except Exception as exc:  # one room must never stop the others
                log.exception("status refresh of %s/%s crashed: %s", key[0], key[1], exc)

    await asyncio.gather(*(one(k) for k in keys))


def prune(index: Mapping[RoomKey, Any]) -> set[RoomKey]:
    """Drop bookkeeping of rooms no longer in the index (deleted); returns the live keys."""
    live = set(index)
    LOCKS.keep_only(live)
    uids = {
        str((b.get("metadata") or {}).get("uid"))
        for k in live
        for b in (index.get(k) or ())
        if isinstance(b, dict)
    }
    METRICS.keep_only(uids)
    return live


async def refresh_forever(index: Mapping[RoomKey, Any]) -> None:
    global SCHEDULE
    cfg = config.current()
    SCHEDULE = schedule = RefreshSchedule[RoomKey](cfg.status_interval_s, min(1.0, cfg.retry_delay_s), cfg.retry_max_s)
    while True:
        await asyncio.sleep(REFRESH_TICK_S)
        live = prune(index)
        due = schedule.due(live, time.monotonic())
        if due:
            started = time.monotonic()
            await refresh_keys(index, due, schedule)
            METRICS.refresh_pass.observe(time.monotonic() - started)
