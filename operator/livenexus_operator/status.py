"""Pure status logic: conditions, phase, and the status patch built from what was observed."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from livenexus_operator.scrape import WorkerStats

READY = "Ready"
WORKER_AVAILABLE = "WorkerAvailable"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, WORKER_AVAILABLE, DEGRADED)

PHASES = ("Pending", "Running", "Suspended", "Degraded", "Error")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    """One metav1.Condition-shaped entry."""

    type: str
    """Ready, WorkerAvailable or Degraded."""
    status: str
    """'True', 'False' or 'Unknown'."""
    reason: str
    """CamelCase machine-readable reason."""
    message: str = ""
    """Human-readable detail."""


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Sequence[Condition],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Apply ``updates`` over ``existing``; lastTransitionTime moves only when the status flips.

    The result always lists the known types in a fixed order so that an unchanged status produces an
    identical patch (no write, no watch event, no reconcile loop).
    """
    stamp = now or now_iso()
    by_type: dict[str, dict[str, Any]] = {
        str(c.get("type")): dict(c) for c in existing or () if c.get("type")
    }
    for cond in updates:
        old = by_type.get(cond.type)
        transition = (
            old["lastTransitionTime"]
            if old and old.get("status") == cond.status and old.get("lastTransitionTime")
            else stamp
        )
        by_type[cond.type] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }
    ordered = [by_type[t] for t in CONDITION_TYPES if t in by_type]
    ordered += [c for t, c in sorted(by_type.items()) if t not in CONDITION_TYPES]
    return ordered


@dataclass(frozen=True)
class Observation:
    """What one reconcile saw; the input of :func:`build_status`."""

    generation: int
    """metadata.generation that was reconciled."""
    room: str
    """Effective room name."""
    suspended: bool
    """spec.suspend."""
    worker_name: str = ""
    """Name of the worker Deployment ('' when it could not be created)."""
    namespace: str = ""
    """Namespace of the room."""
    secret_problem: str | None = None
    """Why the credentials are unusable, None when they are fine."""
    secret_reason: str = "SecretMissing"
    """Ready reason for :attr:`secret_problem`: SecretMissing, or a policy refusal (SecretNotAllowed,
    LiveKitUrlNotAllowed) that only an admin or a spec change can lift."""
    spec_problem: str | None = None
    """Why the spec cannot be rendered, None when it can."""
    available_replicas: int = 0
    """Deployment status.availableReplicas."""
    stats: WorkerStats | None = None
    """Last successful scrape, None if none."""
    ladder_size: int = 0
    """Number of tiers (for messages)."""


def _phase(obs: Observation, degraded: bool) -> str:
    if obs.spec_problem or obs.secret_problem:
        return "Error"
    if obs.suspended:
        return "Suspended"
    if obs.available_replicas < 1:
        return "Pending"
    return "Degraded" if degraded else "Running"


def conditions_for(obs: Observation) -> list[Condition]:
    stats = obs.stats
    degraded = bool(stats and stats.tier_index is not None and stats.tier_index > 0 and not obs.suspended)
    out: list[Condition] = []
    if obs.spec_problem:
        out.append(Condition(READY, "False", "InvalidSpec", obs.spec_problem))
    elif obs.secret_problem:
        out.append(Condition(READY, "False", obs.secret_reason, obs.secret_problem))
    elif obs.suspended:
        out.append(
            Condition(READY, "False", "Suspended", "spec.suspend is true; the worker is scaled to zero")
        )
    elif obs.available_replicas >= 1:
        out.append(Condition(READY, "True", "WorkerReady", f"worker is transcribing room {obs.room!r}"))
    else:
        out.append(
            Condition(READY, "False", "WorkerUnavailable", "waiting for the worker pod to become ready")
        )

    if obs.suspended:
        out.append(Condition(WORKER_AVAILABLE, "False", "Suspended", "scaled to zero"))
    elif obs.available_replicas >= 1:
        out.append(
            Condition(
                WORKER_AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                f"deployment {obs.worker_name} has an available replica",
            )
        )
    elif obs.worker_name:
        out.append(
            Condition(
                WORKER_AVAILABLE,
                "False",
                "NoAvailableReplica",
                f"deployment {obs.worker_name} has no available replica",
            )
        )
    else:
        out.append(Condition(WORKER_AVAILABLE, "False", "NotCreated", "no worker deployment yet"))

    if degraded and stats is not None:
        out.append(
            Condition(
                DEGRADED,
                "True",
                "TierDowngraded",
                f"worker runs tier {stats.tier_index} ({stats.tier_name}) of {obs.ladder_size or '?'}: "
                "CPU or inference lag forced a cheaper model/decoding setting",
            )
        )
    elif stats is not None and stats.tier_index is not None:
        out.append(Condition(DEGRADED, "False", "PreferredTier", "worker runs the preferred tier"))
    else:
        out.append(Condition(DEGRADED, "Unknown", "NoMetrics", "worker metrics not scraped yet"))
    return out


def build_status(
    obs: Observation, previous: Mapping[str, Any] | None, now: str | None = None
) -> dict[str, Any]:
    """The full status to patch, carrying over previous metric values when no fresh scrape exists."""
    prev = dict(previous or {})
    conds = conditions_for(obs)
    degraded = any(c.type == DEGRADED and c.status == "True" for c in conds)
    status: dict[str, Any] = {
        "phase": _phase(obs, degraded),
        "observedGeneration": obs.generation,
        "room": obs.room,
        "conditions": merge_conditions(prev.get("conditions"), conds, obs.generation, now),
    }
    if obs.worker_name:
        status["workerRef"] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": obs.worker_name,
            "namespace": obs.namespace,
        }
    s = obs.stats
    if s is not None:
        fields: dict[str, Any] = {
            "currentModel": s.model,
            "currentTier": s.tier_index,
            "currentTierName": s.tier_name,
            "finalLatencyP50Ms": s.final_latency_p50_ms,
            "finalLatencyP95Ms": s.final_latency_p95_ms,
            "realtimeFactor": s.realtime_factor,
            "activeSpeakers": s.active_speakers,
            "lastScrapeTime": now or now_iso(),
        }
        status.update({k: v for k, v in fields.items() if v is not None})
    return status


def tier_change(previous: Mapping[str, Any] | None, stats: WorkerStats | None) -> tuple[int, int] | None:
    """(old, new) tier index when a scrape shows a different tier than the status had, else None."""
    if stats is None or stats.tier_index is None or not previous:
        return None
    old = previous.get("currentTier")
    if isinstance(old, int) and old != stats.tier_index:
        return old, stats.tier_index
    return None


VOLATILE_FIELDS = frozenset({"lastScrapeTime"})
"""Status fields that change on every scrape by themselves; alone they are no reason to write."""


def _age_s(stamp: object, now: datetime.datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    return (now - then).total_seconds()


def needs_write(
    changes: Mapping[str, Any], previous: Mapping[str, Any], heartbeat_s: float, now: datetime.datetime | None = None
) -> bool:
    """Whether ``changes`` (the status keys that differ) are worth a write.

    A write costs an etcd write and a watch event to every watcher (kopf included) per room per refresh;
    with only the scrape stamp moving, the room is rewritten only once the stored stamp is ``heartbeat_s``
    old (or unreadable), so ``lastScrapeTime`` still proves the operator is scraping.
    """
    if any(k not in VOLATILE_FIELDS for k in changes):
        return True
    if not changes:
        return False
    age = _age_s(previous.get("lastScrapeTime"), now or datetime.datetime.now(datetime.UTC))
    return age is None or age >= heartbeat_s or age < 0
