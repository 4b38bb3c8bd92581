"""The operator's own Prometheus metrics and the small HTTP server that serves them with /healthz."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from livenexus_operator.status import PHASES

log = logging.getLogger(__name__)


class OperatorMetrics:
    """Metrics of one operator process, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rooms = Gauge(
            "livenexus_operator_rooms", "TranscriptionRooms by status phase.", ["phase"], registry=r
        )
        self.reconcile_duration = Histogram(
            "livenexus_operator_reconcile_duration_seconds",
            "Wall time of one reconcile.",
            ["trigger"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.reconcile_errors = Counter(
            "livenexus_operator_reconcile_errors",
            "Reconciles that ended in an error, by reason.",
            ["reason"],
            registry=r,
        )
        self.scrape_errors = Counter(
            "livenexus_operator_worker_scrape_errors", "Failed scrapes of a worker's /metrics.", registry=r
        )
        self.status_writes = Counter(
            "livenexus_operator_status_writes",
            "Status writes by result: written, unchanged (skipped), conflict (the room moved since it was "
            "read), fenced (this replica could not prove it leads).",
            ["result"],
            registry=r,
        )
        self.requeues = Counter(
            "livenexus_operator_requeues",
            "Rooms put back for a later retry, by why: throttled (429), server_error (5xx), unreachable, "
            "conflict, error.",
            ["reason"],
            registry=r,
        )
        self.refresh_pass = Histogram(
            "livenexus_operator_refresh_pass_seconds",
            "Wall time of one refresher pass over the rooms that were due.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.refresh_rooms = Counter(
            "livenexus_operator_refreshed_rooms", "Rooms the refresher reconciled.", registry=r
        )
        self.webhooks = Counter(
            "livenexus_operator_webhooks",
            "LiveKit webhooks by event (known ones, else 'other' / 'invalid') and result: applied, duplicate, "
            "stale (about something that already ended), ignored (agents, unknown events), dropped (over a "
            "bound), bad_signature, unsigned, too_large, bad_request, rate_limited.",
            ["event", "result"],
            registry=r,
        )
        self.resyncs = Counter(
            "livenexus_operator_policy_resyncs",
            "Resyncs of the policy rooms against LiveKit's RoomService, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.policy_rooms = Gauge(
            "livenexus_operator_policy_rooms",
            "LiveKit rooms of all TranscriptionPolicies, by state: active (has a TranscriptionRoom), waiting "
            "(maxRooms reached), observed (rooms the operator tracks).",
            ["state"],
            registry=r,
        )
        self.policy_actions = Counter(
            "livenexus_operator_policy_actions",
            "TranscriptionRooms created or deleted for policies, by action and result (ok, exists, gone, error).",
            ["action", "result"],
            registry=r,
        )
        self.leader = Gauge(
            "livenexus_operator_leader", "1 while this replica holds the leader Lease.", registry=r
        )
        self._lock = threading.Lock()
        self._phase_by_room: dict[str, str] = {}
        for phase in PHASES:
            self.rooms.labels(phase=phase).set(0)

    def set_phase(self, room_uid: str, phase: str | None) -> None:
        """Record a room's phase (None when the room is gone) and recount the gauge."""
        with self._lock:
            if phase is None:
                self._phase_by_room.pop(room_uid, None)
            else:
                self._phase_by_room[room_uid] = phase
            counts = dict.fromkeys(PHASES, 0)
            for p in self._phase_by_room.values():
                counts[p] = counts.get(p, 0) + 1
        for p, n in counts.items():
            self.rooms.labels(phase=p).set(n)

    def keep_only(self, live_uids: set[str]) -> None:
        """Forget every room not in ``live_uids``: deletions the watch never showed us (missed while it
        reconnected, or while another replica led) must not stay counted forever."""
        with self._lock:
            gone = [uid for uid in self._phase_by_room if uid not in live_uids]
        for uid in gone:
            self.set_phase(uid, None)

    def phase_of(self, room_uid: str) -> str | None:
        """The phase the gauge counts ``room_uid`` under, None when it is not counted."""
        with self._lock:
            return self._phase_by_room.get(room_uid)

    def tracked_rooms(self) -> int:
        """How many rooms the phase gauge counts (for tests and the benchmark)."""
        with self._lock:
            return len(self._phase_by_room)


METRICS = OperatorMetrics()
"""The process-wide instance the handlers record into."""

HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


async def serve(
    metrics: OperatorMetrics, port: int, health: HealthCheck, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve ``/metrics`` and ``/healthz`` until the returned runner is cleaned up."""

    async def metrics_view(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_view(_: web.Request) -> web.Response:
        ok, reason = await health()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("operator metrics on %s:%d", host, port)
    return runner
