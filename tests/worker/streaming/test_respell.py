"""The words a stream's partials agreed on are forced into every later partial; a final's decode of the open part
(a guess in a pause the speaker talks on after) respells them, so the partials go on from its punctuation instead
of their own first, unmarked reading (stand-in decoders, as in test_speculative_commit.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.pipeline import PipelineOptions

from .fakes import LengthEngine, finals, pipeline, push, silence

READING = "Great thank you, that really helps. Now a quick look at the performance numbers from the staging"
SAID = READING.split()


def _bare(word: str) -> str:
    return word.rstrip(",.").lower()


class Unmarked(LengthEngine):
    """Reads one word of ``SAID`` per 0.3 s of audio: partials (greedy) after their forced start and without any
    mark, as Whisper goes on in the style of what it was forced to; finals with the marks."""

    def __init__(self) -> None:
        super().__init__()
        self.partials: list[str] = []
        """The forced start of each partial."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        n = min(len(SAID), max(1, audio.shape[0] // 4800))
        if max_new_tokens is None:
            return Hypothesis(" ".join(SAID[:n]), 0.01, -0.1, "en", 0.0, 0.0, 0)
        self.partials.append(prefix)
        forced = prefix.split()
        return Hypothesis(" ".join([*forced, *(_bare(w) for w in SAID[len(forced):n])]), 0.01, -0.1, "en",
                          0.0, 0.0, 0)


@pytest.mark.parametrize("via", ["guess", "confirming"])
@pytest.mark.parametrize("on", [True, False], ids=["respelled", "as-agreed"])
def test_partials_after_a_final_of_the_open_part_are_forced_to_its_spelling(sentence: np.ndarray, on: bool,
                                                                           via: str) -> None:
    engine = Unmarked()
    if via == "guess":
        # 240 ms: long enough for a guess (90 ms of VAD silence), shorter than the 250 ms that ends an utterance.
        # The guess does not commit (commit_speculative off): the part stays open and its partials go on.
        pause, options = 240, PipelineOptions(partials_spelled_by_finals=on, commit_speculative=False,
                                              commit_in_speech=False)
    else:
        # 150 ms: the first partial that hears its look-ahead is decoded as a final, and no guess comes first.
        # Its reading ends no sentence there (four words follow the full stop, unaligned): it cuts nothing.
        pause, options = 150, PipelineOptions(partials_spelled_by_finals=on, speculative_ms=200)
    ctx, pipe, events = pipeline(engine, options)
    push(pipe, np.concatenate([silence(500), sentence, silence(pause)]), ctx)
    assert ctx.scheduler.wait_idle(10)
    before = len(engine.partials)
    assert before and not any("," in p for p in engine.partials), "the partials agreed on unmarked words"
    push(pipe, sentence, ctx)
    assert ctx.scheduler.wait_idle(10)
    after = engine.partials[before:]
    assert after, "the speaker went on: more partials"
    assert not finals(events), "nothing was committed: the part is still open"
    respelled = [p for p in after if p.startswith("Great thank you, that")]
    if on:
        assert respelled and respelled == after[len(after) - len(respelled):], \
            "once the final's decode is in, every partial is forced to its spelling"
    else:
        assert not respelled and all(p.startswith("great thank you that") for p in after if p)
    shown = [e.stable for e in events if not e.is_final]
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown)), "stable text only grows"
    push(pipe, silence(1000), ctx)
    assert ctx.scheduler.wait_idle(10)
    (final,) = finals(events)
    assert final.text.startswith("Great thank you, that really helps."), "the final reads on its own"
    ctx.scheduler.close()
