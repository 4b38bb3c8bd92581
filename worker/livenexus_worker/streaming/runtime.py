"""Process-wide runtime: loaded engines, the shared inference scheduler, the tier in force, and streams."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.memory import release_free_memory
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference.calibrate import measured_threads
from livenexus_worker.inference.engine import EngineOptions, Hypothesis, WhisperEngine
from livenexus_worker.inference.english import english_or_whole
from livenexus_worker.inference.models import ModelCorruptError, ModelNotFoundError, resolve
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline
from livenexus_worker.streaming.scheduler import InferenceScheduler

log = logging.getLogger(__name__)


MAX_WORKERS = 4
"""Inference threads by default at most: each holds a model replica's buffers (the weights are shared)."""
STATS_FINALS_KEPT = 4096
"""Final latencies kept (the most recent); a worker runs for days, so nothing here may grow with uptime."""
STATS_SEGMENTS_KEPT = 64
"""Segments whose partial times are kept (the most recently active)."""
STATS_PARTIALS_KEPT = 256
"""Partial times kept per segment (the most recent)."""


@dataclass
class RuntimeStats:
    """What the runtime observed; benchmarks and tests read it, metrics mirror it. Bounded: the latest
    ``STATS_*_KEPT`` samples only (metrics keep the complete histograms)."""

    final_latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_FINALS_KEPT))
    """End of speech → final emitted, per final (the most recent ones)."""
    partial_times: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    """Per segment id (the most recently active ones): monotonic times partials were emitted (cadence)."""
    inference_s: float = 0.0
    """Encoder + decoder time."""
    audio_s: float = 0.0
    """Audio seconds decoded (partials and finals)."""
    frames: int = 0
    """VAD frames seen."""
    silent_frames: int = 0
    """VAD frames judged silent."""
    utterances: int = 0
    """Utterances ended."""
    speech_s: float = 0.0
    """Voiced audio seconds in ended utterances."""
    memory_trims: int = 0
    """Times freed heap memory was handed back to the kernel (once each time the room went quiet)."""
    memory_trimmed_mib: float = 0.0
    """RSS those trims gave back, in total."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything the runtime needs, independent of where it came from (env, CLI, tests)."""

    tiers: tuple[TierSpec, ...] = (TierSpec(),)
    """Ladder, best first."""
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    """Per-stream options."""
    engine: EngineOptions = field(default_factory=EngineOptions)
    """Window sizing."""
    threads: int = 0
    """CTranslate2 intra-op threads per decode (0: one). The worker and the CLI choose two from two usable cores
    on (``scheduler.threads_for``) and have them measured (``measure_threads``); the default workers then hold
    one decode per ``threads`` cores."""
    measure_threads: bool = False
    """With ``threads`` above one: time a decode at one and at two threads when the runtime is created and keep
    two only where they pay on this host (``inference.calibrate``); else one, with twice the lanes."""
    workers: int = 0
    """Inference threads: decodes of different streams that may run at once, each on ``threads`` cores (0: the
    cores in the affinity mask over ``threads``, at most :data:`MAX_WORKERS`). How many do run at once follows
    the CPU quota (:meth:`InferenceScheduler.set_parallel`)."""
    model_cache: str = ""
    """Model cache directory ('' = default)."""
    max_batch: int = 1
    """Finals of up to this many streams that wait together are decoded in one batch (1: never). With 2
    intra-op threads per decode, 4 windows together (3 s, beam 5) were 2.1-2.3x faster than one after another:
    the batch filled the second core. With one core per decode, 0.96-1.12x (2 and 4 windows, beam 1 and 5), and
    a batch holds its finals on one core while another is free: off, the streams' decodes run side by side."""
    batch_partials: bool = False
    """Batch the partials of different streams too (at beam 1, four together were 1.4x faster, two no faster;
    they are padded to the longest window)."""
    english_vocabulary: bool = True
    """With the pipeline's language English: decode with the model's English-vocabulary copy
    (``inference.vocab``), prepared once in the model cache. Its decoder scores 33,180 tokens instead of 51,865;
    a decoder step costs ~15-25 % less, and 17 of 18 decodes compared read the same text. Models it does not
    apply to (English-only ones), or a cache it cannot write, keep the whole vocabulary."""
    trim_when_quiet: bool = True
    """After the last job, with nothing queued and nobody speaking, give freed heap back to the kernel
    (``core/memory.py``): a long window otherwise raises RSS for good (by ~100 MiB for 30 s, base model)."""


