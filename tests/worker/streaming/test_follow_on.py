"""Left context across VAD ends (left.FollowOn): an utterance that starts soon after the previous final's
audio hears that final before itself, as the part after a commit does (stand-in decoder from fakes.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline

from .fakes import SR, Ctx, LengthEngine, silence


@pytest.mark.parametrize(("gap_ms", "option_ms", "heard"), [(600, 1000, True), (2000, 1000, False), (600, 0, False)],
                         ids=["short-pause", "long-pause", "off"])
def test_an_utterance_soon_after_a_final_hears_it(sentence: np.ndarray, gap_ms: int, option_ms: int,
                                                  heard: bool) -> None:

    # The VAD ends the first utterance in the pause (hangover 250 ms); without commits, to see only this.
    ctx, events = paced(PipelineOptions(commit_in_speech=False, final_left_context_gap_ms=option_ms),
                        np.concatenate([silence(500), sentence, silence(gap_ms)]),
                        np.concatenate([sentence, silence(1000)]))
    first, second = [e for e in events if e.is_final]
    assert first.segment_id != second.segment_id
    own = round((second.end - second.start) * SR)
    forced = [(size, prefix) for size, prefix in ctx.engine.calls if prefix == first.text]
    if heard:
        before = round((first.end - first.start) * SR)
        assert forced and forced[-1][0] == before + own, "the first final's audio, then the second utterance's"
        assert second.text == f"samples {before + own}", "says only what followed the forced words"
    else:
        assert not forced, "decoded alone"
        assert second.text == f"samples {own}"


def paced(options: PipelineOptions, *parts: np.ndarray, engine: LengthEngine | None = None,
          between: Callable[[], None] = lambda: None) -> tuple[Ctx, list[TranscriptEvent]]:
    """A pipeline fed ``parts`` one after the other, each decoded before the next comes (``between`` runs
    then), as a real-time stream would be."""
    ctx = Ctx()
    if engine is not None:
        ctx.engine = engine
    events: list[TranscriptEvent] = []
    pipe = StreamPipeline("s", "spk", ctx, events.append, options)  # type: ignore[arg-type]
    for part in parts:
        for i in range(0, part.shape[0], 160):
            pipe.push(part[i : i + 160])
        assert ctx.scheduler.wait_idle(10)
        between()
    pipe.flush()
    assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    return ctx, events


def test_a_dropped_final_is_no_one_s_context(sentence: np.ndarray) -> None:

    class DropsFirst(LengthEngine):
        """Hears nothing in the first utterance (the guards drop noise so)."""

        heard_second = False

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
            return hyp if self.heard_second else replace(hyp, text="")

    engine = DropsFirst()
    _ctx, events = paced(PipelineOptions(commit_in_speech=False),
                         np.concatenate([silence(500), sentence, silence(600)]),
                         np.concatenate([sentence, silence(1000)]), engine=engine,
                         between=lambda: setattr(engine, "heard_second", True))
    (second,) = [e for e in events if e.is_final]
    assert second.text == f"samples {round((second.end - second.start) * SR)}", "decoded alone"


def test_an_utterance_that_started_while_the_final_before_it_was_decoded_hears_it(sentence: np.ndarray) -> None:

    class Held(LengthEngine):
        """Decodes nothing until released."""

        gate = threading.Event()

        def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                       max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
            assert self.gate.wait(10)
            return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)

    engine = Held()
    threading.Timer(0.5, engine.gate.set).start()
    options = PipelineOptions(commit_in_speech=False, final_left_context_gap_ms=1000)
    # The second utterance is under way (no silence after it yet) when the first one's final comes out.
    _ctx, events = paced(options, np.concatenate([silence(500), sentence, silence(600), sentence]),
                        silence(1000), engine=engine)
    first, second = [e for e in events if e.is_final]
    before, own = round((first.end - first.start) * SR), round((second.end - second.start) * SR)
    assert (before + own, first.text) in engine.calls and second.text == f"samples {before + own}"
