"""Stand-in decoders and drivers shared by the streaming suites: these tests are about which audio reaches the
decoder and when, not about recognition (the real model is exercised in test_runtime.py)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace

import numpy as np

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.files.feed import feed
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.finals import FinalRequest, decode_final
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline
from livenexus_worker.streaming.scheduler import InferenceScheduler
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal

SR = 16000


class LengthEngine:
    """Answers with the audio length so tests can see exactly what was decoded."""

    threads = 1

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.contexts: list[str] = []

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        self.contexts.append(context)
        return Hypothesis(f"{prefix} samples {audio.shape[0]}".strip(), 0.01, -0.1, "en", 0.0, 0.0, 0)


class Ctx:
    def __init__(self) -> None:
        self.scheduler = InferenceScheduler()
        self.engine = LengthEngine()
        self.utterances: list[float] = []
        self.speakers = 1
        self.streams = 1
        self.draft: LengthEngine | None = None
        """The rung's partial model, when it has one."""

    def tier_index(self) -> int:
        return 0

    def active_speakers(self) -> int:
        return self.speakers

    def stream_count(self) -> int:
        return self.streams

    def engine_for(self, tier_index: int) -> tuple[int, TierSpec, LengthEngine]:
        return 0, TierSpec("fake", "int8", 1, 250), self.engine

    def partial_engine_for(self, tier_index: int) -> LengthEngine:
        return self.draft or self.engine

    def on_frames(self, frames: int, silent: int) -> None:
        pass

    def on_inference(self, kind: str, hyp: Hypothesis, audio_s: float) -> None:
        pass

    def on_emit(self, event: TranscriptEvent) -> None:
        pass

    def on_utterance(self, speech_s: float) -> None:
        self.utterances.append(speech_s)


def run(audio: np.ndarray, options: PipelineOptions | None = None) -> tuple[Ctx, list[TranscriptEvent]]:
    ctx = Ctx()
    events: list[TranscriptEvent] = []
    pipe = StreamPipeline("s", "spk", ctx, events.append, options)  # type: ignore[arg-type]
    feed(pipe, audio)
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    return ctx, events


def silence(ms: int) -> np.ndarray:
    return np.zeros(16 * ms, dtype=np.int16)


def last_sentence_end(audio: np.ndarray) -> int | None:
    """Where the last sentence before a pause ends in ``audio`` (samples), or None when no pause is in it. The
    stand-in decoders' rule: sentences are apart by 110 ms or more of digital silence; a shorter gap is inside a
    sentence (a stop, a breath)."""
    loud = np.nonzero(audio)[0]
    gaps = np.nonzero(np.diff(loud) >= 110 * 16)[0] if loud.size else loud
    return int(loud[gaps[-1]]) + 1 if gaps.size else None


