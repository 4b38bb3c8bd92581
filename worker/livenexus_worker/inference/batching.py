"""Decoding several jobs' windows in one CTranslate2 call.

A final job is a small program: it decodes, looks at the text, maybe decodes again (left context that did not
come back, a skipped start). :meth:`Batcher.together` runs several such jobs, each on its own thread; every
``WhisperEngine.transcribe`` they make waits at a gate, and once each job still running is waiting there, the
waiting calls run as one batch (per engine and beam) and each job goes on with its own result. No timer: a
batch forms exactly when no job can add to it, so a lone job never waits.

Batching pays on CPU because one window's decoder steps are small matrix products that leave the cores idle
part of the time (measured, base int8, 2 threads, four 3 s windows: beam 5 2.1-2.3x faster than one after
another, beam 1 1.4x; two windows 1.2-1.5x at beam 5, none at beam 1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livenexus_worker.inference.engine import DecodeRequest, Hypothesis, WhisperEngine

log = logging.getLogger(__name__)

_local = threading.local()
_SECOND = 16000
"""Samples in a second of the engine's 16 kHz audio."""


def current_gate() -> BatchGate | None:
    """The gate of the batch the calling thread's job runs in (None outside :meth:`Batcher.together`)."""
    return getattr(_local, "gate", None)


@dataclass
class _Call:
    engine: WhisperEngine
    request: DecodeRequest
    result: Hypothesis | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class BatchGate:
    """Collects the engine calls of the jobs of one :meth:`Batcher.together`; see the module docstring."""

    live: int
    """Jobs still running (not finished)."""
    batches: list[int] = field(default_factory=list)
    """Size of each batch run, in order (for stats and tests)."""
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _waiting: list[_Call] = field(default_factory=list)

    def call(self, engine: WhisperEngine, request: DecodeRequest) -> Hypothesis:
        """Decode ``request`` with the other jobs' waiting calls; blocks until its result is in."""
        slot = _Call(engine, request)
        with self._cv:
            self._waiting.append(slot)
            ready = self._take()
        if ready:
            self._run(ready)
        with self._cv:
            while not slot.done:
                self._cv.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def finished(self) -> None:
        """A job ended: the others may now be all that a batch waits for."""
        with self._cv:
            self.live -= 1
            ready = self._take()
        if ready:
            self._run(ready)

    def _take(self) -> list[_Call]:
        """The waiting calls, once every live job waits (lock held)."""
        if not self._waiting or len(self._waiting) < self.live:
            return []
        ready, self._waiting = self._waiting, []
        return ready

    def _run(self, calls: list[_Call]) -> None:
        """Runs on the thread whose arrival completed the batch; the others sleep until it is done."""
        try:
            for group in _groups(calls):
                self.batches.append(len(group))
                _decode(group)
        finally:
            with self._cv:
                for c in calls:
                    if c.result is None and c.error is None:
                        c.error = RuntimeError("batched decode did not run")
                    c.done = True
                self._cv.notify_all()


def _groups(calls: list[_Call]) -> list[list[_Call]]:
    """Calls that can share one decode: same engine and beam, and windows of similar length. Every window of a
    batch is padded to the longest, so a 2 s final next to a 25 s one would cost a 25 s encode: a group's
    longest audio is at most twice its shortest plus a second."""
    by_kind: dict[tuple[int, int], list[_Call]] = {}
    for c in calls:
        by_kind.setdefault((id(c.engine), c.request.beam_size), []).append(c)
    out: list[list[_Call]] = []
    for kind in by_kind.values():
        kind.sort(key=lambda c: c.request.audio.shape[0])
        group: list[_Call] = []
        for c in kind:
            if group and c.request.audio.shape[0] > 2 * group[0].request.audio.shape[0] + _SECOND:
                out.append(group)
                group = []
            group.append(c)
        out.append(group)
    return out


def _decode(group: list[_Call]) -> None:
    engine = group[0].engine
    try:
        results = engine.transcribe_batch([c.request for c in group])
    except Exception as exc:
        if len(group) == 1:
            group[0].error = exc
            return
        # One bad window must not fail the others' jobs: decode each alone, so only its own job sees the error.
        log.exception("batched decode of %d windows failed; decoding them one by one", len(group))
        for c in group:
            _decode([c])
        return
    for c, hyp in zip(group, results, strict=True):
        c.result = hyp


class Batcher:
    """Runs groups of jobs with :meth:`together`, each job on a daemon thread of its own (as the inference
    thread is one: a job stuck in the decoder must not hold up the process's exit)."""

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch

    def together(self, jobs: Sequence[Callable[[], Any]]) -> tuple[BatchGate, list[BaseException | None]]:
        """Run ``jobs`` (at most ``max_batch``) concurrently with their engine calls batched; returns when all
        are done, with the gate (its batch sizes) and each job's exception (None when it returned)."""
        if len(jobs) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} jobs run together")
        gate = BatchGate(live=len(jobs))
        errors: list[BaseException | None] = [None] * len(jobs)
        threads = [threading.Thread(target=_run_in, args=(gate, job, errors, i), name=f"livenexus-batch-{i}",
                                    daemon=True) for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return gate, errors


def _run_in(gate: BatchGate, job: Callable[[], Any], errors: list[BaseException | None], i: int) -> None:
    _local.gate = gate
    try:
        job()
    except BaseException as exc:  # handed to the caller with the job's index
        errors[i] = exc
    finally:
        _local.gate = None
        gate.finished()
