"""When to move along the tier ladder: a pure, clock-injected policy plus the glue the runtime uses.

:class:`TierPolicy` only looks at the numbers it is given (time, CPU pressure, lag) and never reads a
clock or a file, so its tests run on a fake clock. :class:`TierManager` adds what the runtime needs:
a pending change that is only committed between utterances, logging, and a metrics hook.
:class:`TierController` ticks a manager on a thread, with its signals and effect passed in.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from livenexus_common.contract import DEFAULT_THRESHOLDS
from livenexus_worker.core.tier_spec import TierSpec

log = logging.getLogger(__name__)

_T = DEFAULT_THRESHOLDS


@dataclass(frozen=True)
class TierOptions:
    """Thresholds and windows of :class:`TierPolicy` (defaults: the contract's, as the operator renders them)."""

    levels: int
    """Number of rungs on the ladder (index 0 is the preferred, most expensive tier)."""
    cpu_high: float = _T.cpu_high
    """CPU pressure above which the down window runs."""
    cpu_low: float = _T.cpu_low
    """CPU pressure below which (together with lag) the up window runs."""
    lag_high_s: float = _T.lag_high_ms / 1000.0
    """Inference lag (age of the oldest queued job) above which the down window runs."""
    lag_low_s: float = _T.lag_low_ms / 1000.0
    """Lag below which (together with CPU) the up window runs."""
    down_window_s: float = _T.down_window_s
    """Pressure must hold this long before stepping down; shorter blips are ignored."""
    up_window_s: float = _T.up_window_s
    """Calm must hold this long before stepping up; longer than the down window so a tier that only
    just fits is not retried every few seconds."""
    cooldown_s: float = _T.cooldown_s
    """No change within this long after the previous one (the new tier's effect must show first)."""
    smoothing_s: float = 2.0
    """Time constant of exponential moving averages of CPU and lag taken before the thresholds (0: off).
    Both signals are saw-toothed: a decode saturates every core and the oldest job ages while it runs,
    then both drop to nothing when the queue drains. Raw 0.5 s samples of a comfortably loaded worker
    cross both thresholds, so "below low for the whole up window" would almost never hold, and an
    overloaded one whose queue drains every few seconds would never look "above high" for a window."""
    autoscale_max_cores: float = 0.0
    """The operator may resize the pod's CPU up to this many cores (LIVENEXUS_AUTOSCALE_MAX_CPU; 0: no
    autoscaler). More CPU is the preferred answer to pressure, a cheaper tier the last one."""
    autoscale_grace_s: float = 0.0
    """While the quota is below :attr:`autoscale_max_cores`, pressure must hold this much longer than the
    down window before stepping down: the time the operator needs to notice and resize. When it runs out
    (the node could not grant the CPU, or no operator acts) the worker steps down as it would without one."""

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError("a tier ladder needs at least one level")
        # The gap between low and high is the hysteresis band; without it a load sitting at the
        # threshold would flap.
        if not self.cpu_low < self.cpu_high:
            raise ValueError(f"cpu_low ({self.cpu_low}) must be below cpu_high ({self.cpu_high})")
        if not self.lag_low_s < self.lag_high_s:
            raise ValueError(f"lag_low_s ({self.lag_low_s}) must be below lag_high_s ({self.lag_high_s})")
        if min(self.down_window_s, self.up_window_s, self.cooldown_s, self.smoothing_s) < 0:
            raise ValueError("windows and cooldown must not be negative")
        if min(self.autoscale_max_cores, self.autoscale_grace_s) < 0:
            raise ValueError("autoscale_max_cores and autoscale_grace_s must not be negative")


class TierPolicy:
    """Hysteresis over (CPU, lag) samples; :meth:`observe` says when to step one rung.

    ``available(i)`` lets the caller mark rungs it cannot use (a model that failed to load); they are
    skipped in both directions and listed in :attr:`skipped` after the change that jumped them.
    """

    def __init__(
        self,
        options: TierOptions,
        *,
        start: int = 0,
        available: Callable[[int], bool] | None = None,
    ) -> None:
        self.options = options
        self._available = available if available is not None else (lambda _i: True)
        self.current = min(max(start, 0), options.levels - 1)
        self.skipped: tuple[int, ...] = ()
        """Unavailable rungs jumped over by the last change."""
        self._hot_since: float | None = None
        self._calm_since: float | None = None
        self._last_change: float | None = None
        self._avg: tuple[float, float] | None = None
        self._avg_at = 0.0
        self._cores: float | None = None
        self._grace_spent = False  # the autoscale grace was waited out at this quota: no second wait
        self._contended_at: float | None = None

    @property
    def signals(self) -> tuple[float, float] | None:
        """The smoothed (cpu, lag) the last decision was based on."""
        return self._avg

    def _smooth(self, now: float, cpu: float, lag_s: float) -> tuple[float, float]:
        tau = self.options.smoothing_s
        if self._avg is None or tau <= 0:
            self._avg = (cpu, lag_s)
        else:
            alpha = 1.0 - math.exp(-max(0.0, now - self._avg_at) / tau)
            c, lag = self._avg
            self._avg = (c + alpha * (cpu - c), lag + alpha * (lag_s - lag))
        self._avg_at = now
        return self._avg

    def _next(self, step: int) -> tuple[int | None, tuple[int, ...]]:
        skipped: list[int] = []
        i = self.current + step
        while 0 <= i < self.options.levels:
            if self._available(i):
                return i, tuple(skipped)
            skipped.append(i)
            i += step
        return None, tuple(skipped)

    def headroom(self, cores: float | None) -> bool:
        """True while an autoscaler may still give us more CPU than ``cores`` (our quota now)."""
        o = self.options
        return o.autoscale_max_cores > 0 and cores is not None and cores < o.autoscale_max_cores - 1e-3

    def cpu_counts(self, now: float) -> bool:
        """Whether CPU pressure is a sign of overload now: streams contended for decode lanes within the
        last down window."""
        return self._contended_at is not None and now - self._contended_at < self.options.down_window_s

    def observe(self, now: float, cpu: float, lag_s: float, cores: float | None = None, *,
                contended: bool = True) -> int | None:
        """Feed one sample; returns the new tier index when a change is due (and adopts it), else None.

        ``cores`` is the CPU budget the sample was taken under (the cgroup quota); None when unknown.
        ``contended`` says whether more streams were speaking than decodes can run at once. When none were
        for a whole down window, only lag counts: a stream's decodes run one after another, so while each
        speaker has a lane of its own a busy CPU is that speaker's decodes keeping up (one speaker's
        two-thread decodes hold both cores of a two-core pod ~85 % of the time at lag 0), and any
        shortfall shows as its own finals waiting. Stepping down then cost WER for nothing.
        """
        o = self.options
        if contended:
            self._contended_at = now
        if cores is not None and self._cores is not None and abs(cores - self._cores) > 1e-3:
            # The pod was resized: windows measured against the old budget say nothing about the new one,
            # and an autoscaler that acts is worth waiting for again.
            self._hot_since = self._calm_since = None
            self._grace_spent = False
        if cores is not None:
            self._cores = cores
        cpu, lag_s = self._smooth(now, cpu, lag_s)
        cpu_counts = self.cpu_counts(now)
        hot = (cpu_counts and cpu > o.cpu_high) or lag_s > o.lag_high_s
        calm = (not cpu_counts or cpu < o.cpu_low) and lag_s < o.lag_low_s
        # A window is "held" only if every sample since it started agreed; any other sample restarts it.
        self._hot_since = (self._hot_since if self._hot_since is not None else now) if hot else None
        self._calm_since = (self._calm_since if self._calm_since is not None else now) if calm else None

        if self._last_change is not None and now - self._last_change < o.cooldown_s:
            return None
        target: int | None = None
        skipped: tuple[int, ...] = ()
        # The grace is waited out once per overload: if the quota did not grow meanwhile (the node cannot
        # grant it, or no operator acts), waiting again before each further step only let the backlog grow
        # (measured on the local node with five speakers: every step ~25 s late).
        graced = self.headroom(cores) and not self._grace_spent
        down_after = o.down_window_s + (o.autoscale_grace_s if graced else 0.0)
        if self._hot_since is not None and now - self._hot_since >= down_after:
            target, skipped = self._next(+1)
            self._grace_spent = self._grace_spent or (graced and target is not None)
        elif self._calm_since is not None and now - self._calm_since >= o.up_window_s:
            target, skipped = self._next(-1)
            self._grace_spent = self._grace_spent and target is None
        if target is None:
            return None
        self.current = target
        self.skipped = skipped
        self._last_change = now
        # Samples taken under the old tier say nothing about the new one.
        self._hot_since = self._calm_since = None
        return target

    def set_current(self, index: int, now: float | None = None) -> None:
        """Force a tier (e.g. the preferred one failed to load); starts the cooldown if ``now`` is given."""
        self.current = min(max(index, 0), self.options.levels - 1)
        self._hot_since = self._calm_since = None
        if now is not None:
            self._last_change = now


class TierListener(Protocol):
    """What :class:`TierManager` tells about committed changes (``WorkerMetrics`` satisfies it)."""

    def set_tier(self, index: int, spec: TierSpec) -> None: ...


class TierManager:
    """Runtime glue: the policy decides, the change waits until no utterance is in flight.

    Call :meth:`request` on every control tick with fresh signals, then :meth:`commit_if_idle` with
    whether any stream is inside an utterance; swapping the model mid-utterance would decode one
    utterance's final with a different model than its partials.
    """

    def __init__(
        self,
        tiers: Sequence[TierSpec],
        options: TierOptions,
        *,
        listener: TierListener | None = None,
        unavailable: set[int] | None = None,
    ) -> None:
        if len(tiers) != options.levels:
            raise ValueError(f"{len(tiers)} tiers but options.levels={options.levels}")
        self.tiers = tuple(tiers)
        self.unavailable: set[int] = set(unavailable or ())
        if len(self.unavailable) >= len(self.tiers):
            raise ValueError("every tier is unavailable")
        start = next(i for i in range(len(self.tiers)) if i not in self.unavailable)
        self.policy = TierPolicy(options, start=start, available=lambda i: i not in self.unavailable)
        self.active = start
        """The tier the runtime is using now."""
        self.pending: int | None = None
        """A decided but not yet committed change, or None."""
        self._listener = listener
        if listener is not None:
            listener.set_tier(self.active, self.tiers[self.active])

    @property
    def spec(self) -> TierSpec:
        return self.tiers[self.active]

    def request(self, now: float, cpu: float, lag_s: float, cores: float | None = None, *,
                contended: bool = True) -> int | None:
        """Feed the policy; returns the pending index (None if the active tier stays)."""
        target = self.policy.observe(now, cpu, lag_s, cores, contended=contended)
        if target is not None:
            for i in self.policy.skipped:
                log.warning("tier %d (%s) is unavailable; skipping it", i, self.tiers[i].name)
            log.info(
                "tier change due: %d (%s) -> %d (%s); cpu=%.2f lag=%.2fs (cpu %s)",
                self.active, self.tiers[self.active].name, target, self.tiers[target].name, cpu, lag_s,
                "counts" if self.policy.cpu_counts(now) else "ignored: no stream waited for a lane")
        # The policy may have moved back to the active rung before we got to commit.
        self.pending = self.policy.current if self.policy.current != self.active else None
        return self.pending

    def commit_if_idle(self, in_utterance: bool) -> int | None:
        """Adopt the pending tier unless an utterance is in flight; returns the new index if it changed."""
        if self.pending is None or in_utterance:
            return None
        old, self.active, self.pending = self.active, self.pending, None
        log.info("tier %s: %d (%s) -> %d (%s)", "down" if self.active > old else "up",
                 old, self.tiers[old].name, self.active, self.spec.name)
        if self._listener is not None:
            self._listener.set_tier(self.active, self.spec)
        return self.active

    def mark_unavailable(self, index: int, now: float | None = None) -> int:
        """Record that a tier cannot be used (its model failed to load); returns the tier to use instead.

        If it is the active (or pending) tier, the nearest usable rung below it is chosen, else the
        nearest above; the change is applied immediately since the failed tier cannot run anyway.
        """
        self.unavailable.add(index)
        if len(self.unavailable) >= len(self.tiers):
            raise RuntimeError("every tier is unavailable")
        log.warning("tier %d (%s) marked unavailable", index, self.tiers[index].name)
        if self.pending == index:
            self.pending = None
        if self.active != index:
            if self.policy.current == index:
                self.policy.set_current(self.active, now)
            return self.active
        below = [i for i in range(index + 1, len(self.tiers)) if i not in self.unavailable]
        above = [i for i in range(index - 1, -1, -1) if i not in self.unavailable]
        replacement = (below or above)[0]
        self.policy.set_current(replacement, now)
        self.active = replacement
        if self._listener is not None:
            self._listener.set_tier(self.active, self.spec)
        return self.active


class TierController:
    """Feeds a :class:`TierManager` from live signals every ``interval_s`` on a daemon thread.

    A thread of its own rather than the inference thread's between-jobs hook: while the room is silent
    no job runs, and the calm that allows stepping up must still be observed.
    """

    def __init__(
        self,
        manager: TierManager,
        signals: Callable[[], tuple[float, float]],
        apply: Callable[[int], None],
        *,
        in_utterance: Callable[[], bool] = lambda: False,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cores: Callable[[], float] | None = None,
        contended: Callable[[], bool] | None = None,
    ) -> None:
        self.manager = manager
        self._cores = cores
        self._contended = contended
        self._signals = signals
        self._apply = apply
        self._in_utterance = in_utterance
        self._interval = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: list[tuple[float, float, float, float, float, int]] = []
        """(time, cpu, lag, smoothed cpu, smoothed lag, active tier) per tick; the last 10 000 ticks."""

    def tick(self) -> int | None:
        """One control step; returns the tier applied, if it changed."""
        cpu, lag = self._signals()
        now = self._clock()
        self.manager.request(now, cpu, lag, self._cores() if self._cores is not None else None,
                             contended=self._contended() if self._contended is not None else True)
        new = self.manager.commit_if_idle(self._in_utterance())
        if new is not None:
            self._apply(new)
        smooth_cpu, smooth_lag = self.manager.policy.signals or (cpu, lag)
        self.history.append((now, cpu, lag, smooth_cpu, smooth_lag, self.manager.active))
        del self.history[:-10_000]
        return new

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:
                log.exception("tier control tick failed")

    def start(self) -> TierController:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="livenexus-tiers", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
