"""A final that says fewer of the words its partials agreed on is decoded again from them, but not from a first
reading of its own words."""

from __future__ import annotations

import numpy as np

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.finals import FinalRequest
from livenexus_worker.streaming.options import PipelineOptions

from .fakes import LengthEngine, final_from

READ = "I can add some detail on the confirmation."


class ReadsOnce(LengthEngine):
    """Reads the window as ``READ`` after whatever it is forced to."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        return Hypothesis(f"{prefix} {READ}".strip(), 0.01, -0.1, "en", 0.0, 0.0, 0)


def _final(agreed: str) -> tuple[str, list[str]]:
    engine = ReadsOnce()
    result = final_from(engine, 3.0, FinalRequest("s", "spk", "", False, ""), PipelineOptions(),
                        agreed=tuple(agreed.split()))
    assert result is not None
    return result.event.text, [p for _n, p in engine.calls]


def test_the_words_before_a_first_reading_are_forced_not_the_reading() -> None:
    text, prefixes = _final("Thanks. I can add some more. I can add some detail on the")
    assert prefixes == ["", "Thanks."]
    assert text == f"Thanks. {READ}"  # not "... some more. I can add some detail ..." twice


def test_a_first_reading_with_nothing_before_it_keeps_the_final_as_read() -> None:
    text, prefixes = _final("I can add some more. I can add some detail on the")
    assert prefixes == [""] and text == READ


def test_skipped_agreed_words_are_all_forced() -> None:
    text, prefixes = _final("Thanks for that, and for the notes. I can add some detail on the")
    assert prefixes == ["", "Thanks for that, and for the notes. I can add some detail on the"]
    assert text.startswith("Thanks for that, and for the notes. I can add")