_LOAD_ERRORS = (ModelNotFoundError, RuntimeError, ValueError, OSError)
"""What loading a model may raise: CTranslate2 raises RuntimeError/ValueError on a damaged model.bin."""


class Runtime:
    """Owns the engines and the scheduler; opens one StreamPipeline per audio stream."""

    def __init__(self, options: RuntimeOptions, observer: Any = None) -> None:
        if not options.tiers:
            raise ValueError("at least one tier is required")
        self.options = options
        self.observer = observer
        """Optional metrics sink; duck-typed so the runtime works without prometheus (see metrics.py)."""
        self.stats = RuntimeStats()
        self.run_id = uuid.uuid4().hex[:8]
        self._engines: dict[tuple[str, str], WhisperEngine] = {}
        self._unavailable: dict[int, str] = {}
        self._prepared: dict[str, Path] = {}
        self._tier = 0
        self._lock = threading.Lock()
        self._streams: dict[str, StreamPipeline] = {}
        self._opened = 0
        self._stats_lock = threading.Lock()  # batched jobs report from several threads at once
        self.decode_threads = max(1, options.threads)
        self.workers = options.workers or max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) // self.decode_threads))
        self.scheduler = InferenceScheduler(between_jobs=self._between_jobs, max_batch=options.max_batch,
                                            batch_partials=options.batch_partials, workers=self.workers)
        self.ready = False

    @classmethod
    def create(cls, options: RuntimeOptions, observer: Any = None) -> Runtime:
        """A runtime with its models loaded (see :meth:`load`)."""
        prepared: dict[str, Path] = {}
        if options.measure_threads and options.threads > 1 and options.tiers:
            options = replace(options, threads=_measured_threads(options, prepared))
        rt = cls(options, observer)
        rt._prepared = prepared  # the timed directory, verified and copied: loading does not hash it again
        rt.load()
        return rt

    # ---- models and tiers ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every tier's model; a missing or corrupt one makes its tiers unavailable (skipped), and the
        runtime starts on the best tier that loaded. Raises :class:`ModelNotFoundError` (naming each tier's
        reason) when none did."""
        cache = Path(self.options.model_cache) if self.options.model_cache else None
        failed: dict[tuple[str, str], str] = {}
        damaged = False
        for i, tier in enumerate(self.options.tiers):
            key = (tier.model, tier.compute_type)
            if key in self._engines:
                continue
            if key not in failed:
                try:
                    engine = self._open(tier.model, tier.compute_type, cache)
                except _LOAD_ERRORS as exc:
                    # CTranslate2 raises RuntimeError/ValueError on a damaged model.bin it had no record to check.
                    plain = isinstance(exc, ModelNotFoundError)
                    damaged |= isinstance(exc, ModelCorruptError) or not plain
                    failed[key] = str(exc) if plain else f"cannot load {tier.model}: {type(exc).__name__}: {exc}"
                    log.warning("tier %d (%s) unavailable, it will be skipped: %s", i, tier.name, failed[key])
                else:
                    self._engines[key] = engine
                    log.info("loaded %s (%s, %s; %s) in %.2fs", tier.model, tier.compute_type, engine.vocabulary,
                             engine.kernels, engine.load_s)
                    continue
            self._unavailable[i] = failed[key].splitlines()[0]
        self._load_drafts(cache)
        if len(self._unavailable) == len(self.options.tiers):
            reasons = "\n".join(f"{model} ({compute}): {why}" for (model, compute), why in failed.items())
            raise (ModelCorruptError if damaged else ModelNotFoundError)(f"no tier has a usable model:\n{reasons}")
        self._tier = next(i for i in range(len(self.options.tiers)) if i not in self._unavailable)
        self.ready = True
        if self.observer is not None:
            self.observer.model_loaded(True)
            self.observer.set_tier(self._tier, self.options.tiers[self._tier])

    def _open(self, model: str, compute_type: str, cache: Path | None) -> WhisperEngine:
        path = self._prepared.pop(model, None) or _decoded_dir(model, self.options, cache)
        return WhisperEngine(path, compute_type, self.options.threads, self.options.engine, self.workers)

    def _load_drafts(self, cache: Path | None) -> None:
        """Load the available rungs' partial models, each once; one that cannot load leaves its rungs' partials
        to their own models."""
        failed: dict[tuple[str, str], str] = {}
        for i, tier in enumerate(self.options.tiers):
            key = (tier.partial_model, tier.compute_type)
            if not tier.partial_model or key in self._engines or i in self._unavailable:
                continue
            if key not in failed:
                try:
                    self._engines[key] = self._open(tier.partial_model, tier.compute_type, cache)
                except _LOAD_ERRORS as exc:
                    failed[key] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                else:
                    log.info("loaded %s (%s) for partials", tier.partial_model, tier.compute_type)
                    continue
            log.warning("tier %d (%s): its partial model cannot load, %s drafts its own partials: %s", i,
                        tier.name, tier.model, failed[key])

    def is_available(self, index: int) -> bool:
        return 0 <= index < len(self.options.tiers) and index not in self._unavailable

    def tier_index(self) -> int:
        return self._tier

    def set_tier(self, index: int) -> None:
        """Switch the tier for utterances that start from now on (open utterances keep theirs)."""
        if not self.is_available(index):
            raise ValueError(f"tier {index} is not available")
        with self._lock:
            old, self._tier = self._tier, index
        if old != index:
            log.info("tier %d → %d (%s)", old, index, self.options.tiers[index].name)
            if self.observer is not None:
                self.observer.set_tier(index, self.options.tiers[index], previous=old)

    def engine_for(self, tier_index: int) -> tuple[int, TierSpec, WhisperEngine]:
        tier = self.options.tiers[tier_index]
        return tier_index, tier, self._engines[(tier.model, tier.compute_type)]

    def partial_engine_for(self, tier_index: int) -> WhisperEngine:
        """The engine of a rung's partials: its partial model when that loaded, else its own."""
        tier = self.options.tiers[tier_index]
        draft = self._engines.get((tier.partial_model, tier.compute_type)) if tier.partial_model else None
        return draft or self._engines[(tier.model, tier.compute_type)]

    # ---- streams -------------------------------------------------------------------------------------
    def open_stream(self, stream_id: str, speaker: str, on_event: Callable[[TranscriptEvent], None],
                    options: PipelineOptions | None = None) -> StreamPipeline:
        if not self.ready:
            raise RuntimeError("runtime not loaded")
        self._opened += 1
        # The open counter keeps segment ids unique when a stream id comes back (track re-subscribed after a
        # reconnect), so listeners never see two utterances under one id.
        pipe = StreamPipeline(stream_id, speaker, self, on_event, options or self.options.pipeline,
                              segment_prefix=f"{self.run_id}-{stream_id}-{self._opened}-")
        with self._lock:
            old = self._streams.pop(stream_id, None)
            self._streams[stream_id] = pipe
        if old is not None:
            old.close()
        return pipe

    def close_stream(self, stream_id: str) -> None:
        with self._lock:
            pipe = self._streams.pop(stream_id, None)
        if pipe is not None:
            pipe.close()

    def active_speakers(self) -> int:
        with self._lock:
            return sum(1 for p in self._streams.values() if p.in_utterance)

    def noisy_streams(self) -> int:
        """Streams read as noisy at their last decision (``noisy_below_db``): their finals cost more."""
        with self._lock:
            return sum(1 for p in self._streams.values() if p.noisy)

    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def wait_idle(self, timeout: float) -> bool:
        return self.scheduler.wait_idle(timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for p in streams:
            p.close()
        self.scheduler.close(timeout)

    # ---- hooks called by pipelines (StreamContext) ---------------------------------------------------
    def on_frames(self, frames: int, silent: int) -> None:
        self.stats.frames += frames
        self.stats.silent_frames += silent
        if self.observer is not None:
            self.observer.frames(frames, silent)

    def on_inference(self, kind: str, hyp: Hypothesis, audio_s: float) -> None:
        with self._stats_lock:
            self.stats.inference_s += hyp.encode_s + hyp.decode_s
            self.stats.audio_s += audio_s
        if self.observer is not None:
            self.observer.inference(kind, hyp.encode_s, hyp.decode_s, audio_s)

    def on_emit(self, event: TranscriptEvent) -> None:
        if event.is_final:
            self.stats.final_latencies_ms.append(event.latency_ms)
            # A final decoded speculatively in the pause is emitted when the utterance ends, with no job after
            # it: the between-jobs trim never comes (the 10-minute soak kept 24 MiB through a quiet stretch).
            if self.options.trim_when_quiet and self.scheduler.wait_idle(0) and self.active_speakers() == 0:
                self._trim()
        else:
            with self._stats_lock:  # partials of different streams may be emitted at once (batch_partials)
                self._record_partial(event.segment_id)
        if self.observer is not None:
            self.observer.emitted(event)

    def _record_partial(self, segment_id: str) -> None:
        times = self.stats.partial_times
        kept = times.get(segment_id)
        if kept is None:
            kept = times[segment_id] = deque(maxlen=STATS_PARTIALS_KEPT)
            while len(times) > STATS_SEGMENTS_KEPT:
                times.popitem(last=False)
        else:
            times.move_to_end(segment_id)
        kept.append(time.monotonic())

    def on_utterance(self, speech_s: float) -> None:
        self.stats.utterances += 1
        self.stats.speech_s += speech_s
        if self.observer is not None:
            self.observer.utterance(speech_s)

    def _between_jobs(self) -> None:
        depth, speaking = self.scheduler.depth(), self.active_speakers()
        if self.observer is not None:
            self.observer.queue(depth, self.scheduler.lag_s(), speaking)
        if self.options.trim_when_quiet and depth == 0 and speaking == 0 and self.scheduler.running() <= 1:
            # Runs on an inference thread, which has nothing else to do now; a job queued meanwhile waits
            # the few ms the trim takes. Not during speech: the next window would fault the pages back in;
            # nor while another thread decodes (the trim locks each heap arena in turn).
            self._trim()

    def _trim(self) -> None:
        t = release_free_memory()
        with self._stats_lock:
            self.stats.memory_trims += 1
            self.stats.memory_trimmed_mib += max(0.0, t.rss_before_mib - t.rss_after_mib)
        log.debug("room quiet: heap trimmed, RSS %.1f -> %.1f MiB", t.rss_before_mib, t.rss_after_mib)


def _decoded_dir(model: str, options: RuntimeOptions, cache: Path | None) -> Path:
    """The directory ``model`` is decoded from: resolved (verified, prepared from its packages if need be), then
    its English-vocabulary copy when the runtime decodes English with one (``english_vocabulary``)."""
    path = resolve(model, cache).path
    if options.english_vocabulary and options.pipeline.language == "en":
        path = english_or_whole(path, cache)
    return path


def _measured_threads(options: RuntimeOptions, prepared: dict[str, Path]) -> int:
    """Intra-op threads per decode as timed on the directory the top rung decodes from (:func:`_decoded_dir`:
    the English copy's smaller last layer is part of each step's work), which goes into ``prepared``;
    ``options.threads`` when that model cannot be found (loading reports it)."""
    tier = options.tiers[0]
    try:
        model_dir = _decoded_dir(tier.model, options, Path(options.model_cache) if options.model_cache else None)
    except _LOAD_ERRORS:
        return options.threads
    prepared[tier.model] = model_dir
    return min(options.threads, measured_threads(model_dir, tier.compute_type))
