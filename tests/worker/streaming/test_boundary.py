"""Where a partial's words put a commit's cut, from the pauses heard (commits.find_boundary, no decoder)."""

from __future__ import annotations

import numpy as np
import pytest

from livenexus_worker.inference.engine import Hypothesis
from livenexus_worker.streaming.commits import find_boundary
from livenexus_worker.streaming.finals import FinalRequest
from livenexus_worker.streaming.pipeline import PipelineOptions
from livenexus_worker.streaming.segmenter import Utterance
from livenexus_worker.streaming.stream_state import LeftContext, OpenUtterance

from .fakes import LengthEngine, final_from

SR = 16000


def part(pauses_s: list[float], left: str | None = None, agreed: tuple[str, ...] = ()) -> OpenUtterance:
    op = OpenUtterance(Utterance("s-2", 0), 0, after_commit=left is not None,
                       left=None if left is None else LeftContext(np.zeros(SR, dtype=np.int16), left))
    op.pauses.extend((int(p * SR), 100.0 + p) for p in pauses_s)
    op.agreement.committed.extend(agreed)
    return op


def test_of_two_pauses_under_a_sentence_end_the_one_its_pause_would_be_noticed_at() -> None:
    # "latest." aligned to end at 0.48 s; a gap inside the word at 0.42 s, the pause after it noticed at
    # 0.69 s: the cut keeps the whole word.
    op = part([0.42, 0.69])
    found = find_boundary(op, "the latest. What about", int(1.35 * SR), (0.15, 0.48, 1.0, 1.3), PipelineOptions())
    assert found is not None and found[0] == int(0.69 * SR) and found[2] == "the latest."
    assert not op.pauses, "pauses up to the cut are used up"


def test_a_sentence_end_whose_pause_lacks_its_look_ahead_waits_rather_than_taking_an_older_clause() -> None:
    # An agreed word ends at the older pause (clause rule from 3 s): the sentence end's pause is the boundary,
    # and a later partial commits it once it heard the look-ahead.
    op = part([1.0, 3.2], agreed=("a", "b", "c", "d"))
    words, ends = "a b c d e f. Next", (0.3, 0.6, 0.9, 0.92, 2.0, 3.1, 3.4)
    assert find_boundary(op, words, int(3.4 * SR), ends, PipelineOptions()) is None
    assert [round(c / SR, 1) for c, _ in op.pauses] == [1.0, 3.2], "nothing forgotten"
    found = find_boundary(op, words + " word", int(3.6 * SR), (*ends[:-1], 3.45, 3.55), PipelineOptions())
    assert found is not None and found[0] == int(3.2 * SR)


def test_the_rest_of_a_sentence_cut_before_its_end_commits_by_the_clause_rule_before_3_s() -> None:
    # The last commit ended "... where we wanted" (no sentence end): this part's partial reads its end as a
    # comma; its agreed words end at the pause.
    # Without punctuation at the pause it is a gap inside the rest ("were closed | within the day"): no cut.
    ends = (0.2, 0.45, 0.9, 1.1)
    for text, left, commits in (("to be, I think", "where we wanted", True),
                                ("to be I think", "where we wanted", False),
                                ("to be, I think", "where we wanted to be.", False),
                                ("to be, I think", None, False)):
        op = part([0.52], left=left, agreed=tuple(text.split()[:2]))
        found = find_boundary(op, text, int(1.1 * SR), ends, PipelineOptions())
        assert (found is not None) == commits, (text, left)
        if found is not None:
            assert found[0] == int(0.52 * SR) and found[2] == "to be,"


class CutInsideAWord(LengthEngine):
    """The commit's decode: "the latest. What", the word "latest." ending 130 ms after a gap inside it."""

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en", prefix: str = "",
                   max_new_tokens: int | None = None, context: str = "", word_times: bool = False) -> Hypothesis:
        self.calls.append((audio.shape[0], prefix))
        return Hypothesis("the latest. What", 0.01, -0.1, "en", 0.0, 0.0, 0,
                          word_ends=(0.15, 0.55, 0.9) if word_times else ())


@pytest.mark.parametrize(("head", "said"), [("the latest.", None), ("the", "the"), ("", "the")],
                         ids=["partial-ended-the-word-there", "partial-agrees", "no-partial-head"])
