from __future__ import annotations

from livenexus_worker.inference.guards import GuardOptions, check, collapse_repeats, cut_char_loop, has_words

OPTS = GuardOptions()


def test_collapse_repetition_loops() -> None:
    assert collapse_repeats("should be fast, fast, fast, fast, fast, fast") == "should be fast, fast,"
    assert collapse_repeats("Good morning, everybody. Good morning, everybody.") == "Good morning, everybody."
    assert collapse_repeats("very very good") == "very very good"
    assert collapse_repeats("the cat sat on the mat") == "the cat sat on the mat"


def test_punctuation_only_is_dropped() -> None:
    assert not has_words(" ... !?")
    assert check("...", 0.1, -0.2, 2.0, OPTS) == (None, "no-words")


def test_no_speech_and_low_logprob_drop() -> None:
    assert check("Thank you.", 0.9, -0.2, 2.0, OPTS)[0] is None
    assert check("Thank you.", 0.7, -0.6, 2.0, OPTS)[0] is None
    # Confident decoding overrides a moderate no-speech probability (Whisper's own rule).
    assert check("Thank you.", 0.7, -0.2, 2.0, OPTS)[0] == "Thank you."
    assert check("words words", 0.1, -1.5, 2.0, OPTS)[0] is None


def test_a_long_confident_reading_outweighs_a_high_no_speech_probability() -> None:
    # Real speech in noise, read at no-speech 0.87 through LiveKit; a short stock phrase stays dropped.
    said = "team send at least one person for two afternoons."
    assert check(said, 0.87, -0.17, 3.7, OPTS) == (said, "ok")
    assert check(said, 0.87, -0.5, 3.7, OPTS) == (None, "no-speech"), "not confident: the 0.6 rule"
    assert check("Thank you for watching.", 0.9, -0.2, 2.0, OPTS) == (None, "no-speech"), "short: the hard rule"
    assert check(said, 0.87, -0.17, 3.7, GuardOptions(no_speech_hard_words=99)) == (None, "no-speech")


def test_too_many_words_for_duration() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    assert check(text, 0.1, -0.2, 1.0, OPTS) == (None, "too-many-words")
    assert check(text, 0.1, -0.2, 10.0, OPTS)[0] == text


def test_collapse_terminates_on_overlapping_phrases() -> None:
    # Used to loop forever: partial repeats with no exact n-gram run.
    text = "We can free open. We can free open positions. We can free"
    assert collapse_repeats(text) == "We can free open. positions. We can free"
    assert collapse_repeats("a b a b a b c c c c") == "a b c c"


def test_trailing_sentence_loop_is_cut() -> None:
    from livenexus_worker.inference.guards import cut_trailing_loop

    looped = "Our revenue grew by 12% compared to last year. Our revenue grew by 12% compared"
    assert cut_trailing_loop(looped) == "Our revenue grew by 12% compared to last year."
    normal = "the cat sat on the mat and the dog sat on the rug"
    assert cut_trailing_loop(normal) == normal
    assert check(looped, 0.1, -0.2, 5.0, OPTS)[0] == "Our revenue grew by 12% compared to last year."


def test_restart_from_the_first_words_is_cut() -> None:
    from livenexus_worker.inference.guards import cut_trailing_loop

    text = "The new warehouse in the north will open at the start of spring. The new warehouse"
    assert cut_trailing_loop(text) == "The new warehouse in the north will open at the start of spring."
    assert cut_trailing_loop("we should go and we should") == "we should go and"
    assert cut_trailing_loop("go go") == "go go"


def test_partials_agreeing_on_words_keep_a_doubtful_final() -> None:
    # 14 s of real speech in noise came back with no-speech probability 0.81 and would have been dropped whole.
    text = "one more thing on testing, we need more people for the test days"
    assert check(text, 0.81, -0.44, 14.0, OPTS) == (None, "no-speech")
    assert check(text, 0.81, -0.44, 14.0, OPTS, evidence_words=5) == (text, "ok")
    assert check(text, 0.2, -1.3, 14.0, OPTS, evidence_words=5) == (text, "ok")
    assert check(text, 0.2, -1.3, 14.0, OPTS, evidence_words=2)[0] is None, "two words are no evidence"
    assert check("", 0.1, -0.1, 1.0, OPTS, evidence_words=9)[0] is None
    runaway = " ".join(f"w{i}" for i in range(40))
    assert check(runaway, 0.1, -0.1, 2.0, OPTS, evidence_words=9) == (None, "too-many-words")


def test_a_loop_cut_mid_word_is_still_a_loop() -> None:
    from livenexus_worker.inference.guards import cut_trailing_loop

    # Seen in a two-speaker room: the repeat stopped inside "12%".
    looped = "Our quarterly revenue grew by 12% compared to last year. Our quarterly revenue grew by 12"
    assert cut_trailing_loop(looped) == "Our quarterly revenue grew by 12% compared to last year."
    assert cut_trailing_loop("we want twelve percent and we want twelve") == "we want twelve percent and"
    normal = "the price went up by ten and then by twenty"
    assert cut_trailing_loop(normal) == normal


def test_a_final_that_restarts_itself_after_a_full_stop_loses_that_word() -> None:
    from livenexus_worker.inference.guards import cut_restart_word

    assert cut_restart_word("Please remove the bullet west before launch. Please") == \
        "Please remove the bullet west before launch."
    for kept in ("Please remove the bullet west before launch. Thanks",  # another word: the next sentence
                 "Please remove it. Please",  # too short to tell
                 "Please remove the bullet west before launch, please",  # no sentence end before it
                 "We will go there today. We."):  # a sentence of its own
        assert cut_restart_word(kept) == kept


