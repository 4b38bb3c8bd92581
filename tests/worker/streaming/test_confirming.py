"""The partial that confirms a pause: it runs past the load-stretched cadence and before other streams' partials, it
alone aligns its words, and with commit_confirm_final it is decoded as a final (stand-in decoders from fakes.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming import commits
from livenexus_worker.streaming.pipeline import PipelineOptions
from livenexus_worker.streaming.scheduler import Job
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import OpenUtterance

from .fakes import (
    SR,
    CostlyPartials,
    LengthEngine,
    SentenceEngine,
    decoded,
    finals,
    finish_contiguous,
    last_sentence_end,
    pipeline,
    push,
    silence,
)


@pytest.mark.parametrize("prompt", [True, False], ids=["confirming-partial", "cadence-only"])
def test_a_pause_gets_its_confirming_partial_without_waiting_for_the_cadence(
        sentence: np.ndarray, prompt: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # (Greedy partials, commit_confirm_final off: with it on, the pause's partial is the commit itself.)
    if not prompt:  # the cadence alone: no partial for ~8 s after the first, so nothing confirms the pause
        monkeypatch.setattr(commits, "confirms_pause", lambda op, o: False)
    ctx, pipe, events = pipeline(CostlyPartials(), PipelineOptions(final_left_context_s=0.0,
                                                                   commit_confirm_final=False))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    partials = [e for e in events if not e.is_final]
    if prompt:
        (first,) = finals(events)
        assert pipe.in_utterance and "Next" not in first.text, "committed while the speaker goes on"
        assert len(partials) == 2, "the first partial, then one for the pause: none from the stretched cadence"
    else:
        assert finals(events) == [] and len(partials) == 1
    finish_contiguous(ctx, pipe, events, sentence[500 * 16 :])


def test_a_confirming_partial_that_never_ran_leaves_the_next_one_its_way_past_the_cadence(
        sentence: np.ndarray) -> None:
    # The load stretched the cadence to ~8 s. The partial asked for when the pause's look-ahead was heard is
    # dropped before it runs (as the scheduler drops a stale one): the next frame asks again.
    ctx, pipe, events = pipeline(CostlyPartials(), PipelineOptions(final_left_context_s=0.0))
    submit, dropped = ctx.scheduler.submit_partial, []

    def drop_one(key: str, job: object) -> None:
        if len(dropped) < 1 and pipe._open is not None and pipe._open.pauses:
            dropped.append(job)
            return
        submit(key, job)  # type: ignore[arg-type]

    ctx.scheduler.submit_partial = drop_one  # type: ignore[method-assign]
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert dropped and len(finals(events)) == 1 and pipe.in_utterance
    ctx.scheduler.close()


def test_the_partial_that_may_confirm_a_pause_is_urgent_and_the_others_are_not(sentence: np.ndarray) -> None:
    ctx, pipe, _events = pipeline(LengthEngine(), PipelineOptions(final_left_context_s=0.0))
    submit, asked = ctx.scheduler.submit_partial, []

    def record(key: str, job: Job) -> None:
        op = pipe._open
        heard = op is not None and any(op.utt.n - c >= 300 * 16 for c, _ in op.pauses)
        asked.append((job.urgent, heard))
        submit(key, job)

    ctx.scheduler.submit_partial = record  # type: ignore[method-assign]
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert (False, False) in asked and (True, True) in asked
    assert all(heard for urgent, heard in asked if urgent)
    ctx.scheduler.close()


class _RecordingPartials(SentenceEngine):
    """Notes, for every partial, how much audio it heard and whether its words were aligned."""

    def __init__(self) -> None:
        super().__init__()
        self.partials: list[tuple[int, bool]] = []

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        if max_new_tokens is not None:
            self.partials.append((audio.shape[0], word_times))
        return super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context, word_times)


def test_partials_align_their_words_only_once_a_pause_look_ahead_is_heard(sentence: np.ndarray) -> None:
    # Aligning costs a decoder pass, and a partial can end a sentence only at a pause whose look-ahead
    # (300 ms) it heard: before that, a partial is not aligned even though a pause is waiting. (Partials
    # that cut at agreed words align them too, every two words: test_trims.py.)
    engine = _RecordingPartials()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0, commit_confirm_final=False,
                                                         partial_trim=False))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 100 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    before = list(engine.partials)
    assert len(before) >= 3 and not any(aligned for _n, aligned in before), before
    assert finals(events) == []
    push(pipe, sentence[100 * 16 : 500 * 16], ctx)  # the look-ahead is heard now
    assert ctx.scheduler.wait_idle(10)
    flags = [aligned for _n, aligned in engine.partials[len(before):]]
    assert True in flags and not any(flags[: flags.index(True)]) and all(flags[flags.index(True):]), \
        "aligned from the first partial that hears the look-ahead on"
    (first,) = finals(events)  # and it commits the sentence, cut in the pause
    lead = int((0.5 - first.start) * SR)
    assert lead + sentence.shape[0] < (first.end - first.start) * SR <= lead + sentence.shape[0] + 150 * 16
    ctx.scheduler.close()


@pytest.mark.parametrize("confirm_final", [True, False], ids=["decoded-as-final", "greedy-then-commit-decode"])
def test_a_confirming_partial_decoded_as_a_final_commits_with_its_own_words(sentence: np.ndarray,
                                                                            confirm_final: bool) -> None:
    # Measured on the meeting benchmark: a sentence found by its first confirming partial was final ~1.2 s after
    # its end, ~0.45 s of it the commit's second decode.
    engine = SentenceEngine()
    ctx, pipe, events = pipeline(engine, PipelineOptions(final_left_context_s=0.0, commit_heard_after_cut_ms=200,
                                                         commit_confirm_final=confirm_final))
    push(pipe, np.concatenate([silence(500), sentence, silence(150), sentence[: 500 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    (first,) = finals(events)
    assert pipe.in_utterance and "Next" not in first.text, "committed while the speaker goes on"
    assert decoded(first) == int((0.5 - first.start) * SR) + sentence.shape[0], "cut at the sentence's own pause"
    # Decoded as a final, the partial that heard the look-ahead is the commit's decode; greedy, the commit
    # decodes again with the tier's beam, hearing no more than commit_heard_after_cut_ms (here 200) after the
    # cut: the partial heard its 300 ms look-ahead.
    (heard,) = engine.final_sized
    if confirm_final:
        assert sum(n == heard for n, _ in engine.calls) == 1
    else:
        cut = heard - 200 * 16
        assert decoded(first) <= cut <= decoded(first) + 150 * 16, "200 ms after a cut in the pause"
        assert any(n > heard for n, _ in engine.calls), "the greedy partial that confirmed it heard more"
    finish_contiguous(ctx, pipe, events, sentence[500 * 16 :])


def test_only_a_long_enough_pause_gets_a_final_grade_confirming_decode() -> None:
    # A confirming decode (beam 5, the left context, word times) cost 0.42 s of the lane each, 117 a meeting
    # run, and ~3 in 4 of them found no sentence end: most pauses are gaps inside a sentence, and those are
    # shorter (72 of 260 inside sentences were 140 ms or more, 62 of 82 between sentences).
    o = PipelineOptions(commit_confirm_min_pause_ms=140)
    op = OpenUtterance(Utterance("s-1", 0), 0)
    op.utt.append(np.zeros(16000 * 3, dtype=np.int16))
    op.pauses.append((16000 * 2, 10.0))  # its look-ahead (300 ms) is in the 3 s held
    op.pause_lengths = {10.0: 100}
    assert commits.confirms_pause(op, o) and not commits.confirm_worth(op, o), "a 100 ms gap: a plain partial"
    assert commits.confirm_worth(op, replace(o, commit_confirm_min_pause_ms=0)), "0: any pause"
    op.pause_lengths = {10.0: 150}
    assert commits.confirm_worth(op, o)
    op.partial_heard = op.utt.n
    assert not commits.confirm_worth(op, o), "its look-ahead was heard already: no pause is fresh"


class ReadsOn(LengthEngine):
    """A final-grade decode reads on through the pause ("samples N go on", no mark); a greedy partial that hears
    past it ends its text there with a full stop and nothing after it ("samples N.")."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        end = last_sentence_end(audio)
        if end is None:
            return Hypothesis(f"samples {audio.shape[0]}.", 0.01, -0.1, "en", 0.0, 0.0, 0)
        times = (end / 2 / SR, end / SR) if word_times else ()
        if max_new_tokens is not None:
            return Hypothesis(f"samples {end}.", 0.01, -0.1, "en", 0.0, 0.0, 0, word_ends=times,
                              word_probs=(0.9, 0.9) if word_times else ())
        return Hypothesis(f"samples {end} go on", 0.01, -0.1, "en", 0.0, 0.0, 0,
                          word_ends=(*times, audio.shape[0] / SR, audio.shape[0] / SR) if word_times else ())