def test_a_commit_whose_decode_ends_the_partial_s_last_word_after_the_cut_is_declined(head: str,
                                                                                      said: str | None) -> None:
    req = FinalRequest("s", "spk", "", False, (head.split() or [""])[-1])
    result = final_from(CutInsideAWord(), 1.0, req, PipelineOptions(), keep_until=int(0.42 * SR))
    assert (None if result is None else result.event.text) == said


def test_a_clause_is_not_cut_a_word_or_two_into_a_part_unless_it_is_the_rest_of_a_cut_sentence() -> None:
    # A long part after a commit whose partials agreed on two words only: the pause under the second one is
    # 0.6 s in. Cutting there leaves the window almost as long and reads both sides alone ("We shift | the new
    # onboarding fuller"); a pause under an agreed word 1.5 s or more in may end the clause.
    text = "We shift the new onboarding flow on Tuesday and the feedback has been mostly"
    ends = tuple(0.3 * (i + 1) for i in range(len(text.split())))
    long = int(6.5 * SR)
    for pauses, agreed, left, cut in (([0.6, 2.5], 2, "has joined.", None),
                                      ([0.6, 2.1], 7, "has joined.", 2.1),
                                      ([0.6], 2, "we decided that", 0.6),  # the rest of a cut sentence...
                                      ([0.6], 2, None, None)):
        words = text.split()
        if cut == 0.6 and left == "we decided that":
            words[1] += ","  # ...with a mark at its own end
        op = part(pauses, left=left, agreed=tuple(words[:agreed]))
        found = find_boundary(op, " ".join(words), long, ends, PipelineOptions())
        assert (None if found is None else round(found[0] / SR, 2)) == cut, (pauses, agreed, left)


def test_a_marked_word_ends_a_clause_from_commit_min_s_before_any_partial_agreed_on_it() -> None:
    # "We have three open positions, and about": the first partial to hear the look-ahead after the pause
    # (2.1 s into a 2.4 s part) marks "positions,". Its mark is the evidence, and the commit decodes the words
    # again: waiting for a second partial to agree, or for the part to reach 3 s, held such commits back one
    # or two partials (8 speakers: 1.1-1.9 s). A word without a mark still needs agreement, a long part and
    # a long pause; a marked word 1.2 s in leaves too short a head.
    text = "We have three open positions, and about"
    ends = (0.3, 0.6, 1.0, 1.4, 2.05, 2.3, 2.4)
    for words, pause, agreed, heard, long_pause, cut in (
            (text, 2.1, 3, 2.45, False, 2.1),
            (text.replace(",", ""), 2.1, 3, 2.45, True, None),
            (text.replace(",", ""), 2.1, 3, 3.1, True, None),
            (text.replace(",", ""), 2.1, 5, 3.1, True, 2.1),
            (text.replace("positions,", "positions").replace("three", "three,"), 1.02, 0, 2.45, False, None)):
        op = part([pause], agreed=tuple(words.split()[:agreed]))
        if long_pause:
            op.pause_lengths[100.0 + pause] = 200
        found = find_boundary(op, words, int(heard * SR), ends, PipelineOptions())
        assert (None if found is None else round(found[0] / SR, 2)) == cut, (words, agreed, heard)
        if found is not None:
            assert found[2] == " ".join(words.split()[:5])


@pytest.mark.parametrize("stop_p", [0.0004, 0.3], ids=["forced-and-doubted", "decoder's-own"])
def test_a_full_stop_the_decoder_rates_near_zero_is_no_sentence_end(stop_p: float) -> None:
    # "a plan to avoid it next. In": the stop was forced from earlier partials' agreed words while the audio
    # says "next time"; the decoder, hearing it, gives that stop p 0.000. A real one reads 0.05 and up.
    op = part([1.2])
    text, ends = "avoid it next. In the", (0.3, 0.6, 1.0, 1.5, 1.7)
    probs = (0.9, 0.9, stop_p, 0.5, 0.9)
    o = PipelineOptions(commit_clause_after_s=0.0)
    assert o.commit_stop_min_prob == 0.02, "on by default"
    found = find_boundary(op, text, int(1.8 * SR), ends, o, "s", probs)
    if stop_p < o.commit_stop_min_prob:
        assert found is None and op.pauses, "no cut, the pause kept for a later reading"
    else:
        assert found is not None and found[2] == "avoid it next."
    assert find_boundary(part([1.2]), text, int(1.8 * SR), ends, PipelineOptions(commit_clause_after_s=0.0,
                                                                                   commit_stop_min_prob=0.0),
                         "s", probs) is not None, "0: any full stop"