def test_a_sentence_said_three_times_keeps_one_copy() -> None:
    from livenexus_worker.inference.guards import GuardOptions, check

    s = "Live transcription runs on ordinary processors in the cluster."
    looped = f"{s} {s} {s} Live transcription"  # decoded offline from the console test's speech, beam 5
    assert check(looped, 0.1, -0.2, 4.5, GuardOptions()) == (s, "ok")


def test_a_loop_of_a_few_characters_inside_one_word_is_dropped() -> None:
    # Seen in a final of the meeting benchmark: one "word" that ran to the token cap, which neither the
    # word-level loop rules nor the words-per-second bound can see.
    o = GuardOptions()
    looped = "The whole release lips with M.I.P.E.R.E.A.R.E.R.E.R.E.R.E.R.E.R.E.R.E.R.E.R"
    assert check(looped, 0.01, -0.2, 2.0, o) == ("The whole release lips with", "ok")
    assert check("R.E.R.E.R.E.R.E.R.E.R.E.", 0.01, -0.2, 2.0, o) == (None, "no-words")
    assert cut_char_loop("Hahahahahahaha that was funny") == "that was funny"
    for speech in ("It grew by 1,000,000,000,000 dollars.", "Wait... what", "Mississippi is long",
                   "the e-e-e-engine", "Hmmm okay"):
        assert cut_char_loop(speech) == speech


def test_a_text_that_reads_its_speech_twice_keeps_the_second_reading() -> None:
    from livenexus_worker.inference.guards import keep_second_reading

    doubled = ("The design chain twice in the last month and we had to rebuild. "
               "The design changed twice in the last month and we had to rebuild the layout.")
    second = "The design changed twice in the last month and we had to rebuild the layout."
    assert keep_second_reading(doubled) == second
    assert check(doubled, 0.1, -0.2, 6.0, OPTS)[0] == second
    # Seen through LiveKit: the second reading a little shorter than the garbled first.
    uber = "We will deploy in an Uber to none Thursday morning. We will deploy the new version on Thursday morning."
    assert keep_second_reading(uber) == "We will deploy the new version on Thursday morning."
    # Speech that begins two sentences alike is not a second reading: too short, or too little in common.
    for text in ("We need to fix this. We need to fix that too.",
                 "I think we should ship it on Monday. I think we should wait until the review is done.",
                 "Our revenue grew by 12% compared to last year. Our revenue grew by 12% compared"):
        assert keep_second_reading(text) == text


def test_a_restart_that_says_only_words_already_said_is_cut() -> None:
    from livenexus_worker.inference.guards import cut_loose_restart

    # A 1.35 s rest after a clause cut, read by the meeting benchmark in every file run of one host.
    looped = "submission of the nails, submission of nails."
    assert cut_loose_restart(looped) == "submission of the nails,"
    assert check(looped, 0.02, -0.3, 1.35, OPTS) == ("submission of the nails,", "ok")
    # Starting over with something new is speech; so is a restart longer than what it repeats.
    for speech in ("We tried, we tried again.", "Thank you, thank you so much.", "Go team, go team go",
                   "No, no.", "Okay, okay let's get started.", "the plan, the plan is the plan"):
        assert cut_loose_restart(speech) == speech
    # Without a mark before it, the first two words again are a new clause, not a restart.
    assert cut_loose_restart("we can if we can") == "we can if we can"


def test_a_loop_that_respells_what_it_repeats_is_cut() -> None:
    # A final of the rest of a clause cut, read from Opus-garbled browser audio (the console e2e test): the
    # decoder went round its window twice and spelt a word differently the second time.
    garbled = "Sommar Thalesy Todd. Somar Thalesy Todd. Som"
    assert check(garbled, 0.2, -0.5, 1.4, OPTS) == ("Sommar Thalesy Todd.", "ok")
    # Round more than once, word for word: the tail repeats the first words over and over.
    assert check("We ship on Monday. We ship on Monday. We ship", 0.1, -0.3, 4.0, OPTS)[0] == "We ship on Monday."


def test_words_that_only_look_alike_are_not_a_loop() -> None:
    # Short words, words that differ in more than a letter, and a restart with no word spelt alike stay apart:
    # "form"/"from" and "ship"/"shop" are 75 % alike; "Stellar cal" respells its only full word.
    for text in ("The form came from them. The from", "We ship it. We shop it", "Stella called. Stellar cal"):
        assert check(text, 0.1, -0.3, 4.0, OPTS)[0] == text


def test_a_loud_part_passes_a_moderate_no_speech_rating_only() -> None:
    # A partial's first 0.8 s of "Please remove the ..." through livekit-server: no-speech 0.67, log-prob -0.85.
    assert check("Please", 0.67, -0.85, 0.81, OPTS) == (None, "no-speech")
    assert check("Please", 0.67, -0.85, 0.81, OPTS, loud=True) == ("Please", "ok")
    # Loud is no licence for what the decoder itself doubts, or rates no-speech beyond the hard bound.
    assert check("Please renew", 0.46, -1.06, 1.08, OPTS, loud=True) == (None, "low-logprob")
    assert check("Thank you.", 0.9, -0.5, 1.0, OPTS, loud=True) == (None, "no-speech")
