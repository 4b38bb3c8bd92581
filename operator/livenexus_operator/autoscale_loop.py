"""The autoscaler task: every :data:`~livenexus_operator.autoscale.TICK_S` it samples each autoscaled room's
worker, asks :func:`~livenexus_operator.autoscale.decide` and resizes the pod in place.

A task of its own beside the status refresher (not part of reconcile): it runs on a faster clock than the
status (seconds, not 15 s), only for rooms with autoscaling enabled, and it never writes the Deployment.
Every resize needs the Lease (``leader.FENCE``) like every status write; its status goes through
``refresher.write_status`` (fenced, conditional on the room's resourceVersion) under ``status.autoscaling``.
Events: ``Resized`` (Normal) for each resize, ``ResizeDeferred`` (Warning) when the node cannot grant a
resize now (Deferred) or ever (Infeasible, then withdrawn) or ``maxCpu`` is reached while the room is
overloaded: from there the worker's own tier downgrade takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from livenexus_operator import config, kube, refresher
from livenexus_operator.autoscale import (
    MAX_GAP_S,
    TICK_S,
    AutoscaleError,
    AutoscalePolicy,
    Decision,
    Sample,
    decide,
    format_cpu,
    sample_of,
)
from livenexus_operator.background import stop_task
from livenexus_operator.leader import FENCE, NotLeader
from livenexus_operator.reconcile import load_template
from livenexus_operator.render import child_name
from livenexus_operator.resize import ResizeUnsupported, find_worker_pod, node_allocatable_millis, pod_cpu, resize_pod
from livenexus_operator.scrape import ScrapeError, scrape
from livenexus_operator.spec import RoomSpec, SpecError, WorkerTemplate

log = logging.getLogger(__name__)

CONCURRENCY = 8
"""Rooms evaluated at once (each waits on two API calls and one scrape)."""
MAX_SAMPLES = 2048
"""Samples kept per room (a bound on memory whatever the windows say)."""
CEILING_TTL_S = 600.0
"""How long a size the node refused (Infeasible) caps the room before it is tried again."""


@dataclass
class RoomState:
    """What the autoscaler remembers of one room's current worker pod."""

    pod_uid: str = ""
    """The pod the samples belong to; a new pod starts over."""
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    """Samples since the last resize, oldest first."""
    buckets: tuple[tuple[float, float], ...] = ()
    """The previous scrape's final latency buckets (for the p95 between scrapes)."""
    last_resize_at: float | None = None
    """Monotonic time of the last resize of this pod."""
    ceiling: tuple[int, float] | None = None
    """(millicores the node granted before refusing more, when) after an Infeasible resize."""
    reported: str = ""
    """Key of the last ResizeDeferred event, so one situation is reported once."""
    last_decision: dict[str, Any] | None = None
    """The last resize, as status.autoscaling.lastDecision shows it."""
    metrics_url: str = ""
    """The worker's /metrics (from its Service; looked up again after a failed scrape)."""


_states: dict[tuple[str, str], RoomState] = {}


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _policy(body: Mapping[str, Any], template: WorkerTemplate) -> AutoscalePolicy:
    room = RoomSpec.from_body(body)
    return AutoscalePolicy.resolve(room.autoscaling, template.autoscaling, cpu_high=room.cpu_high,
                                   cpu_low=room.cpu_low, lag_high_ms=room.lag_high_ms, lag_low_ms=room.lag_low_ms)


async def _write(body: Mapping[str, Any], status: dict[str, Any] | None) -> None:
    if (body.get("status") or {}).get("autoscaling") == status:
        return
    with contextlib.suppress(kube.Conflict):  # the room moved on; the next tick writes from the newer body
        await refresher.write_status(body, {"autoscaling": status})


async def _sample(st: RoomState, namespace: str, name: str, template: WorkerTemplate, now: float) -> None:
    cfg = config.current()
    try:
        if not st.metrics_url:
            service = await kube.get("v1", "Service", namespace, child_name(name))
            st.metrics_url = cfg.metrics_url(service, template.metrics_port)
        async with aiohttp.ClientSession() as session:
            stats = await scrape(session, st.metrics_url, cfg.scrape_timeout_s)
    except (ScrapeError, kube.NotFound) as exc:
        # No sample: the decision sees the gap and holds (a window must be observed to act on it).
        st.metrics_url = ""
        log.debug("autoscaler: no sample of %s/%s: %s", namespace, name, exc)
        return
    st.samples.append(sample_of(now, stats, st.buckets))
    st.buckets = stats.final_latency_buckets