@pytest.mark.parametrize(("stop_p", "cut"), [(0.002, False), (0.3, True)], ids=["doubted", "decoder's-own"])
def test_a_doubted_full_stop_on_the_last_word_is_no_clause_mark_either(stop_p: float, cut: bool) -> None:
    # "I expect that to be done by Thursday." with nothing read after it (the sentence goes on: "at the
    # latest"): no sentence end follows it, so the clause rule sees it, and its full stop was its mark.
    # The decoder gave it p 0.002; the same doubt that keeps it from ending a sentence keeps it from
    # ending a clause. A comma is a clause mark whatever its probability.
    text, ends = "I expect that to be done by Thursday.", (0.2, 0.5, 0.7, 0.8, 1.0, 1.3, 1.5, 1.95)
    probs = (0.9,) * 7 + (stop_p,)
    o = PipelineOptions()
    found = find_boundary(part([2.0]), text, int(2.4 * SR), ends, o, "s", probs)
    assert (found is not None) is cut
    if found is not None:
        assert found[2] == text
    comma = find_boundary(part([2.0]), text.replace(".", ","), int(2.4 * SR), ends, o, "s", probs)
    assert comma is not None and comma[2].endswith("Thursday,")


@pytest.mark.parametrize("pause_ms, in_pause", [(200, True), (100, False)], ids=["ends-in-its-pause", "ends-after"])
def test_a_sentence_end_aligned_inside_its_pause_ends_there(pause_ms: int, in_pause: bool) -> None:
    # "...we missed several obvious bugs." read "smuggs.": the alignment gave the word the quiet after it, to
    # 140 ms past where its 200 ms pause was noticed (80 ms in). It ends in that pause; a word aligned to end
    # after the pause is over (a gap inside it) does not.
    text = "we only had four volunteers and we missed and long up mere smuggs."
    ends = (0.86, 1.12, 1.3, 1.62, 2.1, 2.68, 2.82, 3.12, 3.34, 3.56, 3.8, 3.96, 4.7)

    def boundary(o: PipelineOptions) -> tuple[int, float, str] | None:
        op = part([2.46, 4.56])
        op.pause_lengths[100.0 + 4.56] = pause_ms
        return find_boundary(op, text, int(4.86 * SR), ends, o)

    found = boundary(PipelineOptions())
    assert (found is not None) == in_pause
    if found is not None:
        assert found[0] == int(4.56 * SR) and found[2] == text
    assert boundary(PipelineOptions(commit_word_end_in_pause=False)) is None, "only a word ending before it"


@pytest.mark.parametrize(("stop_p", "threshold", "cut_s", "head"),
                         [(0.009, 0.03, 1.02, "Taking too long,"),
                          (0.5, 0.03, 1.56, "Taking too long, support"),
                          (0.009, 0.0, 1.56, "Taking too long, support")])
def test_after_a_full_stop_the_next_decode_doubts_the_rest_of_the_sentence_ends_at_its_first_mark(
        stop_p: float, threshold: float, cut_s: float, head: str) -> None:
    # "...the email confirmation stat. | Taking too long, support told me that": the guessed final cut at a gap
    # inside the sentence and ended it with a full stop, which this part's decode (hearing that commit before
    # it) rates 0.009. Its first marked word at a pause ends the rest; a later pause under an agreed word (a
    # stop consonant's gap in "support told", 160 ms) is inside the next sentence.
    op = part([1.02, 1.56], left="about the email confirmation stat.", agreed=("Taking", "too", "long", "support"))
    op.pause_lengths = {100.0 + 1.56: 160}
    op.left_stop_p = stop_p
    text, ends = "Taking too long, support told me that most", (0.3, 0.6, 1.0, 1.5, 1.8, 2.0, 2.3, 2.8)
    found = find_boundary(op, text, int(3.2 * SR), ends, PipelineOptions(commit_rest_stop_prob=threshold))
    assert found is not None and (found[0], found[2]) == (int(cut_s * SR), head)


