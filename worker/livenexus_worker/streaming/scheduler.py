"""The inference threads of a process, shared by every stream.

A decode runs on one core (``inference/engine.py``: a second intra-op thread made it no faster), so with
``workers`` threads the jobs of different streams run at once, up to ``parallel`` of them (the pod's CPU quota,
set as it changes). A stream's own jobs do not overlap (its decodes are one after another by design), but for one
case: a final that ends the stream's speech (``Job.beside_partial``) starts beside the stream's own partial, which
began while the speaker still talked and whose text the final replaces.
Finals always go first; a stream has at most one pending partial (a newer request replaces it), and partials
that waited too long are dropped, so queueing delay cannot grow without bound. An urgent partial (one that may
commit a sentence) goes before the other partials.

With ``max_batch`` > 1 (off by default since decodes run one per core), finals of different streams waiting
together run as one batch (``inference/batching.py``): one CTranslate2 call decodes them all. A stream's own
finals keep their order: at most one of them is in a batch, the earliest.
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


def threads_for(cores: float) -> int:
    """Intra-op threads per decode on ``cores`` usable cores, at most: two from two cores on, else one. A
    stream's own decodes run one after another, so with one speaker a one-thread decode leaves the second core
    idle. On the AVX2 hosts of sessions 26-34 (two cores, base, int8), two threads decoded 1.5-6 s windows
    1.75-1.85x faster; the meeting benchmark's finals came at p50 0.77 vs 1.33 s for +0.13 CPU-s per audio-s,
    and eight speakers' final p95 was 1.6 vs 1.9 s. Where the second thread pays less (an AVX-512 / AMX host:
    1.1-1.26x), the runtime measures it and keeps one (``inference.calibrate``, ``RuntimeOptions.measure_threads``)."""
    return 2 if cores >= 2 else 1


def decode_threads(asked: int, cores: float) -> tuple[int, bool]:
    """``RuntimeOptions.threads`` and ``measure_threads`` for ``asked`` threads per decode (LIVENEXUS_THREADS,
    ``--threads``; 0: choose) on ``cores`` usable cores: what is asked is kept, not timed; otherwise
    :func:`threads_for` at most, timed on the host."""
    return (asked, False) if asked else (threads_for(cores), True)


def lanes_for(cores: float, threads: int = 1) -> int:
    """Decodes to run at once on ``cores`` usable cores (a CFS quota may be fractional), each on ``threads``
    of them: one per ``threads`` cores, a half rounding up (a 1.5-core pod runs two one-thread decodes, each a
    little slower), never none."""
    return max(1, int(cores / max(1, threads) + 0.5))


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
    urgent: bool = False
    """A partial that may commit a sentence: it runs before the partials that only refresh the text. With 8
    speakers on 2 cores, one waited behind the others' partials, and the clause commits it led to were the
    slowest tenth of finals (1.1-2.1 s after their pause)."""
    beside_partial: bool = False
    """A final that may start while its stream's partial runs, on another lane (never beside its stream's other
    finals, whose order it keeps). With one thread per decode and one speaker the second core is idle then: on the
    meeting benchmark's file path 33 of 84 finals waited behind their own partial, p50 88 ms (140 ms behind one
    that could commit a pause); beside it 0.2 ms, and the final p95 went 1.49 -> 0.97 s in the same hour."""


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
    overlapped: int = 0
    """Jobs that started while another thread was running one."""


class InferenceScheduler:
    """Priority queue in front of ``workers`` inference threads."""

    def __init__(self, max_partial_age_s: float = 1.0, between_jobs: Callable[[], None] | None = None,
                 max_batch: int = 1, batch_partials: bool = False, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.max_partial_age_s = max_partial_age_s
        self.workers = workers
        self._parallel = workers
        self.max_batch = max_batch
        self.batch_partials = batch_partials
        self._batcher = Batcher(max_batch) if max_batch > 1 else None
        self._local = threading.local()
        self.stats = SchedulerStats()
        self._between_jobs = between_jobs
        lock = threading.Lock()
        self._cv = threading.Condition(lock)
        # wait_idle waits on its own condition: inference threads waking each other to tell it spun them.
        self._idle_cv = threading.Condition(lock)
        self._finals: deque[Job] = deque()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._busy: dict[str, int] = {}  # stream key -> jobs of it running ('' = unkeyed jobs, one at a time)
        self._busy_finals: dict[str, int] = {}  # stream key -> finals of it running
        self._active = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"livenexus-inference-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def parallel(self) -> int:
        """Jobs that may run at once (1..workers)."""
        return self._parallel

    def set_parallel(self, n: int) -> None:
        """Let up to ``n`` jobs run at once, clamped to 1..workers (the CPU quota changed)."""
        with self._cv:
            self._parallel = max(1, min(self.workers, n))
            self._cv.notify_all()

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

    def running(self) -> int:
        """Runs in progress (a job's own run counts until its between-jobs hook returned)."""
        with self._cv:
            return self._active

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._finals or self._partials or self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.wait_idle(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> list[Job] | None:
        with self._cv:
            while True:
                jobs: list[Job] = []
                if self._active < self._parallel:
                    jobs = self._take_finals() or self._take_partials()
                if jobs:
                    if self._active:
                        self.stats.overlapped += len(jobs)
                    self._active += 1
                    for job in jobs:
                        _up(self._busy, job.key, 1)
                        if job.kind == "final":
                            _up(self._busy_finals, job.key, 1)
                    return jobs
                if self._closed and not self._finals and not self._partials:
                    return None
                if not self._active:
                    self._idle_cv.notify_all()
                self._cv.wait()  # silence costs nothing: no polling

    def _take_finals(self) -> list[Job]:
        """The oldest final of a stream with nothing running (or only a partial, for a final ``beside_partial``)
        and, up to ``max_batch``, the oldest final of each other such stream (lock held); [] when none can start."""
        jobs: list[Job] = []
        keys = set(self._busy)  # a stream's later finals wait for its earlier ones and for its running job
        finals = set(self._busy_finals)  # ... a final beside its partial only for its running finals
        rest = deque[Job]()
        for job in self._finals:
            limit = 1 if not jobs or not jobs[0].key or not job.key else self.max_batch
            free = job.key not in (finals if job.beside_partial and job.key else keys)
            if free and len(jobs) < limit:
                jobs.append(job)
            else:
                rest.append(job)
            keys.add(job.key)
            finals.add(job.key)
        self._finals = rest
        return jobs

    def _take_partials(self) -> list[Job]:
        """The oldest fresh partials of streams with nothing running or waiting to run, urgent ones first: one,
        or up to ``max_batch`` with ``batch_partials`` (lock held)."""
        jobs: list[Job] = []
        limit = self.max_batch if self.batch_partials else 1
        blocked = set(self._busy) | {j.key for j in self._finals}
        for key, job in sorted(self._partials.items(), key=lambda kv: not kv[1].urgent):  # stable: FIFO in each
            if len(jobs) >= limit:
                break
            if time.monotonic() - job.created > self.max_partial_age_s:
                del self._partials[key]
                self.stats.partials_stale += 1
                continue
            if job.key in blocked:
                continue
            del self._partials[key]
            jobs.append(job)
            blocked.add(job.key)  # one job of a stream per batch too
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
            finally:
                with self._cv:  # other inference threads count too
                    self._count(jobs, time.perf_counter() - t0)
                if self._between_jobs is not None:
                    try:
                        self._between_jobs()
                    except Exception:
                        log.exception("between-jobs hook failed")
                with self._cv:
                    self._active -= 1
                    for job in jobs:
                        _up(self._busy, job.key, -1)
                        if job.kind == "final":
                            _up(self._busy_finals, job.key, -1)
                    self._cv.notify_all()  # a stream's later job, or one over the parallel limit
                    self._idle_cv.notify_all()

    def _count(self, jobs: list[Job], busy_s: float) -> None:
        """Stats of a finished run (lock held)."""
        self.stats.busy_s += busy_s
        if len(jobs) > 1:
            self.stats.batches += 1
            self.stats.batched_jobs += len(jobs)
        for job in jobs:
            if job.kind == "final":
                self.stats.finals_run += 1
            else:
                self.stats.partials_run += 1


def _up(counts: dict[str, int], key: str, by: int) -> None:
    """Add ``by`` to ``counts[key]``, dropping the key at 0 (lock held)."""
    n = counts.get(key, 0) + by
    if n:
        counts[key] = n
    else:
        counts.pop(key, None)
