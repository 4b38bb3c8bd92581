"""The autoscaling policy of a room and the pure decision: resize the worker pod's CPU up, down, or hold.

Kubernetes >= 1.33 resizes a running pod's CPU in place (``pods/resize``, no restart), so the operator can
answer a busy room with more CPU within seconds; the worker's own tier downgrade is the last resort, used
only once ``maxCpu`` is reached or the node cannot grant more (the worker holds its tier meanwhile, see
``LIVENEXUS_AUTOSCALE_GRACE_S``). Memory is never resized.

:func:`decide` reads no clock, file or API: it gets the recorded samples of the worker's own metrics and
the pod's CPU state and returns a :class:`Decision`, so recorded series test it (tests/operator/
test_autoscale*.py). The loop around it is :mod:`livenexus_operator.autoscale_loop`, the API calls
:mod:`livenexus_operator.resize`.

Hysteresis: a step up needs overload (mean CPU use ÷ quota above the room's ``tiers.cpuHigh``, or lag
above ``tiers.lagHighMs``, or final latency p95 above :attr:`AutoscalePolicy.latency_high_ms`, or a worker
below its preferred tier that is not calm) over ``upAfterSeconds``; a step down needs the worker on its
preferred tier throughout and its mean CPU use, *predicted on the smaller allocation*, below ``tiers.cpuLow``
over the longer ``downAfterSeconds``. Since up means use > high x A and down to A means use < low x A <
high x A, a steady load can never trigger both: it cannot flap. Both windows restart after a resize.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, Literal

from livenexus_common.contract import DEFAULT_THRESHOLDS
from livenexus_operator.scrape import WorkerStats, histogram_quantile

TICK_S: Final = 2.0
"""How often the operator evaluates each autoscaled room (one scrape, one pod read)."""
MAX_GAP_S: Final = 10.0
"""A window counts as observed only if no two samples in it (nor the last and now) are further apart."""
LATENCY_HIGH_MS: Final = 1500.0
"""Final latency p95 that counts as overload: the edge of the chart's LiveNexusFinalLatencyHigh alert."""

_CPU = re.compile(r"^(?:(\d+)m|(\d+(?:\.\d{1,3})?))$")


class AutoscaleError(ValueError):
    """The autoscaling policy is unusable (only reachable when the API server's validation was bypassed)."""