async def autoscale_room(body: Mapping[str, Any], template: WorkerTemplate, now: float) -> Decision | None:
    """One evaluation of one room; returns the decision taken (None when the room is not autoscaled)."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    key = (namespace, name)
    spec = body.get("spec") or {}
    try:
        policy = _policy(body, template)
    except (AutoscaleError, SpecError) as exc:
        _states.pop(key, None)
        await _write(body, {"enabled": False, "problem": str(exc)[:1024]})
        return None
    if not policy.enabled or spec.get("suspend") or meta.get("deletionTimestamp"):
        _states.pop(key, None)
        await _write(body, None)
        return None
    pod = await find_worker_pod(namespace, name)
    if pod is None:
        return None
    pod_meta = pod.get("metadata") or {}
    st = _states.setdefault(key, RoomState())
    if st.pod_uid != pod_meta.get("uid"):
        _states[key] = st = RoomState(pod_uid=str(pod_meta.get("uid")))
    node = await node_allocatable_millis(str((pod.get("spec") or {}).get("nodeName") or ""))
    try:
        cpu = pod_cpu(pod, node)
    except ResizeUnsupported as exc:
        await _write(body, {"enabled": True, "problem": str(exc)[:1024]})
        return None
    await _sample(st, namespace, name, template, now)
    keep = max(policy.up_after_s, policy.down_after_s) + 2 * MAX_GAP_S
    while st.samples and st.samples[0].at < now - keep:
        st.samples.popleft()
    if cpu.resize == "Infeasible":
        st.ceiling = (cpu.allocated_millis, now)
    if st.ceiling is not None and now - st.ceiling[1] > CEILING_TTL_S:
        st.ceiling = None
    decision = decide(policy, list(st.samples), cpu, now, last_resize_at=st.last_resize_at,
                      ceiling_millis=st.ceiling[0] if st.ceiling else None)

    if decision.action != "hold" and decision.target_millis != cpu.desired_millis:
        FENCE.check()
        await resize_pod(pod, decision.target_millis)
        withdrawn = cpu.resize == "Infeasible"
        st.last_resize_at, st.reported = now, ""
        st.samples.clear()
        st.last_decision = {
            "action": "Down" if decision.target_millis < cpu.desired_millis else "Up",
            "fromCpu": format_cpu(cpu.desired_millis if withdrawn else cpu.allocated_millis),
            "toCpu": format_cpu(decision.target_millis),
            "reason": decision.reason[:1024],
            "time": _now_iso(),
        }
        if withdrawn:
            await kube.post_event(body, True, "ResizeDeferred", f"withdrew the resize to "
                                  f"{format_cpu(cpu.desired_millis)}: {decision.reason}; staying at "
                                  f"{format_cpu(decision.target_millis)}, the worker may step its tier down")
        else:
            await kube.post_event(body, False, "Resized", f"resized worker pod {pod_meta.get('name')} in place "
                                  f"from {format_cpu(cpu.allocated_millis)} to {format_cpu(decision.target_millis)}"
                                  f" CPU: {decision.reason}")
        desired = decision.target_millis
    else:
        desired = cpu.desired_millis
        blocked = cpu.resize in ("Deferred", "Infeasible") or "the worker may step its tier down" in decision.reason
        report = f"{cpu.resize}:{desired}" if cpu.resize else ("limit" if blocked else "")
        if blocked and report != st.reported:
            await kube.post_event(body, True, "ResizeDeferred", decision.reason)
        st.reported = report

    status: dict[str, Any] = {
        "enabled": True,
        "cpu": format_cpu(cpu.allocated_millis),
        "desiredCpu": format_cpu(desired),
        "minCpu": format_cpu(policy.min_millis),
        "maxCpu": format_cpu(policy.max_millis),
        "resize": cpu.resize,
    }
    if st.last_decision is not None:
        status["lastDecision"] = st.last_decision
    elif isinstance((body.get("status") or {}).get("autoscaling"), Mapping):
        # A restarted operator keeps showing the decision its predecessor took.
        previous = body["status"]["autoscaling"].get("lastDecision")
        if isinstance(previous, Mapping):
            status["lastDecision"] = dict(previous)
    await _write(body, status)
    return decision


async def autoscale_once(index: Mapping[tuple[str, str], Any]) -> None:
    """Evaluate every room in kopf's index once."""
    keys = list(index)
    for gone in set(_states) - set(keys):
        _states.pop(gone, None)
    bodies = [b for b in (refresher.latest_body(index, k) for k in keys) if b is not None]
    if not bodies:
        return
    # Read every round: the chart may switch autoscaling on for every room (worker.autoscaling.enabled).
    template = await load_template(config.current())
    sem = asyncio.Semaphore(CONCURRENCY)
    now = time.monotonic()

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            try:
                await autoscale_room(body, template, now)
            except NotLeader:
                raise
            except Exception as exc:  # one room must not stop the others; the next tick retries
                meta = body.get("metadata") or {}
                log.warning("autoscaling %s/%s failed: %s", meta.get("namespace"), meta.get("name"), exc)

    await asyncio.gather(*(one(b) for b in bodies))


async def autoscale_forever(index: Mapping[tuple[str, str], Any]) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        try:
            await autoscale_once(index)
        except NotLeader:
            _states.clear()  # a new leader starts from fresh samples
        except Exception as exc:
            log.warning("autoscaler round failed: %s", exc)


@kopf.on.startup()
async def start_autoscaler(*, memo: kopf.Memo, **kwargs: Any) -> None:
    memo["autoscaler"] = asyncio.create_task(autoscale_forever(kwargs["room_index"]), name="livenexus autoscaler")


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    await stop_task(memo, "autoscaler")