@pytest.mark.parametrize(("left", "stop_p", "follows", "first_ms", "cut_s", "head"),
                         [("stat.", 0.009, False, 150, 1.02, "Taking to a long"),
                          ("start", 1.0, False, 150, 1.02, "Taking to a long"),
                          ("stat.", 0.009, False, 100, 1.56, "Taking to a long support"),
                          ("stat.", 0.5, False, 150, 1.56, "Taking to a long support"),
                          ("start", 1.0, True, 150, 1.56, "Taking to a long support")],
                         ids=["after-a-doubted-stop", "after-a-clause-cut", "first-pause-short", "no-rest",
                              "right-after-a-first-pause-cut"])
def test_the_rest_of_a_sentence_ends_at_its_first_long_pause_when_no_word_is_marked(
        left: str, stop_p: float, follows: bool, first_ms: int, cut_s: float, head: str) -> None:
    # Through LiveKit the rest of "the email confirmation stat. | taking too long." was read "Taking to a long
    # support told me" with no mark at all, and the clause rule cut it at the later pause, under "support"
    # (inside the next sentence, whose rest then ran on: "within the day so overall I would"). Both pauses were
    # long enough for an unmarked clause; in the rest of a cut sentence the first one ends it. A pause as short
    # as a stop consonant's gap is none, and a part that is no rest keeps the latest. So does a rest right
    # after such a cut: otherwise every cut at a first pause left another rest to cut at its first pause
    # ("Support | told me", 0.54 s).
    op = part([1.02, 1.56], left=f"about the email confirmation {left}",
              agreed=("Taking", "to", "a", "long", "support"))
    op.pause_lengths = {100.0 + 1.02: first_ms, 100.0 + 1.56: 160}
    op.left_stop_p = stop_p
    op.follows_first_cut = follows
    text, ends = "Taking to a long support told me that most", (0.3, 0.45, 0.6, 1.0, 1.5, 1.8, 2.0, 2.3, 2.8)
    found = find_boundary(op, text, int(3.2 * SR), ends, PipelineOptions())
    assert found is not None and (found[0], found[2]) == (int(cut_s * SR), head)
    assert op.first_cut == ((stop_p < 0.03 or left == "start") and not follows), "the next part is told"


@pytest.mark.parametrize(("heard_s", "cut"), [(1.4, False), (1.6, True)])
def test_the_rest_ends_at_its_first_long_pause_from_commit_min_s_not_only_once_long(heard_s: float,
                                                                                   cut: bool) -> None:
    # Only the look-ahead of the first pause is heard: the rest ends there once it is commit_min_s long, not
    # when an unmarked clause may end elsewhere (commit_clause_after_s, 3 s: "taking too long." was final 2.3 s
    # after it was said).
    op = part([1.02, 1.56], left="about the email confirmation stat.", agreed=("Taking", "to", "a", "long"))
    op.pause_lengths = {100.0 + 1.02: 150, 100.0 + 1.56: 160}
    op.left_stop_p = 0.009
    found = find_boundary(op, "Taking to a long support", int(heard_s * SR), (0.3, 0.45, 0.6, 1.0, 1.5),
                          PipelineOptions())
    assert (found is not None) == cut
    assert found is None or (found[0], found[2]) == (int(1.02 * SR), "Taking to a long")


def test_what_a_decode_hearing_the_commit_made_of_its_full_stop_decides_whether_a_part_is_a_rest() -> None:
    from livenexus_worker.core.events import TranscriptEvent
    from livenexus_worker.streaming.rests import heard_left, rest_of_sentence
    from livenexus_worker.streaming.stream_state import PendingFinal

    def decoded(stop_p: float | None) -> PendingFinal:
        event = TranscriptEvent(stream_id="s", speaker="spk", segment_id="s-2", text="taking too long", is_final=True,
                                start=0.0, end=1.0)
        return PendingFinal(event, 0.0, left_stop_p=stop_p)

    o = PipelineOptions()
    op = part([], left="about the email confirmation stat.")
    assert not rest_of_sentence(op, o), "a full stop no decode has doubted yet"
    heard_left(op, decoded(0.009).left_stop_p)
    assert rest_of_sentence(op, o) and not rest_of_sentence(op, PipelineOptions(commit_rest_stop_prob=0.0))
    heard_left(op, decoded(None).left_stop_p)  # a decode that did not hear the commit says nothing about it
    assert rest_of_sentence(op, o)
    heard_left(op, decoded(0.6).left_stop_p)
    assert not rest_of_sentence(op, o), "the latest reading counts"
    assert rest_of_sentence(part([], left="behind where we wanted"), o), "no full stop: a clause cut"
    assert not rest_of_sentence(part([]), o), "no commit before it"
    # An utterance the VAD began right after a final it hears (left.FollowOn) is judged alike: the VAD also
    # ends utterances at gaps inside sentences ("a plan to avoid it next. | time").
    follow = OpenUtterance(Utterance("s-3", 0), 0, left=LeftContext(np.zeros(SR, dtype=np.int16), "avoid it next."))
    assert follow.hears_before and not rest_of_sentence(follow, o)
    heard_left(follow, 0.002)
    assert rest_of_sentence(follow, o)


