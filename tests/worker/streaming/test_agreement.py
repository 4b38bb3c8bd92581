from __future__ import annotations

from livenexus_worker.streaming.agreement import LocalAgreement, forced_words, skipped_start


def test_prefix_agreed_by_two_hypotheses_becomes_stable() -> None:
    la = LocalAgreement()
    assert la.update("the quick") == ("", "the quick")
    assert la.update("the quick brown") == ("the quick", "brown")
    assert la.update("the quick brown fox jumps") == ("the quick brown", "fox jumps")


def test_stable_never_shrinks_even_if_hypothesis_wanders() -> None:
    la = LocalAgreement()
    la.update("hello world again")
    la.update("hello world and")
    assert la.committed == ["hello", "world"]
    stable, _unstable = la.update("yellow word and more")
    assert stable == "hello world"
    assert la.committed == ["hello", "world"]


def test_case_and_punctuation_do_not_break_agreement() -> None:
    la = LocalAgreement()
    la.update("Hello, world")
    stable, unstable = la.update("hello world. How")
    assert stable == "hello world.", "the newer spelling: it heard what follows, its full stop is the better guess"
    assert unstable == "How"


def test_reset() -> None:
    la = LocalAgreement()
    la.update("a b")
    la.update("a b")
    la.reset()
    assert la.update("c") == ("", "c")


def test_a_text_that_starts_later_than_the_agreed_words_skipped_the_start() -> None:
    agreed = _words("we missed several obvious bugs")
    assert skipped_start(agreed, "bugs.", 3)
    assert skipped_start(agreed, "obvious bugs.", 3)
    assert not skipped_start(agreed, "several obvious bugs.", 3), "two words fewer is not a skipped start"
    assert skipped_start(agreed, "Thank you.", 3), "none of the words, and fewer: skipped"


def test_a_text_that_reads_the_first_words_otherwise_did_not_skip_the_start() -> None:
    agreed = _words("May have a mark on on Tuesday afternoon. At last. It about three hours.")
    assert not skipped_start(agreed, "They had a mark on on Tuesday afternoon that lasted about 3", 3)
    assert not skipped_start(_words("I would orderly rent the new"), "our quarterly revenue grew by twelve", 3)
    assert not skipped_start([], "anything", 3)


def test_a_text_that_reads_all_the_agreed_words_otherwise_did_not_skip_the_start() -> None:
    agreed = _words("Let's count three's and it will tell me.")
    assert not skipped_start(agreed, "That sound reasonable to me.", 3), "four words of its own before 'me'"
    assert not skipped_start(agreed, "That sounds reasonable to you.", 3), "none shared, but half as many words"
    assert skipped_start(agreed, "So, tell me.", 3), "one word of its own, then the agreed words' end"
    assert skipped_start(agreed, "Okay.", 3), "none shared, and a fraction of the words"


def _words(text: str) -> list[str]:
    return text.split()


def test_a_final_is_forced_to_the_agreed_words_it_skipped_but_not_to_a_first_reading_of_its_own_words() -> None:
    agreed = _words("we missed several obvious bugs")
    assert forced_words(agreed, "obvious bugs.", 3) == agreed  # skipped: all of them
    assert forced_words(agreed, "we missed several obvious bugs.", 3) == []  # not skipped: none
    assert forced_words(agreed, "several obvious bugs could", 3) == []
    # Through LiveKit: the partials read "I can add some" twice, the first time guessing the cut-off word.
    twice = _words("Thanks. I can add some more. I can add some detail on the")
    final = "I can add some detail on the confirmation."
    assert skipped_start(twice, final, 3)
    assert forced_words(twice, final, 3) == ["Thanks."]  # only the words before the first reading
    assert forced_words(twice[1:], final, 3) == []  # nothing before it: the final as it read
    # The final's first words once in the agreed words, after words it lacks: those were skipped.
    once = _words("Thanks. I can add some detail on the")
    longer = _words("Thanks. I can add some detail on the confirmation of the order we sent")
    assert forced_words(longer, "the order we sent.", 3) == longer
    assert forced_words(once, "Okay.", 3) == once  # too few words to tell a reading


def test_a_final_respells_the_agreed_words_later_decodes_are_forced_to() -> None:
    la = LocalAgreement()
    la.update("Great Thank you that really")
    la.update("Great Thank you that really helps")
    assert la.committed == _words("Great Thank you that really")
    assert la.respell("Great thank you, that really helps.") == [("Thank", "thank"), ("you", "you,")], \
        "'thank' and 'you,' are spelled otherwise"
    assert la.forced == _words("Great thank you, that really")
    assert la.committed == _words("Great Thank you that really"), "what was shown as stable stays as shown"
    stable, unstable = la.update("Great thank you, that really helps now")
    assert stable == "Great Thank you that really helps" and unstable == "now", "the respelled words still agree"
    assert la.forced == _words("Great thank you, that really helps")


def test_respelling_stops_at_the_first_word_read_otherwise_and_skips_the_last() -> None:
    la = LocalAgreement()
    la.update("so the plan is to ship")
    la.update("so the plan is to ship")
    la.respell("So, the plans. Is to ship")
    assert la.forced == _words("So, the plan is to ship"), "'plans.' is another word: it and all after keep theirs"
    la.respell("So, the plan is to ship.")
    assert la.forced == _words("So, the plan is to ship"), "the last word's full stop ends any decode: not taken"
    la.reset()
    assert la.forced == [] and la.respell("anything at all") == []
    la.update("the plan")
    la.update("the plan")
    assert la.respell("the plan.") == [], "spelled alike"