class SentenceEngine(LengthEngine):
    """Answers like Whisper on speech separated by digital silence. A final is one sentence, "samples N." for N
    samples. A partial whose audio goes on after a pause reads "samples P. Next": a sentence that ended at the
    pause and the first word of the next. Can hold every final-sized decode until released."""

    def __init__(self, hold: bool = False, aligned: bool = True, following: str = "Next") -> None:
        super().__init__()
        self.aligned = aligned
        self.following = following
        self.final_sized: list[int] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        partial = max_new_tokens is not None
        if not partial:
            assert self.release.wait(10)
            self.final_sized.append(audio.shape[0])
        self.calls.append((audio.shape[0], prefix))
        self.contexts.append(context)
        text = f"samples {audio.shape[0]}."
        end = last_sentence_end(audio)
        if not partial and word_times and end is not None:
            # A final that also hears the look-ahead: the sentence, then the next one's first word, aligned.
            ends = (end / 2 / SR, end / SR, audio.shape[0] / SR)
            return Hypothesis(f"samples {end}. Next", 0.01, -0.1, "en", 0.0, 0.0, 0, word_ends=ends)
        if partial and end is not None:
            # About one word per 0.3 s, as people speak: the pipeline reads the speaker's pace from the words.
            text = f"samples {end}" + "".join(f" w{i}" for i in range(end // 4800)) + ". " + self.following
            if word_times and self.aligned:  # the sentence's words end evenly up to its end, the next at the audio's
                after = len(self.following.split())
                n = len(text.split()) - after
                ends = (*(end * (i + 1) / n / SR for i in range(n)), *[audio.shape[0] / SR] * after)
                return Hypothesis(text, 0.01, -0.1, "en", 0.0, 0.0, 0, word_ends=ends)
        return Hypothesis(text, 0.01, -0.1, "en", 0.0, 0.0, 0)


class FastCtx(Ctx):
    """Partials as often as the decoder keeps up: the tests push audio faster than real time, and the wall-clock
    partial interval would otherwise let almost none through."""

    def engine_for(self, tier_index: int) -> tuple[int, TierSpec, LengthEngine]:
        return 0, TierSpec("fake", "int8", 1, 1), self.engine


def pipeline(engine: LengthEngine, options: PipelineOptions | None = None
             ) -> tuple[Ctx, StreamPipeline, list[TranscriptEvent]]:
    ctx = FastCtx()
    ctx.engine = engine
    events: list[TranscriptEvent] = []
    return ctx, StreamPipeline("s", "spk", ctx, events.append, options), events  # type: ignore[arg-type]


def push(pipe: StreamPipeline, audio: np.ndarray, ctx: Ctx | None = None) -> None:
    """10 ms chunks; with ``ctx``, paced like a live stream: after every 30 ms VAD frame the decoder catches up
    (the stand-in decodes in no time, as a real one keeps up in real time) and the wall clock moves on past
    the 1 ms partial interval, so each voiced frame asks for a partial."""
    for i in range(0, audio.shape[0], 160):
        pipe.push(audio[i : i + 160])
        if ctx is not None and i % 480 == 0:
            time.sleep(0.0011)
            assert ctx.scheduler.wait_idle(10)


def finals(events: list[TranscriptEvent]) -> list[TranscriptEvent]:
    return [e for e in events if e.is_final]


def decoded(e: TranscriptEvent) -> int:
    """Samples of speech the final's text stands for (the stand-in decoders write it as "samples N")."""
    return int(e.text.split()[1].rstrip(".,"))


def check_contiguous(fs: list[TranscriptEvent]) -> None:
    """Finals in order, never overlapping, unique ids, each holding the speech its times cover (a committed
    head also holds the start of its pause, up to the cut)."""
    for a, b in itertools.pairwise(fs):
        assert a.end <= b.start + 1e-9, (a, b)
    for f in fs:
        span = (f.end - f.start) * SR
        assert span - 200 * 16 <= decoded(f) <= span + 1, f
    assert len({f.segment_id for f in fs}) == len(fs)


class CostlyPartials(SentenceEngine):
    """Partials that report 5 s of decode time: the load budget stretches the cadence to ~8 s (the tier's
    interval stays 1 ms), as on a node busy with many speakers."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        return replace(hyp, decode_s=5.0) if max_new_tokens is not None else hyp


def finish_contiguous(ctx: Ctx, pipe: StreamPipeline, events: list[TranscriptEvent], rest: np.ndarray) -> None:
    """The speaker says ``rest`` and stops: every final is in, contiguous (:func:`check_contiguous`)."""
    push(pipe, np.concatenate([rest, silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    check_contiguous(finals(events))
    ctx.scheduler.close()


def final_from(engine: LengthEngine, seconds: float, req: FinalRequest, options: PipelineOptions, beam: int = 1,
               keep_until: int | None = None, agreed: tuple[str, ...] = ()) -> PendingFinal | None:
    """``decode_final`` of ``seconds`` of audio, the whole of a new utterance, on ``engine`` at ``beam``; its
    partials agreed on ``agreed``."""
    ctx = Ctx()
    ctx.engine = engine
    ctx.engine_for = lambda _i: (0, TierSpec("fake", "int8", beam, 250), engine)  # type: ignore[method-assign]
    op = OpenUtterance(Utterance("s-1", 0), 0)
    audio = np.ones(int(seconds * SR), dtype=np.int16)
    op.utt.append(audio)
    op.agreement.committed = list(agreed)
    try:
        return decode_final(ctx, options, req, op, audio, 0.0, keep_until=keep_until)  # type: ignore[arg-type]
    finally:
        ctx.scheduler.close()