@pytest.mark.parametrize("confirm_final", [True, False], ids=["read-through-first", "greedy-only"])
def test_a_greedy_partial_does_not_cut_where_the_confirming_decode_read_on(sentence: np.ndarray,
                                                                           confirm_final: bool) -> None:
    # 8 speakers on 2 cores: the confirming decode read "to the 12th because" through the pause; the greedy
    # partial after it ended "We moved the launch to the 12." there, was cut inside the sentence, and its final
    # was among the slowest (1.2-1.8 s after the pause). Without a confirming decode the same partial still cuts.
    ctx, pipe, events = pipeline(ReadsOn(), PipelineOptions(final_left_context_s=0.0,
                                                            commit_confirm_final=confirm_final))
    head = sentence[: 2000 * 16]  # a part under commit_clause_after_s: only a mark may end a clause in it
    push(pipe, np.concatenate([silence(500), head, silence(150), sentence[: 800 * 16]]), ctx)
    assert ctx.scheduler.wait_idle(10)
    op = pipe._open
    assert op is not None and pipe.in_utterance
    if confirm_final:
        assert finals(events) == [] and op.read_through > 0, "no cut where the final-grade decode read on"
    else:
        (first,) = finals(events)
        assert op.read_through == 0 and decoded(first) <= int((0.5 - first.start) * SR) + head.shape[0]
    push(pipe, np.concatenate([sentence[800 * 16 :], silence(1000)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    assert len(finals(events)) == (1 if confirm_final else 2), "the speaker stopped: the rest is final too"
    ctx.scheduler.close()