@pytest.mark.parametrize(("pause_s", "next_end_s", "found"),
                         [(2.76, 3.04, True), (2.76, 2.82, False), (3.10, 3.30, False), (2.60, 2.75, True)],
                         ids=["early-stop-before-next-word", "pause-after-next-word-began-ended",
                              "beyond-the-lead", "within-400-ms"])
def test_a_full_stop_aligned_early_still_ends_at_the_pause_before_the_next_word(
        pause_s: float, next_end_s: float, found: bool) -> None:
    # Through Opus "that really helps. Now" was aligned to end 440 ms before its 150 ms pause was noticed: the
    # sentence waited 5.5 s for the next one. A full stop may lead its pause by up to commit_stop_lead_ms
    # while the pause comes before the next word is over; other words, 400 ms (a pause inside the next word, or
    # within 400 ms of the stop, is judged as before).
    words = ["Great", "thank", "you,", "that", "really", "helps."]
    ends = [0.64, 1.02, 1.4, 1.72, 2.02, 2.32]
    words, ends = [*words, "Now", "a", "quick"], [*ends, next_end_s, next_end_s + 0.16, next_end_s + 0.34]
    text = " ".join(words)
    heard = int((max(ends[-1], pause_s) + 0.4) * SR)
    got = find_boundary(part([pause_s]), text, heard, tuple(ends), PipelineOptions(commit_clause_after_s=0.0))
    assert (got is not None) == found
    if got is not None:
        assert got[0] == int(pause_s * SR) and got[2] == "Great thank you, that really helps."
    if pause_s - ends[5] > 0.4:
        assert find_boundary(part([pause_s]), text, heard, tuple(ends),
                             PipelineOptions(commit_clause_after_s=0.0, commit_stop_lead_ms=400)) is None


def test_a_pause_a_confirming_decode_read_through_is_cut_later_only_at_a_mark_with_words_after() -> None:
    # The confirming decode (final-grade, it heard the look-ahead) read on through the pause at 2.1 s. Later
    # greedy partials said "... positions." with nothing after it (8 speakers: "We moved the launch to the 12."),
    # or an agreed word without a mark in a long part at a long pause ("the email confirmation step | taking too
    # long", through LiveKit): neither cuts there now. A mark read with words after it still does, and so does
    # the evidence at a later pause the confirming decode did not hear the look-ahead of.
    ends = (0.3, 0.6, 1.0, 1.4, 2.05, 2.3, 2.4)
    cases = (("We have three open positions.", 5, 2.45, False, None),
             ("We have three open positions and about", 5, 3.1, True, None),
             ("We have three open positions, and about", 3, 2.45, False, 2.1))
    for words, agreed, heard, long_pause, cut in cases:
        for read_through in (0, int(2.45 * SR)):
            op = part([2.1], agreed=tuple(words.split()[:agreed]))
            op.read_through = read_through
            if long_pause:
                op.pause_lengths[100.0 + 2.1] = 200
            found = find_boundary(op, words, int(heard * SR), ends[: len(words.split())], PipelineOptions())
            expect = cut if read_through else 2.1
            assert (None if found is None else round(found[0] / SR, 2)) == expect, (words, read_through)
    op = part([2.1], agreed=("We", "have", "three", "open", "positions"))
    op.read_through = int(2.3 * SR)  # 200 ms after the pause: its look-ahead was not in that decode
    found = find_boundary(op, "We have three open positions.", int(2.45 * SR), ends[:5], PipelineOptions())
    assert found is not None and found[0] == int(2.1 * SR)


