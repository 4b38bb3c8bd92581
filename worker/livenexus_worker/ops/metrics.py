"""Prometheus metrics of one worker process.

The metric names are a contract shared with the operator, the chart's alerts and the Grafana
dashboard (``tests/chart/test_monitoring.py`` checks the latter against this registry); the series the
operator scrapes are named in :class:`livenexus_common.contract.Metric`. Labels are bounded enums only:
never text, segment ids or speaker ids.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from livenexus_common.contract import TIER_DIRECTIONS, TIER_INFO_LABELS, Metric
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.ops.cpu import CpuSampler

KINDS = ("partial", "final")
STAGES = ("encode", "decode")
DIRECTIONS = TIER_DIRECTIONS

INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 5.0)
# 1.5 s is a bucket edge because the p95 alert fires there; interpolation inside a wide bucket
# would make the alert threshold fuzzy.
FINAL_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
PARTIAL_INTERVAL_BUCKETS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


class RealtimeFactor:
    """Inference seconds per second of speech over a sliding window.

    Speech (VAD-voiced) seconds are the denominator rather than all received audio: silence costs no
    inference, so per-received-second the factor would swing with how talkative the room is instead
    of with how expensive the current tier is. Re-decodes for partials count in the numerator: they
    are real load.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._inference: deque[tuple[float, float]] = deque()
        self._speech: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        # Also on every add: without a scraper (CLI runs) nothing else would bound the deques.
        horizon = now - self._window
        for q in (self._inference, self._speech):
            while q and q[0][0] < horizon:
                q.popleft()

    def add_inference(self, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._inference.append((now, seconds))

    def add_speech(self, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._speech.append((now, seconds))

    def value(self) -> float:
        """0.0 when there was no speech in the window (nothing to be slow about)."""
        with self._lock:
            self._prune(self._clock())
            speech = sum(s for _, s in self._speech)
            inference = sum(s for _, s in self._inference)
        return inference / speech if speech > 0 else 0.0


class WorkerMetrics:
    """All metrics of a worker, on a registry of its own (tests create as many as they like)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        sampler: CpuSampler | None = None,
        rtf_window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sampler = sampler if sampler is not None else CpuSampler()
        self.rtf = RealtimeFactor(rtf_window_s, clock)
        self._tier_lock = threading.Lock()
        self._tier_index: int | None = None
        self._tier_labels: tuple[str, str, str, str] | None = None
        self._model_loaded = False
        self._livekit_connected = False
        self._clock = clock
        # Last partial time per open segment, for the partial interval; bounded because a segment
        # whose final the guards drop never sends the final that would remove it.
        self._last_partial: OrderedDict[str, float] = OrderedDict()
        self._partials_lock = threading.Lock()  # events of different streams come from several inference threads

        self.frames_received = Counter(
            "livenexus_frames_received", "Audio frames received from all streams.", registry=r)
        self.frames_silence = Counter(
            "livenexus_frames_silence", "Audio frames the VAD classified as silence and dropped.", registry=r)
        self.speech_seconds = Counter(
            "livenexus_speech_seconds", "Seconds of audio classified as speech.", registry=r)
        self.utterances = Counter(
            "livenexus_utterances", "Utterances (VAD speech segments) that ended.", registry=r)
        self.transcripts = Counter(
            "livenexus_transcripts", "Transcript events emitted.", ["kind"], registry=r)
        self.inference_seconds = Histogram(
            "livenexus_inference_seconds", "Wall time of one model call.", ["stage", "kind"],
            buckets=INFERENCE_BUCKETS, registry=r)
        self.final_latency = Histogram(
            Metric.FINAL_LATENCY, "End of speech (VAD end) to final transcript emitted.",
            buckets=FINAL_LATENCY_BUCKETS, registry=r)
        self.partial_interval = Histogram(
            "livenexus_partial_interval_seconds", "Time between consecutive partials of one utterance.",
            buckets=PARTIAL_INTERVAL_BUCKETS, registry=r)
        self.realtime_factor = Gauge(
            Metric.REALTIME_FACTOR,
            f"Inference seconds per speech second over the last {rtf_window_s:g} s.", registry=r)
        self.realtime_factor.set_function(self.rtf.value)
        self.queue_depth = Gauge("livenexus_queue_depth", "Inference jobs waiting.", registry=r)
        self.lag_seconds = Gauge(
            "livenexus_lag_seconds", "Age of the oldest waiting inference job.", registry=r)
        self.tier_index = Gauge(Metric.TIER_INDEX, "Current tier (0 = preferred).", registry=r)
        self.tier_info = Gauge(
            Metric.TIER_INFO, "Current tier description (value 1).", TIER_INFO_LABELS, registry=r)
        self.tier_changes = Counter(
            # prometheus_client names a counter without its _total and appends it when it exposes samples.
            Metric.TIER_CHANGES.removesuffix("_total"), "Tier changes by direction.", ["direction"], registry=r)
        self.active_speakers = Gauge(
            Metric.ACTIVE_SPEAKERS, "Streams currently inside an utterance.", registry=r)
        self.noisy_streams = Gauge(
            "livenexus_noisy_streams",
            "Streams whose speech stands less than noisy_below_db above their background (chained context).",
            registry=r)
        self.process_cpu_ratio = Gauge(
            "livenexus_process_cpu_ratio", "Process CPU time per wall second / usable cores.", registry=r)
        self.process_cpu_ratio.set_function(lambda: self.sampler.sample().process)
        self.cpu_cores = Gauge(
            Metric.CPU_CORES, "Cores the worker may use: its CFS quota (resized in place by the autoscaler), else its "
            "CPU set.", registry=r)
        self.cpu_cores.set_function(lambda: self.sampler.sample().usable_cores)
        self.cpu_pressure = Gauge(
            "livenexus_cpu_pressure",
            "CPU pressure seen by the tier policy: max(process share, PSI stall, busy share of our cores).",
            registry=r)
        self.cpu_pressure.set_function(lambda: self.sampler.sample().pressure)
        self.process_rss = Gauge("livenexus_process_rss_bytes", "Resident set size.", registry=r)
        self.process_rss.set_function(self.sampler.rss_bytes)
        self.livekit_connected = Gauge(
            Metric.LIVEKIT_CONNECTED, "1 while connected to the LiveKit room.", registry=r)
        self.livekit_reconnects = Counter(
            "livenexus_livekit_reconnects", "Reconnections to LiveKit.", registry=r)
        self.decode_threads = Gauge(
            "livenexus_decode_threads",
            "CTranslate2 intra-op threads per decode, chosen at start (timed on the host unless LIVENEXUS_THREADS "
            "sets it); decodes of different speakers run side by side on the cores left.", registry=r)
        self.model_loaded_gauge = Gauge(
            "livenexus_model_loaded", "1 once the current tier's model is loaded.", registry=r)
        self.publish_errors = Counter(
            "livenexus_publish_errors", "Transcript data messages that failed to publish.", registry=r)
        self.bad_audio = Counter(
            "livenexus_bad_audio", "Audio frames rejected (wrong format, corrupt).", registry=r)

        # Export every enum combination at 0 from the start: rate() over a series that appears only
        # at its first increment misses that increment, and dashboards show "no data" instead of 0.
        for kind in KINDS:
            self.transcripts.labels(kind=kind)
            for stage in STAGES:
                self.inference_seconds.labels(stage=stage, kind=kind)
        for direction in DIRECTIONS:
            self.tier_changes.labels(direction=direction)

    # -- audio path -------------------------------------------------------------------------------

    def add_frames(self, received: int, silence: int = 0) -> None:
        """Count received frames and how many of them the VAD dropped as silence."""
        self.frames_received.inc(received)
        if silence:
            self.frames_silence.inc(silence)

    def add_speech(self, seconds: float) -> None:
        """Count voiced audio (also the denominator of the realtime factor)."""
        self.speech_seconds.inc(seconds)
        self.rtf.add_speech(seconds)

    def bad_audio_frame(self, count: int = 1) -> None:
        self.bad_audio.inc(count)

    # -- inference --------------------------------------------------------------------------------

    def observe_inference(self, stage: str, kind: str, seconds: float) -> None:
        """One model call: ``stage`` encode|decode, ``kind`` partial|final."""
        if stage not in STAGES or kind not in KINDS:
            raise ValueError(f"unknown stage/kind {stage!r}/{kind!r}")
        self.inference_seconds.labels(stage=stage, kind=kind).observe(seconds)
        self.rtf.add_inference(seconds)

    def observe_final(self, latency_s: float) -> None:
        """A final was emitted ``latency_s`` after the end of speech."""
        self.transcripts.labels(kind="final").inc()
        self.final_latency.observe(max(0.0, latency_s))

    def observe_partial(self, interval_s: float | None = None) -> None:
        """A partial was emitted; ``interval_s`` since the previous partial of the same utterance."""
        self.transcripts.labels(kind="partial").inc()
        if interval_s is not None:
            self.partial_interval.observe(max(0.0, interval_s))

    def set_queue(self, depth: int, oldest_age_s: float) -> None:
        self.queue_depth.set(depth)
        self.lag_seconds.set(max(0.0, oldest_age_s))

    def set_active_speakers(self, count: int) -> None:
        self.active_speakers.set(count)

    def set_noisy_streams(self, count: int) -> None:
        self.noisy_streams.set(count)

    # -- tiers ------------------------------------------------------------------------------------

    def set_tier(self, index: int, spec: TierSpec, previous: int | None = None) -> None:
        """Switch the exported tier; counts a change (by direction) unless it is the first call.

        ``previous`` is accepted for the runtime's observer call and ignored: the direction comes from
        the last index this object exported, which is right even if a caller skipped a notification.
        """
        labels = (spec.name, spec.model, spec.compute_type, str(spec.beam_size))
        with self._tier_lock:
            previous = self._tier_index
            if previous is not None and index != previous:
                self.tier_changes.labels(direction="down" if index > previous else "up").inc()
            if self._tier_labels is not None and self._tier_labels != labels:
                # Removed rather than set to 0: a dashboard legend of old tiers at 0 is noise.
                self.tier_info.remove(*self._tier_labels)
            self.tier_info.labels(*labels).set(1)
            self.tier_index.set(index)
            self._tier_index = index
            self._tier_labels = labels

    # -- health -----------------------------------------------------------------------------------

    def set_model_loaded(self, loaded: bool) -> None:
        self._model_loaded = loaded
        self.model_loaded_gauge.set(1 if loaded else 0)

    def set_livekit_connected(self, connected: bool) -> None:
        self._livekit_connected = connected
        self.livekit_connected.set(1 if connected else 0)

    def livekit_reconnected(self) -> None:
        self.livekit_reconnects.inc()
        self.set_livekit_connected(True)

    def publish_failed(self) -> None:
        self.publish_errors.inc()

    def readiness(self, *, require_livekit: bool = True) -> tuple[bool, str]:
        """A readiness check built on the gauges above, for :class:`.metrics_server.MetricsServer`."""
        if not self._model_loaded:
            return False, "model not loaded"
        if require_livekit and not self._livekit_connected:
            return False, "not connected to LiveKit"
        return True, "ready"

    # -- Runtime observer (the duck-typed ``observer`` of livenexus_worker.streaming.runtime.Runtime) ---------

    def model_loaded(self, loaded: bool) -> None:
        self.set_model_loaded(loaded)

    def frames(self, frames: int, silent: int) -> None:
        self.add_frames(frames, silent)

    def inference(self, kind: str, encode_s: float, decode_s: float, audio_s: float) -> None:
        self.observe_inference("encode", kind, encode_s)
        self.observe_inference("decode", kind, decode_s)

    def utterance(self, speech_s: float) -> None:
        """An utterance ended with ``speech_s`` seconds of voiced audio."""
        self.utterances.inc()
        self.add_speech(speech_s)

    def emitted(self, event: TranscriptEvent) -> None:
        if event.is_final:
            with self._partials_lock:
                self._last_partial.pop(event.segment_id, None)
            self.observe_final(event.latency_ms / 1000.0)
            return
        now = self._clock()
        with self._partials_lock:
            previous = self._last_partial.pop(event.segment_id, None)
            self._last_partial[event.segment_id] = now
            while len(self._last_partial) > 256:
                self._last_partial.popitem(last=False)
        self.observe_partial(None if previous is None else now - previous)

    def queue(self, depth: int, lag_s: float, active_speakers: int) -> None:
        self.set_queue(depth, lag_s)
        self.set_active_speakers(active_speakers)

    def exposition(self) -> bytes:
        """The text exposition of this registry (what /metrics serves)."""
        return generate_latest(self.registry)
