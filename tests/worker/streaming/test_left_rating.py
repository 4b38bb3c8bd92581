"""A commit no decode rated past its cut (a guess committed in a pause) ends with the full stop Whisper puts at
the end of any audio: the first partial of the part after it hears it and rates that stop, so a cut inside a
sentence is known as one before the rest's first pause (stand-in decoders, as in test_speculative_commit.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import SR, LengthEngine, SentenceEngine, finals, pipeline, push, silence


class RatingEngine(LengthEngine):
    """LengthEngine (no partial ever ends a sentence, so only a guess can cut), whose finals end with a full
    stop; a decode with word times after a forced start rates that start's full stop at ``stop_p``."""

    def __init__(self, stop_p: float) -> None:
        super().__init__()
        self.stop_p = stop_p
        self.partials: list[tuple[str, bool]] = []
        """(forced start, word times asked) of each partial."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        partial = max_new_tokens is not None
        if partial:
            self.partials.append((prefix, word_times))
        text = hyp.text if partial else f"{hyp.text}."
        if not word_times:
            return Hypothesis(text, 0.01, -0.1, "en", 0.0, 0.0, 0)
        words, forced = text.split(), prefix.split()
        probs = tuple(self.stop_p if i < len(forced) and w.endswith(".") else 0.9 for i, w in enumerate(words))
        ends = tuple(audio.shape[0] / 16000 * (i + 1) / len(words) for i in range(len(words)))
        return Hypothesis(text, 0.01, -0.1, "en", 0.0, 0.0, 0, word_ends=ends, word_probs=probs)


def early_pause(sentence: np.ndarray) -> np.ndarray:
    """Half a second of speech, a 110 ms pause (under commit_min_s into the part: only a rest may end there; too
    short for a confirming decode, which would hear the left context anyway), then the sentence."""
    return np.concatenate([sentence[: SR // 2], silence(110), sentence])


@pytest.mark.parametrize(("on", "pause"), [(True, True), (True, False), (False, True)],
                         ids=["rates", "no-early-pause", "off"])
@pytest.mark.parametrize("stop_p", [0.001, 0.6], ids=["inside-a-sentence", "sentence-end"])
def test_a_partial_hearing_an_early_pause_after_a_guessed_commit_rates_its_full_stop(
        sentence: np.ndarray, on: bool, pause: bool, stop_p: float) -> None:
    engine = RatingEngine(stop_p)
    ctx, pipe, events = pipeline(engine, PipelineOptions(partial_rates_left=on))
    # 240 ms: a guess (90 ms of quiet) that the speaker talks on after, shorter than an utterance's end.
    push(pipe, np.concatenate([silence(500), sentence, silence(240)]), ctx)
    push(pipe, early_pause(sentence) if pause else sentence, ctx)
    assert ctx.scheduler.wait_idle(10)
    head = finals(events)[0]
    assert head.text.endswith("."), "the guess ends with a full stop, as Whisper's do"
    heard = [timed for prefix, timed in engine.partials if prefix.startswith(head.text.rstrip("."))]
    if not (on and pause):
        assert not heard, "no partial hears the committed part: off, or no pause where only a rest may end"
        ctx.scheduler.close()
        return
    assert heard == [True], "one partial heard it, with word times (the stop's rating)"
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    last_final = engine.calls[-1][1]
    assert head.text.rstrip(".") in last_final, "the rest's final hears the committed part"
    assert (head.text in last_final) == (stop_p >= PipelineOptions().commit_rest_stop_prob), \
        "forced with its full stop only when rated a sentence end"
    ctx.scheduler.close()


class Marking(SentenceEngine):
    """SentenceEngine whose partials read the pause as a sentence end ("samples P. Next") or, with ``mark``
    ", next", as a clause; finals read a sentence. Notes each partial's forced start."""

    def __init__(self, mark: str = ". Next") -> None:
        super().__init__()
        self.mark = mark
        self.partial_prefixes: list[str] = []

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        if max_new_tokens is None:
            return hyp
        self.partial_prefixes.append(prefix)
        return dataclasses.replace(hyp, text=hyp.text.replace(". Next", self.mark))


def test_a_commit_a_confirming_decode_read_past_its_cut_is_not_rated_again(sentence: np.ndarray) -> None:
    engine = Marking()
    ctx, pipe, events = pipeline(engine, PipelineOptions())
    push(pipe, np.concatenate([silence(500), sentence, silence(150), early_pause(sentence), silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    first, *_ = finals(events)
    assert len(finals(events)) >= 2 and first.text.endswith("."), "the partial's sentence end was committed"
    assert not [p for p in engine.partial_prefixes if p.startswith(first.text)], \
        "a decode read that sentence end hearing what follows: no partial hears the committed part"
    ctx.scheduler.close()


@pytest.mark.parametrize("mark", [". Next", ", next"], ids=["sentence-end", "clause"])
def test_a_guess_a_partial_confirmed_at_a_clause_is_rated(sentence: np.ndarray, mark: str) -> None:
    engine = Marking(mark)
    # A guess in the pause, which may not commit alone: only once a partial confirms the pause.
    ctx, pipe, events = pipeline(engine, PipelineOptions(commit_confirm_final=False,
                                                         commit_clause_unmarked_pause_ms=1000))
    push(pipe, np.concatenate([silence(500), sentence, silence(240), early_pause(sentence), silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    first, *_ = finals(events)
    assert len(finals(events)) >= 2 and first.text.endswith(".")
    heard = [p for p in engine.partial_prefixes if p.startswith(first.text)]
    assert len(heard) == (1 if mark.startswith(",") else 0), heard
    ctx.scheduler.close()


@pytest.mark.parametrize("stop_p", [0.001, 0.6], ids=["inside-a-sentence", "sentence-end"])
def test_an_utterance_right_after_a_final_rates_its_full_stop(sentence: np.ndarray, stop_p: float) -> None:
    # The VAD ends the first utterance in a 600 ms pause (hangover 250 ms); the next one starts within the
    # follow-on gap, so it hears that final, whose full stop no decode heard past.
    engine = RatingEngine(stop_p)
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_gap_ms=1000))
    push(pipe, np.concatenate([silence(500), sentence, silence(600)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    push(pipe, np.concatenate([early_pause(sentence), silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == 2 and finals(events)[1].segment_id != first.segment_id
    heard = [timed for prefix, timed in engine.partials if prefix.startswith(first.text.rstrip("."))]
    assert heard == [True], "its first partial heard the final before it, with word times"
    last_final = engine.calls[-1][1]
    assert last_final.startswith(first.text.rstrip(".")), "its final hears the final before it"
    assert (first.text in last_final) == (stop_p >= PipelineOptions().commit_rest_stop_prob), \
        "forced with its full stop only when rated a sentence end"
    ctx.scheduler.close()