@pytest.mark.parametrize("read_through", [0, int(1.05 * SR)], ids=["no-confirming-decode", "read-on-through"])
def test_the_rest_of_a_cut_sentence_still_ends_where_its_confirming_decode_heard_too_little(read_through: int) -> None:
    # "... a plan to avoid it next | time in the meantime": the rest's confirming decode heard 1.05 s, under
    # commit_min_s, so it could not end the rest at "time" by the rest's rule; a later partial that heard 1.95 s
    # does (blocked, the sentence was final 4.65 s late).
    op = part([0.51], left="and a plan to avoid it next", agreed=("time", "in"))
    op.pause_lengths[100.0 + 0.51] = 200
    op.read_through = read_through
    text, ends = "time in the meantime we added a", (0.45, 0.7, 0.9, 1.3, 1.5, 1.7, 1.9)
    found = find_boundary(op, text, int(1.95 * SR), ends, PipelineOptions())
    assert found is not None and found[0] == int(0.51 * SR) and found[2] == "time"


@pytest.mark.parametrize(("last", "stop_p", "time_end", "within_ms", "cut"),
                         [("time.", 0.6, 2.55, 800, False), ("time.", 0.001, 2.55, 800, True),
                          ("time", 1.0, 2.55, 800, True), ("time.", 0.6, 3.1, 800, True),
                          ("time.", 0.6, 2.55, 0, True)],
                         ids=["ends-a-word-later", "doubted-stop", "no-stop", "stop-too-far", "hold-off"])
def test_the_rest_waits_for_its_own_end_when_the_reading_has_it_a_word_after_its_first_pause(
        last: str, stop_p: float, time_end: float, within_ms: int, cut: bool) -> None:
    # Through LiveKit "We asked them for a return exit. | And a plan to avoid it next | time. In the meantime":
    # the rest was cut at its first long pause, under "next", though the partial read "next time." with the
    # sentence's full stop one word later; "time" then waited for the next sentence's end (4.1 s late).
    op = part([2.13], left="We asked them for a return exit.",
              agreed=("And", "a", "plan", "to", "avoid", "it", "next"))
    op.pause_lengths = {100.0 + 2.13: 180}
    op.left_stop_p = 0.025
    words = ["And", "a", "plan", "to", "avoid", "it", "next", last]
    ends = (0.3, 0.45, 0.8, 0.95, 1.4, 1.55, 2.0, time_end)
    found = find_boundary(op, " ".join(words), int(2.8 * SR), ends,
                          PipelineOptions(commit_rest_end_within_ms=within_ms), word_probs=(0.9,) * 7 + (stop_p,))
    assert (found is not None) == cut
    assert found is None or (found[0], found[2]) == (int(2.13 * SR), "And a plan to avoid it next")


@pytest.mark.parametrize(("before", "stop_p", "cut"),
                         [("time.", 0.9, False), ("time.", 0.001, True), ("time", 0.9, True), (None, 0.9, True)],
                         ids=["the-reading-before-ended-it", "doubted-stop-before", "no-stop-before",
                              "no-reading-before"])
def test_the_rest_waits_for_an_end_the_reading_before_had_when_the_newest_runs_on(before: str | None, stop_p: float,
                                                                                  cut: bool) -> None:
    # Meeting benchmark, file path: a partial read "and a plan to avoid it next time." (the stop a word after the
    # pause under "next"), the next one ran on, "... it next time in the", and cut the rest under "next": "time"
    # waited for the next sentence's end (4.43 s late; 4.14 s through LiveKit in the same run).
    op = part([2.13], left="We asked them for a return exit.", agreed=("And", "a", "plan", "to", "avoid", "it"))
    op.pause_lengths = {100.0 + 2.13: 180}
    op.left_stop_p = 0.025
    head = ["And", "a", "plan", "to", "avoid", "it", "next"]
    ends = (0.3, 0.45, 0.8, 0.95, 1.4, 1.55, 2.0, 2.55)
    o = PipelineOptions()
    if before is not None:  # it heard the pause's look-ahead, but "next" was not agreed yet: no cut either way
        assert find_boundary(op, " ".join([*head, before]), int(2.6 * SR), ends, o,
                             word_probs=(0.9,) * 7 + (stop_p,)) is None
    op.agreement.committed.append("next")
    found = find_boundary(op, " ".join([*head, "time", "in", "the"]), int(2.8 * SR), (*ends, 2.7, 2.78), o,
                          word_probs=(0.9,) * 10)
    assert (found is not None) == cut
    assert found is None or (found[0], found[2]) == (int(2.13 * SR), "And a plan to avoid it next")
