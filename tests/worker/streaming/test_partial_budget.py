"""Partial cadence follows a CPU budget: partials of all speakers together may keep the inference thread busy
only a share of the time, so with more speakers or dearer partials each stream asks less often (measured decode
cost, stand-in decoder, a fake clock so the count does not depend on this machine's speed)."""

from __future__ import annotations

import dataclasses
import time
import types
from dataclasses import replace

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming import pipeline as pipeline_module
from livenexus_worker.streaming.cadence import partial_due, partial_share
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import OpenUtterance

from .fakes import Ctx, LengthEngine, silence


class CostEngine(LengthEngine):
    """Reports that every decode took ``cost`` seconds; counts partial decodes. A final really takes
    ``final_s`` (its cost is measured on the wall clock)."""

    def __init__(self, cost: float, final_s: float = 0.0) -> None:
        super().__init__()
        self.cost = cost
        self.final_s = final_s
        self.partials = 0

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        hyp = super().transcribe(audio, beam_size, language, prefix, max_new_tokens, context)
        if max_new_tokens is not None:
            self.partials += 1
        else:
            time.sleep(self.final_s)
        return dataclasses.replace(hyp, encode_s=self.cost / 2, decode_s=self.cost / 2)


def partials_over(speech: np.ndarray, cost: float, speakers: int, monkeypatch: pytest.MonkeyPatch,
                  final_s: float = 0.0, budget: float = 0.0, alone: float = 0.6, threads: int = 1,
                  budget_alone: float = 0.0) -> int:
    clock = [1000.0]
    monkeypatch.setattr(pipeline_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    ctx = Ctx()
    ctx.engine = CostEngine(cost, final_s)
    ctx.engine.threads = threads
    ctx.speakers = speakers
    ctx.streams = speakers
    # No commits: the count must not depend on where pauses fall. The share is set: the sums below use it.
    options = PipelineOptions(commit_in_speech=False, partial_share=0.6, partial_share_alone=alone, cpu_budget=budget,
                              cpu_budget_alone=budget_alone)
    pipe = StreamPipeline("s", "spk", ctx, lambda e: None, options)  # type: ignore[arg-type]
    audio = np.concatenate([silence(300), speech])
    for i in range(0, audio.shape[0] - 480, 480):
        clock[0] += 0.03
        pipe.push(audio[i : i + 480])
        assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    return ctx.engine.partials


def test_partials_stretch_with_speakers_and_cost(sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    speech = np.concatenate([sentence] * 4)  # ~11 s without a pause: one utterance
    seconds = speech.shape[0] / 16000 - 1.0  # partials start after 1 s of audio
    cheap = partials_over(speech, 0.05, 1, monkeypatch)  # 0.05 x 1 / 0.6 < the tier's 250 ms: the tier decides
    assert cheap >= 0.8 * seconds / 0.25
    crowded = partials_over(speech, 0.15, 4, monkeypatch)  # 0.15 x 4 / 0.6 = 1 s between partials
    assert 0.8 * seconds / 1.0 <= crowded <= 1.2 * seconds / 1.0 + 1
    assert crowded < cheap / 3
    # A stream's CPU budget caps its own partials (0.15 / 0.45 = 1 every 0.33 s); the shared cadence of four
    # speakers is already slower than that, and the budget does not stretch it further.
    assert partials_over(speech, 0.15, 4, monkeypatch, budget=0.45) == crowded



def test_over_its_budget_a_decode_on_two_cores_costs_a_stream_twice_its_time(sentence: np.ndarray,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.15 s partials. Under budget the share is lane time: one speaker, 0.15 / 0.6 = every 0.25 s, the tier's
    # interval, on one thread or two. Over budget (0.15 / 0.25 s = 0.6 s of decode per second > 0.1) while
    # speakers wait for the one lane (two here: 0.15 x 2 / 0.6 = every 0.5 s at the shared share), the floor is
    # 0.25 of a core: every 0.6 s on one thread, every 1.2 s on two (each partial keeps two cores busy).
    # A speaker with the lane to itself keeps 0.25 of the lane's time on two threads too: every 0.6 s.
    speech = np.concatenate([sentence] * 4)
    seconds = speech.shape[0] / 16000 - 1.0
    for threads in (1, 2):
        assert partials_over(speech, 0.15, 1, monkeypatch, alone=0.6, threads=threads) >= 0.8 * seconds / 0.25
    one = partials_over(speech, 0.15, 2, monkeypatch, budget=0.1, threads=1)
    two = partials_over(speech, 0.15, 2, monkeypatch, budget=0.1, threads=2)
    assert 0.8 * seconds / 0.6 <= one <= 1.2 * seconds / 0.6 + 2
    assert 0.8 * seconds / 1.2 <= two <= 1.2 * seconds / 1.2 + 2
    alone = partials_over(speech, 0.15, 1, monkeypatch, budget=0.1, threads=2)
    assert 0.8 * seconds / 0.6 <= alone <= 1.2 * seconds / 0.6 + 2


def test_the_share_falls_to_its_floor_only_while_the_stream_is_over_budget() -> None:
    o = PipelineOptions(partial_share=0.6, cpu_budget=0.45, cpu_budget_alone=0.0,
                        partial_share_min=0.25)
    assert partial_share(o, 0.0, 2) == pytest.approx(0.6), "under budget: the full share"
    assert partial_share(o, 0.44, 2) == pytest.approx(0.6)
    assert partial_share(o, 0.45, 2) == pytest.approx(0.25), "at or over budget: the floor"
    assert partial_share(replace(o, cpu_budget=0.0), 2.0, 2) == pytest.approx(0.6), "no budget: the fixed share"


def test_a_stream_speaking_alone_has_the_larger_share() -> None:
    o = PipelineOptions(partial_share=0.6, partial_share_alone=0.75, cpu_budget=0.45, cpu_budget_alone=0.0,
                        partial_share_min=0.25)
    assert partial_share(o, 0.0, 1) == pytest.approx(0.75), "alone: no other stream's final waits behind it"
    assert partial_share(o, 0.0, 2) == pytest.approx(0.6), "another stream is open (speaking or not)"
    assert partial_share(o, 0.5, 1) == pytest.approx(0.25), "over budget alone: the floor all the same"
    assert partial_share(o, 0.5, 1, threads=2) == pytest.approx(0.125), "the floor is of a core"
    assert partial_share(o, 0.0, 1, threads=2) == pytest.approx(0.75), "under budget: lane time, any threads"


def test_a_lone_speaker_asks_for_partials_closer(sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # Partials of 0.225 s: at a share of 0.6 one every 0.375 s, at 0.75 every 0.3 s; two speakers keep 0.6.
    speech = np.concatenate([sentence] * 4)
    alone = partials_over(speech, 0.225, 1, monkeypatch, alone=0.75)
    shared_by_two = partials_over(speech, 0.225, 2, monkeypatch, alone=0.75)
    at_the_old_share = partials_over(speech, 0.225, 1, monkeypatch, alone=0.6)
    assert alone >= 1.15 * at_the_old_share, (alone, at_the_old_share)
    assert shared_by_two < at_the_old_share, "two speakers share 0.6 between them"


def test_costly_finals_leave_the_partials_less(sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # Four utterances, each ended by a second of silence: its final (and the guess in its pause) are decoded
    # while the stream goes on. Partials of 0.2 s at a share of 0.6 alone stay under a 0.45 budget with these
    # pauses; finals of 0.8 s each (~0.4 of a core) push the stream over it, and its partials slow down.
    speech = np.concatenate([np.concatenate([sentence, silence(1000)]) for _ in range(4)])
    cheap = partials_over(speech, 0.2, 1, monkeypatch, final_s=0.0, budget=0.45)
    unbudgeted = partials_over(speech, 0.2, 1, monkeypatch, final_s=0.0, budget=0.0)
    assert cheap == unbudgeted, "under budget the cadence is the fixed share's"
    costly = partials_over(speech, 0.2, 1, monkeypatch, final_s=0.8, budget=0.45)
    assert costly < 0.9 * cheap, (costly, cheap)
    assert partials_over(speech, 0.2, 1, monkeypatch, final_s=0.8, budget=0.0) == unbudgeted, \
        "without a budget the finals' cost does not matter"


def test_continuous_speech_is_held_near_the_budget(sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~22 s of speech without a pause, partials of 0.2 s: unbudgeted they use over a third of a core here; a
    # budget of 0.2 holds the stream near it (the floor's 0.25 share when over, the full share when back under).
    speech = np.concatenate([sentence] * 8)
    seconds = speech.shape[0] / 16000
    free = partials_over(speech, 0.2, 1, monkeypatch)
    held = partials_over(speech, 0.2, 1, monkeypatch, budget=0.2)
    assert free * 0.2 / seconds > 0.3, free
    assert held < 0.8 * free and held * 0.2 / seconds <= 0.25, (held, free)


def test_a_new_utterance_s_first_partial_is_not_held_back_by_the_budget() -> None:
    # One speaker's separated sentences went over the budget, and from the third sentence on the first words
    # of each showed 2.1-2.3 s after the voice began: the floor's share spaced even the first partial.
    o = PipelineOptions(partial_share=0.6, partial_share_alone=0.75, cpu_budget=0.40, cpu_budget_alone=0.0,
                        partial_share_min=0.25)
    floor = partial_share(o, 0.5, 1, threads=2)
    assert floor == pytest.approx(0.125)
    op = OpenUtterance(Utterance("s-1", 0), 0, last_partial_request=100.0)
    op.utt.append(np.zeros(16000 * 12 // 10, dtype=np.int16))  # 1.2 s: past min_partial_audio_ms
    # 0.3 s partials at the floor's share: one every 2.4 s; 0.5 s after the utterance began, only the first.
    assert partial_due(op, o, 100.5, 0.25, 0.3, 1, 1, floor, 0.75)
    op.partial_heard = op.utt.n
    assert not partial_due(op, o, 100.5, 0.25, 0.3, 1, 1, floor, 0.75), "later partials keep the cadence"
    op.partial_heard, op.after_commit = 0, True
    assert not partial_due(op, o, 100.5, 0.25, 0.3, 1, 1, floor, 0.75), "the rest of a cut sentence too"


def test_over_budget_the_floor_is_of_a_core_only_while_speakers_wait_for_a_lane() -> None:
    o = PipelineOptions(partial_share=0.6, partial_share_alone=0.75, cpu_budget=0.40, cpu_budget_alone=0.0,
                        partial_share_min=0.25)
    assert partial_share(o, 0.5, 1, threads=2, contended=True) == pytest.approx(0.125)
    assert partial_share(o, 0.5, 1, threads=2, contended=False) == pytest.approx(0.25), "of the lane's time"
    assert partial_share(o, 0.3, 1, threads=2, contended=False) == pytest.approx(0.75), "under budget: the full share"


@pytest.mark.parametrize("speakers", [1, 4])
def test_the_first_words_of_each_sentence_come_soon_over_budget_and_under_load(
        sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch, speakers: int) -> None:
    # Sentences separated by a second of silence, finals of 0.8 s push the stream over its budget, and with four
    # speakers on one lane the shared cadence is 0.2 x 4 / 0.6 = 1.3 s: each new utterance still gets its first
    # partial as soon as it holds min_partial_audio_ms.
    clock = [1000.0]
    monkeypatch.setattr(pipeline_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    ctx = Ctx()
    ctx.engine = CostEngine(0.2, 0.8)
    ctx.engine.threads = 2
    ctx.speakers = ctx.streams = speakers
    firsts: dict[str, float] = {}

    def on_event(ev: TranscriptEvent) -> None:
        if not ev.is_final and ev.segment_id not in firsts:
            firsts[ev.segment_id] = clock[0]

    options = PipelineOptions(commit_in_speech=False, cpu_budget=0.2, cpu_budget_alone=0.0, final_left_context_s=0.0)
    pipe = StreamPipeline("s", "spk", ctx, on_event, options)  # type: ignore[arg-type]
    audio = np.concatenate([np.concatenate([silence(1000), sentence]) for _ in range(4)])
    onsets = [clock[0] + (1.0 + i * (1.0 + sentence.shape[0] / 16000)) for i in range(4)]
    for i in range(0, audio.shape[0] - 480, 480):
        clock[0] += 0.03
        pipe.push(audio[i : i + 480])
        assert ctx.scheduler.wait_idle(10)
    ctx.scheduler.close()
    delays = [first - onset for onset, first in zip(onsets, sorted(firsts.values()), strict=True)]
    # min_partial_audio_ms (the pre-roll included) and a frame or two
    assert max(delays) < options.min_partial_audio_ms / 1000 + 0.2, delays


def test_a_stream_open_alone_has_the_larger_budget() -> None:
    # One speaker's separated sentences spend 0.55-0.6 core-s per s with two-thread beam-5 finals: at a budget
    # of 0.40 their partials came at the floor's share, 0.7-0.8 s apart on an idle node.
    o = PipelineOptions(partial_share=0.6, partial_share_alone=0.75, cpu_budget=0.40, cpu_budget_alone=0.8,
                        partial_share_min=0.25)
    assert partial_share(o, 0.6, 1, threads=2, contended=False) == pytest.approx(0.75), "alone: under its budget"
    assert partial_share(o, 0.8, 1, threads=2, contended=False) == pytest.approx(0.25), "over it: the floor"
    assert partial_share(o, 0.6, 2, threads=2, contended=False) == pytest.approx(0.25), \
        "another stream open: the shared budget"
    assert partial_share(replace(o, cpu_budget_alone=0.0), 0.6, 1, threads=2, contended=False) == \
        pytest.approx(0.25), "0: the same budget alone"