def parse_cpu_millis(value: object, what: str = "cpu") -> int:
    """A CPU quantity (``500m``, ``2``, ``1.5``, or a number) in millicores; rejects anything else."""
    if isinstance(value, bool):
        raise AutoscaleError(f"{what} must be a CPU quantity like 500m or 2, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise AutoscaleError(f"{what} must be a positive CPU quantity, got {value!r}")
        return max(1, round(float(value) * 1000))
    text = str(value).strip()
    m = _CPU.match(text)
    if not m:
        raise AutoscaleError(f"{what} must be a CPU quantity like 500m or 2, got {value!r}")
    millis = int(m.group(1)) if m.group(1) is not None else round(float(m.group(2)) * 1000)
    if millis <= 0:
        raise AutoscaleError(f"{what} must be positive, got {value!r}")
    return millis


def format_cpu(millis: int) -> str:
    """Millicores as Kubernetes writes them: whole cores as ``2``, the rest as ``1500m``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


@dataclass(frozen=True)
class AutoscalePolicy:
    """spec.autoscaling of a room over the chart's worker.autoscaling, plus the room's tier thresholds."""

    enabled: bool = False
    """Resize the worker pod's CPU in place (needs Kubernetes >= 1.33 and a CPU limit on the worker)."""
    min_millis: int = 500
    """minCpu: the smallest CPU allocation (request = limit) the operator resizes to."""
    max_millis: int = 2000
    """maxCpu: the largest; the node's allocatable CPU caps it further."""
    step_millis: int = 500
    """step: CPU added or removed by one resize."""
    up_after_s: float = 6.0
    """upAfterSeconds: overload must show in every sample this long before a step up."""
    down_after_s: float = 60.0
    """downAfterSeconds: calm must show in every sample this long before a step down."""
    cooldown_s: float = 15.0
    """cooldownSeconds: no resize within this long after the previous one (its effect must show first)."""
    cpu_high: float = DEFAULT_THRESHOLDS.cpu_high
    """The room's tiers.cpuHigh: CPU pressure above it is overload (the worker would step down there)."""
    cpu_low: float = DEFAULT_THRESHOLDS.cpu_low
    """The room's tiers.cpuLow: predicted use on the smaller allocation must stay below it to step down."""
    lag_high_s: float = DEFAULT_THRESHOLDS.lag_high_ms / 1000.0
    """The room's tiers.lagHighMs in seconds: queued-final lag above it is overload."""
    lag_low_s: float = DEFAULT_THRESHOLDS.lag_low_ms / 1000.0
    """The room's tiers.lagLowMs in seconds: lag must stay below it to step down."""
    latency_high_ms: float = LATENCY_HIGH_MS
    """Final latency p95 (over the finals since the previous sample) above which the room is overloaded."""

    def __post_init__(self) -> None:
        if not 0 < self.min_millis <= self.max_millis:
            raise AutoscaleError(
                f"autoscaling.minCpu ({format_cpu(self.min_millis)}) must be positive and at most maxCpu "
                f"({format_cpu(self.max_millis)})")
        if self.step_millis <= 0:
            raise AutoscaleError("autoscaling.step must be positive")
        if min(self.up_after_s, self.down_after_s, self.cooldown_s) < 0:
            raise AutoscaleError("autoscaling upAfterSeconds, downAfterSeconds and cooldownSeconds must be >= 0")
        if not self.cpu_low < self.cpu_high or not self.lag_low_s < self.lag_high_s:
            raise AutoscaleError("the low marks must be below the high marks")

    @property
    def worker_grace_s(self) -> float:
        """LIVENEXUS_AUTOSCALE_GRACE_S: how much longer the worker holds its tier under pressure while its
        quota is below maxCpu. Covers the operator's window (or its cooldown after a previous step, which
        ever is longer), two ticks of sampling and a few seconds for the kubelet to apply the resize."""
        return max(self.up_after_s, self.cooldown_s) + 2 * TICK_S + 5.0

    @classmethod
    def resolve(
        cls,
        room: Mapping[str, Any] | None,
        defaults: Mapping[str, Any] | None,
        *,
        cpu_high: float = DEFAULT_THRESHOLDS.cpu_high,
        cpu_low: float = DEFAULT_THRESHOLDS.cpu_low,
        lag_high_ms: float = DEFAULT_THRESHOLDS.lag_high_ms,
        lag_low_ms: float = DEFAULT_THRESHOLDS.lag_low_ms,
    ) -> AutoscalePolicy:
        """Each field from the room if it sets it, else the chart's default, else the built-in one."""
        merged: dict[str, Any] = {**dict(defaults or {}), **{k: v for k, v in (room or {}).items() if v is not None}}
        d = cls()

        def seconds(key: str, default: float) -> float:
            value = merged.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
                raise AutoscaleError(f"autoscaling.{key} must be a number of seconds in [0, 3600], got {value!r}")
            return float(value)

        enabled = merged.get("enabled", d.enabled)
        if not isinstance(enabled, bool):
            raise AutoscaleError(f"autoscaling.enabled must be true or false, got {enabled!r}")
        return cls(
            enabled=enabled,
            min_millis=parse_cpu_millis(merged.get("minCpu", format_cpu(d.min_millis)), "autoscaling.minCpu"),
            max_millis=parse_cpu_millis(merged.get("maxCpu", format_cpu(d.max_millis)), "autoscaling.maxCpu"),
            step_millis=parse_cpu_millis(merged.get("step", format_cpu(d.step_millis)), "autoscaling.step"),
            up_after_s=seconds("upAfterSeconds", d.up_after_s),
            down_after_s=seconds("downAfterSeconds", d.down_after_s),
            cooldown_s=seconds("cooldownSeconds", d.cooldown_s),
            cpu_high=cpu_high,
            cpu_low=cpu_low,
            lag_high_s=lag_high_ms / 1000.0,
            lag_low_s=lag_low_ms / 1000.0,
        )


@dataclass(frozen=True)
class Sample:
    """One scrape of the worker, as the decision reads it; None where the worker did not export it."""

    at: float
    """Monotonic time of the scrape."""
    cpu_ratio: float | None = None
    """livenexus_process_cpu_ratio: the worker's CPU use ÷ its quota."""
    cpu_pressure: float | None = None
    """livenexus_cpu_pressure: the worker's tier-policy signal (use, PSI stall)."""
    lag_s: float | None = None
    """livenexus_lag_seconds: age of the oldest queued inference job."""
    p95_ms: float | None = None
    """Final latency p95 over the finals since the previous scrape (None when there were none)."""
    active_speakers: int | None = None
    """livenexus_active_speakers."""
    tier: int | None = None
    """livenexus_tier_index (0 = preferred)."""


ResizeState = Literal["", "InProgress", "Deferred", "Infeasible"]


@dataclass(frozen=True)
class PodCpu:
    """The worker pod's CPU as the API server and the kubelet report it."""

    allocated_millis: int
    """CPU limit in force (the container status' resources once the kubelet applied it, else the spec)."""
    desired_millis: int
    """CPU limit in the pod spec (differs from :attr:`allocated_millis` while a resize is pending)."""
    resize: ResizeState = ""
    """The kubelet's verdict on a pending resize: PodResizePending reason Deferred/Infeasible, or
    PodResizeInProgress; '' when none is pending."""
    node_allocatable_millis: int | None = None
    """The node's allocatable CPU (None when unknown: not scheduled, or no RBAC to read nodes)."""


Action = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Decision:
    """What to do with the pod's CPU now."""

    action: Action
    """up, down (also: withdraw a resize the node cannot grant), or hold."""
    target_millis: int
    """The CPU to set (for hold: the desired CPU as it stands)."""
    reason: str
    """Why, for Events and the room's status."""


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


@dataclass(frozen=True)
class WindowStats:
    """A window of samples reduced to what the decision compares. Means, not every sample: the worker's
    gauges are 0.5 s snapshots of bursty inference (a decode saturates the quota, then nothing runs), so
    an overloaded worker still shows idle samples and a comfortable one busy samples."""

    pressure: float | None
    """Mean CPU pressure."""
    ratio: float | None
    """Mean CPU use ÷ quota."""
    lag_s: float | None
    """Mean queued-job lag."""
    p95_ms: float | None
    """Highest per-scrape final latency p95."""
    tiers: tuple[int, ...]
    """Tier indexes seen."""

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> WindowStats:
        p95 = [s.p95_ms for s in samples if s.p95_ms is not None]
        return cls(_mean([s.cpu_pressure for s in samples]), _mean([s.cpu_ratio for s in samples]),
                   _mean([s.lag_s for s in samples]), max(p95) if p95 else None,
                   tuple(s.tier for s in samples if s.tier is not None))


def overloaded(w: WindowStats, p: AutoscalePolicy) -> str | None:
    """Why the window shows overload, or None.

    CPU counts as overload when the worker uses its quota (use ÷ quota above the high mark), or when it is
    busy (above the low mark) and its tasks also wait for a CPU. Pressure alone is not enough: an idle
    worker on a contended node (or one exporting the node-wide stall, as workers before the cgroup-only
    PSI fix did) would be given CPU it cannot use.
    """
    if w.ratio is not None and w.ratio > p.cpu_high:
        return f"CPU use {w.ratio:.2f} of the quota > {p.cpu_high:g}"
    if w.pressure is not None and w.pressure > p.cpu_high and w.ratio is not None and w.ratio >= p.cpu_low:
        return f"CPU pressure {w.pressure:.2f} > {p.cpu_high:g} at use {w.ratio:.2f}"
    if w.lag_s is not None and w.lag_s > p.lag_high_s:
        return f"inference lag {w.lag_s * 1000:.0f} ms > {p.lag_high_s * 1000:.0f} ms"
    if w.p95_ms is not None and w.p95_ms > p.latency_high_ms:
        return f"final latency p95 {w.p95_ms:.0f} ms > {p.latency_high_ms:.0f} ms"
    if w.tiers and min(w.tiers) > 0 and w.ratio is not None and w.ratio >= p.cpu_low:
        # Degraded and busy: the worker cannot step back up with what it has.
        return f"worker on tier {w.tiers[-1]} using {w.ratio:.2f} of its quota >= {p.cpu_low:g}"
    return None


def calm_after_step_down(w: WindowStats, p: AutoscalePolicy, current: int, smaller: int) -> bool:
    """True if the window says the worker would stay calm on ``smaller`` millicores instead of ``current``."""
    if not w.tiers or max(w.tiers) > 0 or w.ratio is None:
        return False
    if w.lag_s is not None and w.lag_s >= p.lag_low_s:
        return False
    if w.p95_ms is not None and w.p95_ms > p.latency_high_ms:
        return False
    return w.ratio * current / smaller < p.cpu_low


def window(samples: Sequence[Sample], now: float, length_s: float) -> list[Sample] | None:
    """The samples covering the last ``length_s`` seconds (from the last one taken before that span), or
    None if the span was not observed: samples start later (a resize cleared them), or there is a gap."""
    if not samples or now - samples[-1].at > MAX_GAP_S:
        return None
    start = now - length_s
    if samples[0].at > start:
        return None
    first = max(i for i, s in enumerate(samples) if s.at <= start)
    span = list(samples[first:])
    if any(b.at - a.at > MAX_GAP_S for a, b in pairwise(span)):
        return None
    return span


def decide(
    policy: AutoscalePolicy,
    samples: Sequence[Sample],
    pod: PodCpu,
    now: float,
    *,
    last_resize_at: float | None = None,
    ceiling_millis: int | None = None,
) -> Decision:
    """The next step for one room; ``samples`` are those taken since the last resize, oldest first.

    ``ceiling_millis`` is the most the node granted before refusing more (an Infeasible resize), if any.
    """
    p = policy
    current = pod.allocated_millis
    if not p.enabled:
        return Decision("hold", pod.desired_millis, "autoscaling is disabled")
    if pod.desired_millis != current:
        if pod.resize == "Infeasible":
            # The node will never fit it; withdraw it so the spec says what actually runs.
            return Decision("down", current, f"the node cannot grant {format_cpu(pod.desired_millis)} (Infeasible)")
        state = pod.resize or "pending"
        return Decision("hold", pod.desired_millis,
                        f"resize {format_cpu(current)} → {format_cpu(pod.desired_millis)} is {state}")
    hi = p.max_millis
    limits = [f"maxCpu {format_cpu(p.max_millis)}"]
    if pod.node_allocatable_millis is not None and pod.node_allocatable_millis < hi:
        hi = pod.node_allocatable_millis
        limits.append(f"node allocatable {format_cpu(hi)}")
    if ceiling_millis is not None and ceiling_millis < hi:
        hi = ceiling_millis
        limits.append(f"the node refused more than {format_cpu(hi)}")
    lo = min(p.min_millis, hi)
    if current < lo:
        return Decision("up", lo, f"{format_cpu(current)} is below minCpu {format_cpu(p.min_millis)}")
    if current > p.max_millis:
        return Decision("down", p.max_millis, f"{format_cpu(current)} is above maxCpu {format_cpu(p.max_millis)}")
    if last_resize_at is not None and now - last_resize_at < p.cooldown_s:
        return Decision("hold", current, f"cooldown after the last resize ({p.cooldown_s:g} s)")

    recent = window(samples, now, p.up_after_s)
    why = overloaded(WindowStats.of(recent), p) if recent else None
    if why:
        if current >= hi:
            return Decision("hold", current, f"overloaded ({why}) at the limit ({limits[-1]}): "
                                             "the worker may step its tier down")
        return Decision("up", min(hi, current + p.step_millis), f"{why} over {p.up_after_s:g} s")
    smaller = max(lo, current - p.step_millis)
    calm = window(samples, now, p.down_after_s) if smaller < current else None
    if calm:
        w = WindowStats.of(calm)
        if calm_after_step_down(w, p, current, smaller):
            use = (w.ratio or 0.0) * current / 1000.0
            return Decision("down", smaller, f"use {use:.2f} cores over {p.down_after_s:g} s would be below "
                                             f"{p.cpu_low:g} of {format_cpu(smaller)}")
    return Decision("hold", current, "within the band")


def sample_of(at: float, stats: WorkerStats, previous_buckets: Sequence[tuple[float, float]] = ()) -> Sample:
    """A scrape as a :class:`Sample`; the p95 is over the finals since ``previous_buckets`` (the previous
    scrape's cumulative buckets of the same worker), not the worker's whole life, which would hide a room
    that just became slow behind hours of fast finals."""
    before = dict(previous_buckets)
    delta = [(le, count - before.get(le, 0.0)) for le, count in stats.final_latency_buckets]
    p95 = None
    # A counter that went backwards is a restarted worker: its buckets since then are all there is.
    if delta and any(d < 0 for _, d in delta):
        delta = list(stats.final_latency_buckets)
    if delta and delta[-1][1] > 0:
        q = histogram_quantile(0.95, delta)
        p95 = None if q is None else q * 1000.0
    return Sample(at=at, cpu_ratio=stats.cpu_ratio, cpu_pressure=stats.cpu_pressure, lag_s=stats.lag_seconds,
                  p95_ms=p95, active_speakers=stats.active_speakers, tier=stats.tier_index)
