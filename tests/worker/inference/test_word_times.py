"""Word end times from Whisper's word split, mapped onto the text's whitespace-separated words."""

from __future__ import annotations

from livenexus_worker.inference.engine import text_word_ends


def test_punctuation_goes_with_the_word_before_and_keeps_its_end() -> None:
    pieces = [" Okay", ",", " let's", " start", "."]
    assert text_word_ends(pieces, [0.4, 0.5, 0.8, 1.2, 1.6], "Okay, let's start.")[0] == (0.4, 0.8, 1.2)


def test_a_hyphenated_word_or_a_decimal_is_one_word_ending_with_its_last_piece() -> None:
    # Whisper's split (its real output for this text): "-try" and ".5" start with punctuation, so they are
    # pieces of their own. Counted as words, they made the times disagree with the text, and a commit that
    # needed them was declined (three times in a row on one meeting run: a sentence 5 s late).
    pieces = [" We", " added", " a", " re", "-try", " in", " 3", ".5", " s", ",", " it's", " 20", "%", " better", "."]
    times = [0.2, 0.5, 0.6, 0.8, 1.0, 1.1, 1.3, 1.5, 1.7, 1.8, 2.0, 2.2, 2.4, 2.7, 3.0]
    text = "We added a re-try in 3.5 s, it's 20% better."
    assert text_word_ends(pieces, times, text)[0] == (0.2, 0.5, 0.6, 1.0, 1.1, 1.5, 1.7, 2.0, 2.2, 2.7)


def test_a_dash_on_its_own_is_a_word_and_a_mismatch_gives_no_times() -> None:
    assert text_word_ends([" The", " e", "-mail", " -", " sent"], [0.1, 0.3, 0.6, 0.7, 1.0],
                          "The e-mail - sent")[0] == (0.1, 0.6, 0.7, 1.0)
    assert text_word_ends([" The", " e", " mail"], [0.1, 0.3, 0.6], "The e-mail") == ((), ())


def test_a_word_s_probability_is_its_last_piece_s_its_punctuation_where_it_has_one() -> None:
    # A forced full stop the decoder would not make reads near 0 ("a plan to avoid it next. In", forced
    # from an earlier partial, while the audio says "next time"): the word before it read 0.99.
    pieces = [" avoid", " it", " next", ".", " In", " the"]
    ends, probs = text_word_ends(pieces, [0.2, 0.3, 0.6, 0.7, 0.9, 1.0], "avoid it next. In the",
                                 [0.9, 0.95, 0.99, 0.0004, 0.3, 0.8])
    assert ends == (0.2, 0.3, 0.6, 0.9, 1.0)
    assert probs == (0.9, 0.95, 0.0004, 0.3, 0.8)
