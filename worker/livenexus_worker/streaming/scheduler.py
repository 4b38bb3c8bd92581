"""One inference thread per process, shared by every stream.

CTranslate2 already uses every core for one request, so running requests in parallel only adds contention.
Finals always go first; a stream has at most one pending partial (a newer request replaces it), and partials
that waited too long are dropped, so queueing delay cannot grow without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A unit of inference work."""

    run: Callable[[], None]
    """Does the work and emits its own events; exceptions are logged, never propagated."""
    kind: str
    """'final' or 'partial'."""
    created: float = field(default_factory=time.monotonic)
    """When it was queued (for lag)."""
    started: float = 0.0
    """When the inference thread took it (monotonic; 0 while queued)."""


@dataclass
class SchedulerStats:
    """Counters read by metrics and benchmarks."""

    finals_run: int = 0
    """Final jobs executed."""
    partials_run: int = 0
    """Partial jobs executed."""
    partials_coalesced: int = 0
    """Partial requests replaced by a newer one before they ran."""
    partials_stale: int = 0
    """Partial jobs dropped because they waited longer than the staleness limit."""
    errors: int = 0
    """Jobs that raised."""
    busy_s: float = 0.0
    """Total time spent running jobs."""


class InferenceScheduler:
    """Priority queue in front of a single worker thread."""

    def __init__(self, max_partial_age_s: float = 1.0, between_jobs: Callable[[], None] | None = None) -> None:
        self.max_partial_age_s = max_partial_age_s
        self.stats = SchedulerStats()
        self._between_jobs = between_jobs
        self._cv = threading.Condition()
        self._finals: deque[Job] = deque()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._running = False
        self.running: Job | None = None
        """The job the inference thread is running (read by that thread's own jobs, for stage stamps)."""
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="livenexus-inference", daemon=True)
        self._thread.start()

    def submit_final(self, job: Job) -> None:
        with self._cv:
            self._finals.append(job)
            self._cv.notify()

    def submit_partial(self, key: str, job: Job) -> None:
        with self._cv:
            if self._partials.pop(key, None) is not None:
                self.stats.partials_coalesced += 1
            self._partials[key] = job
            self._cv.notify()

    def depth(self) -> int:
        with self._cv:
            return len(self._finals) + len(self._partials)

    def lag_s(self, finals_only: bool = False) -> float:
        """Age of the oldest queued job (0 when empty).

        Partials wait up to ``max_partial_age_s`` by design, so the tier policy reads the finals-only lag:
        a final waiting is what a listener feels.
        """
        now = time.monotonic()
        with self._cv:
            oldest = [j.created for j in self._finals]
            if not finals_only:
                oldest += [j.created for j in self._partials.values()]
        return max(0.0, now - min(oldest)) if oldest else 0.0

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._finals or self._partials or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.wait_idle(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    def _next(self) -> Job | None:
        with self._cv:
            while True:
                if self._finals:
                    job = self._finals.popleft()
                elif self._partials:
                    _key, job = self._partials.popitem(last=False)
                    if time.monotonic() - job.created > self.max_partial_age_s:
                        self.stats.partials_stale += 1
                        continue
                elif self._closed:
                    return None
                else:
                    self._cv.notify_all()  # wake wait_idle
                    self._cv.wait()  # silence costs nothing: no polling
                    continue
                self._running = True
                return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            t0 = time.perf_counter()
            job.started, self.running = time.monotonic(), job
            try:
                job.run()
            except Exception:
                self.stats.errors += 1
                log.exception("inference job failed (%s)", job.kind)
            finally:
                self.running = None
                self.stats.busy_s += time.perf_counter() - t0
                if job.kind == "final":
                    self.stats.finals_run += 1
                else:
                    self.stats.partials_run += 1
                if self._between_jobs is not None:
                    try:
                        self._between_jobs()
                    except Exception:
                        log.exception("between-jobs hook failed")
                with self._cv:
                    self._running = False
                    self._cv.notify_all()
