"""Pipeline logic (speculative finals, cuts, flush) with a stand-in decoder, so it runs without the model.

The engine here is a test double on purpose: these tests are about which audio reaches the decoder and when,
not about recognition; the real model is exercised in test_runtime.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.streaming.pipeline import PipelineOptions, StreamPipeline
from livenexus_worker.streaming.segmenter import SegmenterOptions
from livenexus_worker.streaming.vad import VadOptions

from .fakes import Ctx, run, silence


def test_one_final_per_utterance(word: np.ndarray) -> None:
    ctx, events = run(np.concatenate([silence(500), word, silence(1000), word]))
    finals = [e for e in events if e.is_final]
    assert len(finals) == 2 and finals[0].segment_id != finals[1].segment_id
    assert finals[0].start < finals[0].end <= finals[1].start
    assert len(ctx.utterances) == 2


def test_pause_shorter_than_hangover_keeps_one_utterance(word: np.ndarray) -> None:
    # 150 ms pause: longer than the speculative delay (90 ms), shorter than the hangover (250 ms).
    audio = np.concatenate([silence(500), word, silence(150), word])
    _ctx, events = run(audio)
    finals = [e for e in events if e.is_final]
    assert len(finals) == 1
    decoded = int(finals[0].text.split()[-1])
    assert decoded >= 2 * word.shape[0], "the final must cover both halves, not the speculative first half"


def test_long_speech_is_cut_into_capped_utterances(word: np.ndarray) -> None:
    speech = np.concatenate([word] * 6)  # ~15 s+ of speech with short gaps inside the words only
    # No left context: a final after a commit would also hear (and the stand-in count) the words before it.
    opts = PipelineOptions(segmenter=SegmenterOptions(max_utterance_s=5.0, search_s=2.0), final_left_context_s=0.0)
    _ctx, events = run(np.concatenate([silence(300), speech]), opts)
    finals = [e for e in events if e.is_final]
    assert len(finals) >= 3
    assert all(int(f.text.split()[-1]) <= 5 * 16000 for f in finals)
    assert len({f.segment_id for f in finals}) == len(finals)


def test_flush_emits_open_utterance(word: np.ndarray) -> None:
    ctx = Ctx()
    events: list[TranscriptEvent] = []
    pipe = StreamPipeline("s", "spk", ctx, events.append)  # type: ignore[arg-type]
    pipe.push(np.concatenate([silence(300), word[: word.shape[0] // 2]]))  # cut mid-sentence
    assert pipe.in_utterance
    pipe.flush()
    assert ctx.scheduler.wait_idle(10)
    assert [e.is_final for e in events if e.is_final] == [True]
    ctx.scheduler.close()


def test_push_rejects_wrong_dtype() -> None:
    ctx = Ctx()
    pipe = StreamPipeline("s", "spk", ctx, lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int16"):
        pipe.push(np.zeros(160, dtype=np.float32))
    ctx.scheduler.close()


def test_context_finals_feed_previous_text(word: np.ndarray) -> None:
    audio = np.concatenate([silence(500), word, silence(1000), word, silence(1000), word])
    # Commits off: a declined commit decode is one more final-sized call, which this count does not expect.
    # No left context either (the previous final forced as the decode's start): only the prompt is looked at.
    ctx, events = run(audio, PipelineOptions(context_finals=1, speculative_ms=10_000, commit_in_speech=False,
                                             final_left_context_gap_ms=0))
    finals = [e.text for e in events if e.is_final]
    assert len(finals) == 3
    final_contexts = [c for c, (n, p) in zip(ctx.engine.contexts, ctx.engine.calls, strict=True) if p == ""][-3:]
    assert final_contexts[1:] == finals[:2], "each final is decoded with the previous final as context"
    _ctx2, plain = run(audio)
    assert len([e for e in plain if e.is_final]) == 3


def test_click_shorter_than_min_speech_emits_nothing(word: np.ndarray) -> None:
    # 150 ms of speech: long enough to start (window 240 ms at 60 %) only with aggressive options, so use a
    # short start window; the speculative final queued during the hangover must not emit it either.
    opts = PipelineOptions(vad=VadOptions(start_window_ms=30, start_ratio=1.0, min_speech_ms=400))
    _ctx, events = run(np.concatenate([silence(500), word[:2400], silence(1000)]), opts)
    assert [e for e in events if e.is_final] == []


@pytest.mark.parametrize("end_quiet_ms", [600, 0], ids=["quiet-ends-it", "vad-only"])
def test_background_talk_the_vad_hears_as_speech_does_not_hold_the_utterance_open(sentence: np.ndarray,
                                                                                  end_quiet_ms: int) -> None:
    # 1 s of speech 30 dB below the speaker (talk in the background) between two sentences: webrtcvad calls
    # it speech, so it never ends the utterance; its energy is quiet, and that ends it.
    background = (sentence[:16000].astype(np.float32) * 0.03).astype(np.int16)
    audio = np.concatenate([silence(500), sentence, background, sentence, silence(1000)])
    _ctx, events = run(audio, PipelineOptions(end_quiet_ms=end_quiet_ms, commit_in_speech=False))
    finals = [e for e in events if e.is_final]
    first = finals[0]
    said = int(first.text.split()[1])  # LengthEngine: "samples N"
    if end_quiet_ms:
        assert len(finals) >= 2, "the first sentence is final on its own"
        lead = int((0.5 - first.start) * 16000)
        assert lead + sentence.shape[0] <= said <= lead + sentence.shape[0] + (end_quiet_ms + 200) * 16
        assert finals[-1].end * 16000 >= 500 * 16 + 2 * sentence.shape[0] + 16000 - 300 * 16, \
            "the second sentence is in the last final"
    else:
        assert len(finals) == 1 and said >= 2 * sentence.shape[0] + 16000, "one utterance through the talk"
