"""One inference thread per process, shared by every stream.

CTranslate2 already uses every core for one request, so running requests in parallel only adds contention.
Finals always go first; a stream has at most one pending partial (a newer request replaces it), and partials
that waited too long are dropped, so queueing delay cannot grow without bound.

Finals of different streams waiting together run as one batch (``inference/batching.py``): one CTranslate2
call decodes them all, measured 2.1-2.3x faster for four than one after another. A stream's own finals keep
their order: at most one of them is in a batch, the earliest.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from livenexus_worker.inference.batching import Batcher

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
    key: str = ""
    """The stream it belongs to: finals of different streams may run in one batch, a stream's own never
    together ('' = never batched)."""


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
    batches: int = 0
    """Groups of two or more jobs run together."""
    batched_jobs: int = 0
    """Jobs that ran in such a group."""


class InferenceScheduler:
    """Priority queue in front of a single worker thread."""

    def __init__(self, max_partial_age_s: float = 1.0, between_jobs: Callable[[], None] | None = None,
                 max_batch: int = 1, batch_partials: bool = False) -> None:
        self.max_partial_age_s = max_partial_age_s
        self.max_batch = max_batch
        self.batch_partials = batch_partials
        self._batcher = Batcher(max_batch) if max_batch > 1 else None
        self._local = threading.local()
        self.stats = SchedulerStats()
        self._between_jobs = between_jobs
        self._cv = threading.Condition()
        self._finals: deque[Job] = deque()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._running = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="livenexus-inference", daemon=True)
        self._thread.start()

    def current(self) -> Job | None:
        """The job the calling thread runs (read by jobs themselves, for stage stamps); None elsewhere."""
        return getattr(self._local, "job", None)

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

    def _next(self) -> list[Job] | None:
        with self._cv:
            while True:
                if self._finals:
                    jobs = self._take_finals()
                elif self._partials:
                    jobs = self._take_partials()
                    if not jobs:
                        continue
                elif self._closed:
                    return None
                else:
                    self._cv.notify_all()  # wake wait_idle
                    self._cv.wait()  # silence costs nothing: no polling
                    continue
                self._running = True
                return jobs

    def _take_finals(self) -> list[Job]:
        """The oldest final and, up to ``max_batch``, the oldest final of each other stream (lock held)."""
        first = self._finals.popleft()
        if not first.key or self.max_batch < 2:
            return [first]
        jobs, keys, rest = [first], {first.key}, deque[Job]()
        for job in self._finals:
            if len(jobs) < self.max_batch and job.key and job.key not in keys:
                jobs.append(job)
            else:
                rest.append(job)
            if job.key:
                keys.add(job.key)  # a stream's later finals wait for its earlier ones
        self._finals = rest
        return jobs

    def _take_partials(self) -> list[Job]:
        """The oldest partials still fresh: one, or up to ``max_batch`` with ``batch_partials`` (lock held)."""
        jobs: list[Job] = []
        limit = self.max_batch if self.batch_partials else 1
        while self._partials and len(jobs) < limit:
            _key, job = self._partials.popitem(last=False)
            if time.monotonic() - job.created > self.max_partial_age_s:
                self.stats.partials_stale += 1
                continue
            jobs.append(job)
        return jobs

    def _run(self, job: Job) -> None:
        self._local.job = job
        try:
            job.run()
        except Exception:
            with self._cv:
                self.stats.errors += 1
            log.exception("inference job failed (%s)", job.kind)
        finally:
            self._local.job = None

    def _loop(self) -> None:
        while True:
            jobs = self._next()
            if jobs is None:
                return
            t0 = time.perf_counter()
            now = time.monotonic()
            for job in jobs:
                job.started = now
            try:
                if len(jobs) == 1 or self._batcher is None:
                    for job in jobs:
                        self._run(job)
                else:
                    _gate, errors = self._batcher.together([functools.partial(self._run, job) for job in jobs])
                    for job, err in zip(jobs, errors, strict=True):
                        if err is not None:  # _run logs a job's own errors; this escaped the gate itself
                            log.error("batched %s job failed outside its run: %r", job.kind, err)
                    self.stats.batches += 1
                    self.stats.batched_jobs += len(jobs)
            finally:
                self.stats.busy_s += time.perf_counter() - t0
                for job in jobs:
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
