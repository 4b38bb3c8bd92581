"""Per-stream pipeline: 16 kHz frames → VAD → utterances → inference jobs → TranscriptEvents.

`push` runs on the caller's thread and only does VAD bookkeeping; decoding happens on the shared inference
thread. Shared state between the two is guarded by one lock per stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.inference.engine import Hypothesis, WhisperEngine
from livenexus_worker.inference.guards import GuardOptions, check
from livenexus_worker.streaming.agreement import LocalAgreement
from livenexus_worker.streaming.scheduler import InferenceScheduler, Job
from livenexus_worker.streaming.segmenter import SegmenterOptions, Utterance, cut_point
from livenexus_worker.streaming.vad import VadEvent, VadOptions, VadStateMachine, WebRtcVad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """Per-stream behaviour."""

    vad: VadOptions = field(default_factory=VadOptions)
    """Voice activity detection."""
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    """Utterance length cap."""
    guards: GuardOptions = field(default_factory=GuardOptions)
    """Hallucination guards."""
    language: str | None = "en"
    """Language code, or None to detect per utterance."""
    speculative_ms: int = 90
    """Start decoding the final after this much silence, before the hangover confirms the end; the result
    is thrown away if speech resumes. Hides most of the decode time inside the hangover."""
    tail_ms: int = 200
    """Silence kept after the last voiced frame in the final's audio (Whisper ends words better with it)."""
    context_finals: int = 0
    """How many previous finals of this stream to give the decoder as context (Whisper's previous-text
    prompt). 0 keeps utterances independent, like condition_on_previous_text=False."""
    partial_max_new_tokens: int = 24
    """Tokens a partial may generate beyond the committed prefix."""
    min_partial_audio_ms: int = 1000
    """No partials for utterances shorter than this: too little audio to say anything useful."""


class StreamContext(Protocol):
    """What a pipeline needs from the process-wide runtime."""

    scheduler: InferenceScheduler

    def tier_index(self) -> int: ...
    def engine_for(self, tier_index: int) -> tuple[int, TierSpec, WhisperEngine]: ...
    def on_frames(self, frames: int, silent: int) -> None: ...
    def on_inference(self, kind: str, hyp: Hypothesis, audio_s: float) -> None: ...
    def on_emit(self, event: TranscriptEvent) -> None: ...
    def on_utterance(self, speech_s: float) -> None: ...


class SpeculationMark(IntEnum):
    """Values of :attr:`_Open.speculated_at` that are not a stream position (positions are never negative).

    A speculative final only emits while ``speculated_at`` still holds the position it was started for, so
    each of these also cancels one that is queued or running.
    """

    NONE = -1
    """No speculative final was started for the current end of speech."""
    CUT = -2
    """The utterance was cut at the length cap; a guess over the uncut audio must not emit."""
    CLICK = -3
    """The utterance ended as a click (too little voiced audio) and is dropped."""


@dataclass
class _Open:
    """Bookkeeping of the utterance in progress."""

    utt: Utterance
    tier: int
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    last_partial_request: float = 0.0
    last_voiced_wall: float = 0.0
    speculated_at: int = SpeculationMark.NONE
    """last_voiced_sample the speculative final was started for, or a :class:`SpeculationMark` value."""
    speculative: _Final | None = None
    speculative_done: bool = False
    ended: bool = False
    emitted: bool = False


@dataclass(frozen=True)
class _Final:
    """A decoded final waiting to be emitted; latency is measured at emission."""

    event: TranscriptEvent
    speech_end_wall: float


