"""A final's word times survive the guards' cleaning when what is left is a run of the words they time: a
confirming decode that looped still says where its sentence ends, so its commit needs no second decode."""

from __future__ import annotations

import numpy as np

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.finals import FinalRequest, keep_before, times_of
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import SR, LengthEngine, final_from

LOOP = "Good morning everyone. Thanks. Good morning everyone. Thanks. Good morning everyone. Thanks. Good morning"
LOOP_ENDS = (0.34, 0.72, 1.22, 1.74, 1.74, 1.74, 1.74, 1.9, 1.9, 1.9, 1.9, 1.94, 2.04, 2.04)  # as base aligned it


def test_a_loop_cut_away_keeps_the_times_of_the_words_left() -> None:
    probs = tuple(0.5 + i / 100 for i in range(len(LOOP_ENDS)))
    ends, kept_probs = times_of("Good morning everyone. Thanks.", LOOP, LOOP_ENDS, probs)
    assert ends == (0.34, 0.72, 1.22, 1.74) and kept_probs == probs[:4]


def test_a_first_reading_cut_away_keeps_the_second_reading_s_times() -> None:
    said = "We ship it. we ship it on Friday."
    ends = (0.2, 0.4, 0.6, 1.0, 1.2, 1.4, 1.6, 1.9)
    assert times_of("we ship it on Friday.", said, ends, ())[0] == (1.0, 1.2, 1.4, 1.6, 1.9)


def test_a_text_the_guards_changed_otherwise_has_no_times() -> None:
    said = "Good morning everyone."
    ends = (0.3, 0.7, 1.2)
    assert times_of("Good morning, everyone.", said, ends, (0.9, 0.9, 0.9)) == ((), ())
    assert times_of("morning everyone. Good", said, ends, ()) == ((), ())
    # Times of another reading name these words only when there are as many (the rule before runs were kept).
    assert times_of("a b c", "a b", ends, ()) == (ends, ())
    assert times_of("a b", "a b c d", ends, ()) == ((), ())
    # Probabilities that do not go one per word are never handed on.
    assert times_of(said, said, ends, (0.5,)) == (ends, ())


class Looping(LengthEngine):
    """A decode that loops over its window, as base did on "Good morning everyone, thanks" cut 0.3 s after the
    comma's pause."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        return Hypothesis(LOOP, 0.01, -0.1, "en", 0.0, 0.0, 0, word_ends=LOOP_ENDS if word_times else ())


def test_a_looping_confirming_decode_still_finds_its_sentence_end() -> None:
    req = FinalRequest("s", "spk", "", True)
    result = final_from(Looping(), 2.05, req, PipelineOptions(final_left_context_s=0.0), beam=5)
    assert result is not None and result.event.text == "Good morning everyone. Thanks."
    assert result.word_ends == (0.34, 0.72, 1.22, 1.74)
    # What the pipeline then asks of it at the comma's pause (1.53 s): the sentence before it, with its times.
    assert keep_before(result.event.text, result.word_ends, int(1.53 * SR), "everyone.", "s") == (
        "Good morning everyone.", (0.34, 0.72, 1.22))
