"""TranscriptionPolicies at work: webhooks and resyncs feed the book, each pass applies :func:`dispatch.plan`.

A pass runs when a webhook changed something and at least every :data:`TICK_S` (grace periods end by the
clock, not by an event). It reads the policies and the rooms from kopf's indexes (no GET), creates with
POST (a name already taken, by anyone, is left alone) and deletes with a uid precondition. Objects just
created or deleted are remembered for :data:`SETTLE_S`, until the watch shows them, so a pass does not
repeat the call meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from livenexus_common.contract import GROUP, VERSION
from livenexus_operator import config, kube, webhooks
from livenexus_operator.background import stop_task
from livenexus_operator.dispatch import Owned, Plan, Want, plan, room_body
from livenexus_operator.dispatch_book import MAX_ROOMS, RoomBook
from livenexus_operator.leader import FENCE, NotLeader
from livenexus_operator.metrics import METRICS
from livenexus_operator.resync import ResyncError, list_rooms
from livenexus_operator.transcription_policy import POLICY_PLURAL, PolicyError, TranscriptionPolicy

log = logging.getLogger(__name__)

TICK_S = 1.0
"""Longest time between two passes."""
SETTLE_S = 15.0
"""How long a create or delete of ours is assumed done before the watch confirms it."""
CALL_CONCURRENCY = 8
"""Creates and deletes in flight at once."""

Key = tuple[str, str]


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rooms_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/transcriptionrooms"


def policy_status_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{POLICY_PLURAL}/{name}/status"


def policy_status(body: Mapping[str, Any], active: int, waiting: int, reason: str, message: str) -> dict[str, Any]:
    """The policy's new status; lastTransitionTime moves only when Ready's status or reason does."""
    meta = body.get("metadata") or {}
    ok = reason == "Active"
    old: Mapping[str, Any] = next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    same = old.get("status") == ("True" if ok else "False") and old.get("reason") == reason
    return {
        "observedGeneration": int(meta.get("generation") or 0),
        "activeRooms": active,
        "waitingRooms": waiting,
        "conditions": [{
            "type": "Ready", "status": "True" if ok else "False", "reason": reason, "message": message[:1024],
            "lastTransitionTime": old.get("lastTransitionTime") if same else _now_iso(),
        }],
    }


class Dispatcher:
    """The policy loop of one operator (the leader)."""

    def __init__(self, cfg: config.OperatorConfig, rooms: Mapping[Any, Any], policies: Mapping[Any, Any]) -> None:
        self.cfg = cfg
        self.rooms = rooms
        self.policies = policies
        self.book = RoomBook()
        self.woken = asyncio.Event()
        self.resync_problem = ""
        self._created: dict[str, tuple[Owned, float]] = {}
        self._deleted: dict[str, float] = {}
        self._sem = asyncio.Semaphore(CALL_CONCURRENCY)

    def wake(self) -> None:
        self.woken.set()

    def _bodies(self, index: Mapping[Any, Any]) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for store in index.values():
            out.extend(b for b in store if isinstance(b, Mapping))
        return out

    def parsed_policies(self) -> tuple[list[TranscriptionPolicy], dict[Key, str]]:
        """Usable policies, and the problem of each unusable one."""
        good: list[TranscriptionPolicy] = []
        bad: dict[Key, str] = {}
        for body in self._bodies(self.policies):
            meta = body.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            try:
                good.append(TranscriptionPolicy.from_body(body))
            except PolicyError as exc:
                bad[key] = str(exc)
        return good, bad

    def owned(self, now: float) -> list[Owned]:
        """The policy-owned rooms as the index shows them, corrected for our calls it has not shown yet."""
        self._created = {n: v for n, v in self._created.items() if v[1] > now}
        self._deleted = {n: t for n, t in self._deleted.items() if t > now}
        seen: dict[str, Owned] = {}
        for body in self._bodies(self.rooms):
            obj = Owned.from_body(body)
            if obj is not None and f"{obj.namespace}/{obj.name}" not in self._deleted:
                seen[f"{obj.namespace}/{obj.name}"] = obj
        for name, (obj, _) in self._created.items():
            seen.setdefault(name, obj)
        return list(seen.values())

    async def resync(self, session: aiohttp.ClientSession) -> None:
        taken_at = time.monotonic()
        try:
            views = await list_rooms(session, self.cfg.livekit_url, self.cfg.livekit_api_key,
                                     self.cfg.livekit_api_secret, MAX_ROOMS)
        except ResyncError as exc:
            METRICS.resyncs.labels(result="error").inc()
            self.resync_problem = str(exc)
            log.warning("resync failed: %s", exc)
            return
        self.book.replace(views, time.monotonic(), taken_at)
        self.resync_problem = ""
        METRICS.resyncs.labels(result="ok").inc()

    async def _create(self, want: Want) -> None:
        body = room_body(want)
        key = f"{want.policy.namespace}/{want.name}"
        result = "ok"
        try:
            async with self._sem:
                made = await kube.request("POST", rooms_path(want.policy.namespace), body=body)
            uid = str((made.get("metadata") or {}).get("uid") or "")
            obj = Owned(want.policy.namespace, want.name, uid, want.policy.name, want.room)
        except kube.Conflict:
            result, obj = "exists", Owned(want.policy.namespace, want.name, "", want.policy.name, want.room)
        except Exception as exc:
            result, obj = "error", Owned(want.policy.namespace, want.name, "", want.policy.name, want.room)
            log.warning("could not create TranscriptionRoom %s for LiveKit room %r: %s", key, want.room, exc)
        METRICS.policy_actions.labels(action="create", result=result).inc()
        self._created[key] = (obj, time.monotonic() + SETTLE_S)

    async def _delete(self, obj: Owned) -> None:
        key = f"{obj.namespace}/{obj.name}"
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if obj.uid:
            options["preconditions"] = {"uid": obj.uid}
        result = "ok"
        try:
            async with self._sem:
                await kube.request("DELETE", f"{rooms_path(obj.namespace)}/{obj.name}", body=options)
        except (kube.NotFound, kube.Conflict):
            result = "gone"
        except Exception as exc:
            result = "error"
            log.warning("could not delete TranscriptionRoom %s: %s", key, exc)
        METRICS.policy_actions.labels(action="delete", result=result).inc()
        self._created.pop(key, None)
        self._deleted[key] = time.monotonic() + SETTLE_S

    async def _write_statuses(self, decided: Plan, bad: Mapping[Key, str]) -> None:
        for body in self._bodies(self.policies):
            meta = body.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            count = decided.counts.get(key)
            if key in bad:
                status = policy_status(body, 0, 0, "InvalidSpec", bad[key])
            elif not self.cfg.policies_enabled:
                status = policy_status(body, 0, 0, "LiveKitNotConfigured",
                                       "the operator has no LiveKit URL and credentials (chart: policies.livekit)")
            elif self.resync_problem and not self.book.synced:
                status = policy_status(body, 0, 0, "ResyncFailed", self.resync_problem)
            else:
                active, waiting = (count.active, count.waiting) if count else (0, 0)
                message = f"{active} rooms transcribed" + (f", {waiting} waiting for maxRooms" if waiting else "")
                status = policy_status(body, active, waiting, "Active", message)
            old = body.get("status") or {}
            if all(old.get(k) == v for k, v in status.items()):
                continue
            try:
                FENCE.check()
                await kube.request("PATCH", policy_status_path(*key), body={"status": status},
                                   content_type="application/merge-patch+json")
            except kube.NotFound:
                pass
            except NotLeader:
                raise
            except Exception as exc:
                log.warning("could not write the status of TranscriptionPolicy %s/%s: %s", *key, exc)

    async def pass_once(self, now: float) -> Plan:
        policies, bad = self.parsed_policies()
        decided = plan(self.book, policies, self.owned(now), now) if self.cfg.policies_enabled else Plan()
        FENCE.check()
        await asyncio.gather(*(self._create(w) for w in decided.create), *(self._delete(o) for o in decided.delete))
        await self._write_statuses(decided, bad)
        METRICS.policy_rooms.labels(state="active").set(sum(c.active for c in decided.counts.values()))
        METRICS.policy_rooms.labels(state="waiting").set(sum(c.waiting for c in decided.counts.values()))
        METRICS.policy_rooms.labels(state="observed").set(len(self.book.rooms))
        return decided

    async def run(self) -> None:
        next_resync = 0.0
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), TICK_S)
                self.woken.clear()
                try:
                    if self.cfg.policies_enabled and time.monotonic() >= next_resync:
                        await self.resync(session)
                        next_resync = time.monotonic() + self.cfg.resync_interval_s
                    if self._bodies(self.policies) or self.book.rooms:
                        await self.pass_once(time.monotonic())
                except NotLeader as exc:
                    log.warning("policy pass skipped: %s", exc)
                except Exception:
                    log.exception("policy pass failed; retrying at the next tick")


@kopf.index(GROUP, VERSION, POLICY_PLURAL)
async def policy_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    """Every TranscriptionPolicy kopf sees, with metadata, spec and status (what the loop reads)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {(namespace or "", name): {"metadata": meta, "spec": dict(body.get("spec") or {}),
                                      "status": dict(body.get("status") or {})}}


@kopf.on.startup()
async def start_dispatcher(memo: kopf.Memo, **kwargs: Any) -> None:
    cfg = config.current()
    dispatcher = Dispatcher(cfg, kwargs["room_index"], kwargs["policy_index"])
    memo["dispatcher"] = dispatcher
    if cfg.policies_enabled and cfg.webhook_port:
        # Listening before the first resync: an event during it is then applied on top, not lost.
        endpoint = webhooks.WebhookEndpoint(dispatcher.book, cfg.livekit_api_key, cfg.livekit_api_secret,
                                            dispatcher.wake)
        memo["webhook_runner"] = await webhooks.serve(endpoint, cfg.webhook_host, cfg.webhook_port)
    memo["dispatch_task"] = asyncio.create_task(dispatcher.run(), name="livenexus policy dispatcher")


@kopf.on.cleanup()
async def stop_dispatcher(memo: kopf.Memo, **_: Any) -> None:
    await stop_task(memo, "dispatch_task")
    runner = memo.get("webhook_runner")
    if runner is not None:
        await runner.cleanup()