class StreamPipeline:
    """Transcribes one audio stream; see module docstring for threading."""

    def __init__(self, stream_id: str, speaker: str, ctx: StreamContext,
                 on_event: Callable[[TranscriptEvent], None], options: PipelineOptions | None = None,
                 segment_prefix: str = "") -> None:
        self.stream_id = stream_id
        self.speaker = speaker
        self.o = options or PipelineOptions()
        self._ctx = ctx
        self._on_event = on_event
        self._vad = WebRtcVad(self.o.vad)
        self._sm = VadStateMachine(self.o.vad)
        self._frame = self.o.vad.frame_samples
        self._residual = np.zeros(0, dtype=np.int16)
        self._ring: deque[np.ndarray] = deque(maxlen=self._sm.start_lookback_frames)
        self._pos = 0  # stream position in samples of the next frame
        self._open: _Open | None = None
        self._seq = 0
        self._prefix = segment_prefix or f"{stream_id}-"
        self._lock = threading.RLock()
        self._closed = False
        self._finals: list[str] = []  # recent final texts, the decoder's optional context

    # ---- caller thread -------------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> None:
        """Feed int16 16 kHz mono samples (any length)."""
        if self._closed:
            return
        if pcm.dtype != np.int16:
            raise TypeError(f"push expects int16 samples, got {pcm.dtype}")
        data = np.concatenate([self._residual, pcm.reshape(-1)]) if self._residual.size else pcm.reshape(-1)
        n_frames = data.shape[0] // self._frame
        self._residual = data[n_frames * self._frame :].copy()
        silent = 0
        with self._lock:
            for i in range(n_frames):
                frame = data[i * self._frame : (i + 1) * self._frame]
                voiced = self._vad.is_speech(frame)
                silent += not voiced
                self._step(frame, voiced)
        self._ctx.on_frames(n_frames, silent)

    def flush(self) -> None:
        """End the open utterance now (track ended, shutdown): its final is decoded and emitted."""
        with self._lock:
            op = self._open
            if op is not None:
                self._finish(op, reason="flush")
            self._sm = VadStateMachine(self.o.vad)

    def close(self) -> None:
        self.flush()
        self._closed = True

    @property
    def in_utterance(self) -> bool:
        return self._open is not None

    def _step(self, frame: np.ndarray, voiced: bool) -> None:
        now = time.monotonic()
        ev = self._sm.step(voiced)
        self._pos += frame.shape[0]
        op = self._open
        if op is None:
            self._ring.append(frame)
            if ev is VadEvent.START:
                audio = np.concatenate(list(self._ring))
                self._ring.clear()
                utt = Utterance(self._new_id(), self._pos - audio.shape[0])
                utt.append(audio)
                utt.last_voiced_sample = self._pos
                self._open = _Open(utt, self._ctx.tier_index(), last_voiced_wall=now, last_partial_request=now)
            return
        op.utt.append(frame)
        if voiced:
            op.utt.last_voiced_sample = self._pos
            op.last_voiced_wall = now
        if ev is VadEvent.END:
            self._finish(op, reason="vad")
            return
        cut = cut_point(op.utt, self.o.segmenter)
        if cut is not None:
            self._cut(op, cut)
            return
        silence_ms = (self._pos - op.utt.last_voiced_sample) * 1000 // SAMPLE_RATE
        if silence_ms >= self.o.speculative_ms and op.speculated_at != op.utt.last_voiced_sample:
            self._speculate(op)
        elif voiced:
            self._maybe_partial(op, now)

    def _new_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq}"

    # ---- job submission (caller thread, lock held) ---------------------------------------------------
    def _final_audio(self, op: _Open) -> np.ndarray:
        end = min(op.utt.n, op.utt.last_voiced_sample - op.utt.start_sample + self.o.tail_ms * SAMPLES_PER_MS)
        return op.utt.audio()[:end]

    def _speculate(self, op: _Open) -> None:
        op.speculated_at = op.utt.last_voiced_sample
        op.speculative = None
        op.speculative_done = False
        audio = self._final_audio(op).copy()
        marker = op.speculated_at
        wall = op.last_voiced_wall

        def run() -> None:
            with self._lock:
                if op.speculated_at != marker or (op.ended and op.speculative_done):
                    return  # speech resumed: this guess is obsolete
            event = self._decode_final(op, audio, wall)
            with self._lock:
                if op.speculated_at != marker:
                    return
                op.speculative, op.speculative_done = event, True
                if op.ended:
                    self._emit_final(op, event)

        self._ctx.scheduler.submit_final(Job(run, "final"))

    def _finish(self, op: _Open, reason: str) -> None:
        self._open = None
        op.ended = True
        voiced_ms = self._sm.voiced_in_utterance * self.o.vad.frame_ms
        if reason == "vad" and voiced_ms < self.o.vad.min_speech_ms:
            op.speculated_at = SpeculationMark.CLICK  # a speculative final already queued must not emit
            return
        self._ctx.on_utterance((op.utt.last_voiced_sample - op.utt.start_sample) / SAMPLE_RATE)
        if op.speculated_at == op.utt.last_voiced_sample:
            if op.speculative_done:
                self._emit_final(op, op.speculative)
            return  # the speculative job emits when it completes
        op.speculated_at = op.utt.last_voiced_sample
        audio = self._final_audio(op).copy()
        wall = op.last_voiced_wall if reason == "vad" else time.monotonic()

        def run() -> None:
            event = self._decode_final(op, audio, wall)
            with self._lock:
                self._emit_final(op, event)

        self._ctx.scheduler.submit_final(Job(run, "final"))

    def _cut(self, op: _Open, cut: int) -> None:
        head, rest = op.utt.split_at(cut, self._new_id())
        op.ended = True
        op.speculated_at = SpeculationMark.CUT  # invalidate any speculative final of the uncut utterance
        head_utt = Utterance(op.utt.segment_id, op.utt.start_sample)
        head_utt.append(head)
        head_op = _Open(head_utt, op.tier, ended=True)
        wall = time.monotonic()

        def run() -> None:
            event = self._decode_final(head_op, head, wall)
            with self._lock:
                self._emit_final(head_op, event)

        self._ctx.scheduler.submit_final(Job(run, "final"))
        self._open = _Open(rest, self._ctx.tier_index(), last_voiced_wall=op.last_voiced_wall,
                           last_partial_request=wall)

    def _maybe_partial(self, op: _Open, now: float) -> None:
        _idx, tier, _eng = self._ctx.engine_for(op.tier)
        interval = tier.partial_interval_ms / 1000
        if interval <= 0 or now - op.last_partial_request < interval:
            return
        if op.utt.n < self.o.min_partial_audio_ms * SAMPLES_PER_MS:
            return
        op.last_partial_request = now
        self._ctx.scheduler.submit_partial(self.stream_id, Job(lambda: self._run_partial(op, now), "partial"))

    # ---- inference thread ----------------------------------------------------------------------------
    def _run_partial(self, op: _Open, requested: float) -> None:
        with self._lock:
            if op.ended or self._open is not op:
                return
            audio = op.utt.audio().copy()
            committed = " ".join(op.agreement.committed)
        _idx, tier, engine = self._ctx.engine_for(op.tier)
        # Only the unstable tail is generated (the committed words are forced as a prefix), and it is short:
        # capping it keeps a partial from delaying the next final by more than a few decoder steps.
        hyp = engine.transcribe(audio, beam_size=1, language=self.o.language, prefix=committed,
                                max_new_tokens=self.o.partial_max_new_tokens)
        self._ctx.on_inference("partial", hyp, audio.shape[0] / SAMPLE_RATE)
        text, _why = check(hyp.text, hyp.no_speech_prob, hyp.avg_logprob, audio.shape[0] / SAMPLE_RATE,
                           self.o.guards)
        with self._lock:
            if op.ended or self._open is not op or text is None:
                return
            stable, unstable = op.agreement.update(text)
            end = (op.utt.start_sample + audio.shape[0]) / SAMPLE_RATE
            event = TranscriptEvent(
                stream_id=self.stream_id, speaker=self.speaker, segment_id=op.utt.segment_id,
                text=(stable + " " + unstable).strip(), is_final=False,
                start=op.utt.start_sample / SAMPLE_RATE, end=end, stable=stable, unstable=unstable,
                language=hyp.language, tier=tier.name, processing_ms=(hyp.encode_s + hyp.decode_s) * 1000,
                latency_ms=(time.monotonic() - requested) * 1000,
            )
            self._deliver(event)

    def _decode_final(self, op: _Open, audio: np.ndarray, speech_end_wall: float) -> _Final | None:
        _idx, tier, engine = self._ctx.engine_for(op.tier)
        context = " ".join(self._finals[-self.o.context_finals:]) if self.o.context_finals else ""
        hyp = engine.transcribe(audio, beam_size=tier.beam_size, language=self.o.language, context=context)
        dur = audio.shape[0] / SAMPLE_RATE
        self._ctx.on_inference("final", hyp, dur)
        text, why = check(hyp.text, hyp.no_speech_prob, hyp.avg_logprob, dur, self.o.guards)
        if text is None:
            log.debug("stream %s dropped utterance %s: %s", self.stream_id, op.utt.segment_id, why)
            return None
        self._finals.append(text)
        del self._finals[:-8]
        start = op.utt.start_sample / SAMPLE_RATE
        event = TranscriptEvent(
            stream_id=self.stream_id, speaker=self.speaker, segment_id=op.utt.segment_id, text=text, is_final=True,
            start=start, end=start + dur, stable=text, unstable="", language=hyp.language, tier=tier.name,
            processing_ms=(hyp.encode_s + hyp.decode_s) * 1000, latency_ms=0.0,
        )
        return _Final(event, speech_end_wall)

    def _emit_final(self, op: _Open, result: _Final | None) -> None:
        if result is None or op.emitted:
            return
        op.emitted = True
        latency = (time.monotonic() - result.speech_end_wall) * 1000
        self._deliver(replace(result.event, latency_ms=latency))

    def _deliver(self, event: TranscriptEvent) -> None:
        self._ctx.on_emit(event)
        try:
            self._on_event(event)
        except Exception:
            log.exception("event sink failed for stream %s", self.stream_id)
