"""Hallucination guards: Whisper invents text for noise and silence and loops on repetitions.

Each rule is a pure function of the hypothesis so it can be tested without the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

_WORDS = re.compile(r"\w", re.UNICODE)
# A run of 4+ copies of a 1-8 character unit with a letter in it, 12+ characters in all, inside one word:
# "M.I.P.E.R.E.A.R.E.R.E.R.E.R.E..." ran to the token cap in a final of the meeting benchmark. Numbers
# ("1,000,000,000,000") have no letter in their unit; speech has no such word.
_CHAR_LOOP = re.compile(r"(\S{1,8}?)\1{3,}")
_SAME_RATIO = 0.8


@dataclass(frozen=True)
class GuardOptions:
    """Thresholds for dropping or repairing hypotheses."""

    no_speech_threshold: float = 0.6
    """Drop when the model's no-speech probability is above this and the log-prob is not convincing."""
    no_speech_hard: float = 0.85
    """Drop whenever no-speech probability is above this, but for a long confident reading
    (``no_speech_hard_words``)."""
    no_speech_hard_words: int = 6
    """A reading of this many words or more, at a log-prob above ``logprob_confident``, is kept whatever its
    no-speech probability. Whisper's stock inventions on noise are short ("Thank you."), and long real speech in
    noise reads no-speech up to 0.88: over 19 meeting runs (~10,000 decodes) every decode above 0.85 with a
    log-prob of -0.35 or more was real speech, 5 of them ("team send at least one person for two afternoons.",
    -0.17 / 0.87: its finals were dropped three times and the sentence was final 3.8 s late), while 288
    noise-only windows (pink noise, reversed-speech babble, -40 to -12 dB, 1-4 s, beam 1 and 5,
    ``benchmarks/noise_probe.py``) read no better than -0.48."""
    logprob_threshold: float = -1.0
    """Drop when the average token log-prob is below this."""
    logprob_confident: float = -0.35
    """A log-prob above this overrides a moderate no-speech probability (Whisper's own rule)."""
    max_words_per_second: float = 6.0
    """More words per second of audio than a person can speak means a loop or an invention."""
    max_repeats: int = 2
    """A phrase repeated more times than this in a row is collapsed to this many."""
    evidence_words: int = 3
    """Words that consecutive partials of the utterance agreed on that make it speech for sure: with this
    many, the no-speech and log-prob rules no longer drop its final (only loops and runaways are cut).
    Whisper's no-speech probability runs high on long windows of real speech in noise: 0.81 measured on 14 s
    of the meeting benchmark, which would otherwise drop all 14 s."""


def has_words(text: str) -> bool:
    return bool(_WORDS.search(text))


def _norm(word: str) -> str:
    return word.strip(",.!?;:").lower()


def collapse_repeats(text: str, max_repeats: int = 2, max_ngram: int = 8) -> str:
    """Collapse runs of a repeated 1..max_ngram word phrase (a decoder loop) to fewer copies.

    A repeated phrase keeps one copy; a repeated single word keeps ``max_repeats`` ("very very" is speech).
    Every pass strictly shortens the text, so this always terminates.
    """
    words = text.split()
    while True:
        keys = [_norm(w) for w in words]
        found = None
        for n in range(1, min(max_ngram, len(words) // 2) + 1):
            keep = max_repeats if n == 1 else 1
            for i in range(len(words) - n):
                reps = 1
                while keys[i + reps * n : i + (reps + 1) * n] == keys[i : i + n]:
                    reps += 1
                if reps > keep:
                    found = (i, n, reps, keep)
                    break
            if found:
                break
        if found is None:
            return " ".join(words)
        i, n, reps, keep = found
        words = words[: i + keep * n] + words[i + reps * n :]


def cut_char_loop(text: str, min_chars: int = 12) -> str:
    """``text`` without the words in which the decoder repeats a few characters over and over (a loop one
    "word" long, which the word-level rules and the words-per-second bound do not see)."""

    def looping(word: str) -> bool:
        return any(len(m.group(0)) >= min_chars and any(ch.isalpha() for ch in m.group(1))
                   for m in _CHAR_LOOP.finditer(word))

    words = text.split()
    kept = [w for w in words if not looping(w)]
    return text if len(kept) == len(words) else " ".join(kept)


@lru_cache(maxsize=8192)  # the same word pairs come back with every partial of an utterance
def _same(a: str, b: str) -> bool:
    """One word, maybe spelt two ways: a loop over garbled audio respells the words it repeats ("Sommar Thalesy
    Todd. Somar Thalesy Todd. Som", a final through the browser's microphone in the console e2e test, where
    every exact-word rule missed it). Words of four letters or more that differ in one letter of five or so."""
    if a == b:
        return True
    if min(len(a), len(b)) < 4:
        return False
    m = SequenceMatcher(None, a, b)  # the cheap upper bounds first: a final's loop rules compare many pairs
    return m.real_quick_ratio() >= _SAME_RATIO and m.quick_ratio() >= _SAME_RATIO and m.ratio() >= _SAME_RATIO


def _repeats(earlier: list[str], tail: list[str]) -> bool:
    """``tail`` says ``earlier`` again: its words :func:`_same`, one of them spelt alike at least, and its last
    word may stop short (a loop cut by the end of the window or the token cap)."""
    if len(earlier) != len(tail) or not tail[-1] or not earlier[-1].startswith(tail[-1]):
        return False
    return all(map(_same, earlier[:-1], tail[:-1])) and any(map(str.__eq__, earlier[:-1], tail[:-1]))


def cut_trailing_loop(text: str, min_words: int = 4, min_restart_words: int = 2) -> str:
    """Drop a tail that repeats something already said ("A B C D. A B C"): Whisper's sentence-level loop.

    A tail that restarts the utterance from its first word is the common form and is cut from two words on;
    a repeat of some other earlier passage needs ``min_words`` to count, so real speech is rarely touched.
    Words compare as :func:`_same`.
    """
    words = text.split()
    keys = [_norm(w) for w in words]
    for j in range(min(min_words, min_restart_words), len(words)):
        tail = keys[j:]
        n = len(tail)
        # A loop is often cut mid-word by the token cap ("... grew by 12% ... grew by 12"): the tail's last word
        # need only begin the word it repeats. A restart may go round more than once ("A B C. A B C. A"): the
        # tail repeats the first j words over and over.
        restart = n >= min_restart_words and _repeats([keys[m % j] for m in range(n)], tail)
        loop = n >= min_words and any(_repeats(keys[k : k + n], tail) for k in range(0, j - n + 1))
        if restart or loop:
            return " ".join(words[:j])
    return text


def cut_loose_restart(text: str, min_words: int = 2) -> str:
    """Drop a tail that starts the text over after a clause break and says only words already said
    ("submission of the nails, submission of nails."): the loop a short window reads when it repeats itself
    with a word dropped, which ``cut_trailing_loop`` (word for word) and ``collapse_repeats`` (exact copies)
    miss. Seen in every file run of the meeting benchmark on a 1.35 s rest after a clause cut, 4 words
    inserted each time. The tail needs the text's first two words after a mark (, . ? ! ; :), at least
    ``min_words``, no longer than what it repeats, and no word new to the text: speech that starts over says
    something new ("We tried, we tried again.")."""
    words = text.split()
    keys = [_norm(w) for w in words]
    for j in range(max(2, min_words), len(words) - min_words + 1):
        tail = keys[j:]
        if (words[j - 1][-1] in ",.?!;:" and tail[:2] == keys[:2] and len(tail) <= j
                and set(tail) <= set(keys[:j])):
            return " ".join(words[:j])
    return text


def keep_second_reading(text: str, min_words: int = 6, min_length: float = 0.7, min_shared: float = 0.5) -> str:
    """The second of two readings of the same speech in one text: the decoder read its window once, garbled, then
    started over from the same first words and read it again ("The design chain twice in the last month and we
    had to rebuild. The design changed twice in the last month and we had to rebuild the layout.": 14 word
    errors in one meeting run). The second reading starts with the first two words again after at least
    ``min_words``, is at least ``min_length`` as long as the first, and the two share at least ``min_shared`` of
    their distinct words; a shorter restart is a loop cut by the end of the window (``cut_trailing_loop``
    keeps the first reading then). Two sentences that merely begin alike share fewer words."""
    words = text.split()
    keys = [_norm(w) for w in words]
    for i in range(min_words, len(words) - 1):
        if keys[i : i + 2] != keys[:2]:
            continue
        first, second = keys[:i], keys[i:]
        shared = len(set(first) & set(second)) / max(len(set(first)), len(set(second)))
        if len(second) >= min_length * len(first) and shared >= min_shared:
            return " ".join(words[i:])
    return text


def cut_restart_word(text: str, min_words: int = 4) -> str:
    """Drop a final's last word when it restarts the text after a full stop ("… before launch. Please"): the
    decoder looping back to its window's start, cut by the end of the audio after one word. Seen through
    LiveKit once finals were no longer cut by a too-small token cap; ``cut_trailing_loop`` needs two words."""
    words = text.split()
    if (len(words) > min_words and words[-2].endswith((".", "?", "!")) and _norm(words[-1]) == _norm(words[0])
            and not words[-1].endswith((".", "?", "!"))):
        return " ".join(words[:-1])
    return text


def check(
    text: str,
    no_speech_prob: float,
    avg_logprob: float,
    duration_s: float,
    options: GuardOptions,
    evidence_words: int = 0,
    loud: bool = False,
) -> tuple[str | None, str]:
    """Return (cleaned text or None to drop, reason). ``evidence_words``: words partials agreed on. ``loud``:
    the audio holds a word as loud as the speaker's, so a moderate no-speech probability does not drop it
    (above ``no_speech_hard``, or below ``logprob_threshold``, it still goes)."""
    text = cut_char_loop(text.strip())
    if not has_words(text):
        return None, "no-words"
    heard = evidence_words >= options.evidence_words
    sure = avg_logprob >= options.logprob_confident and len(text.split()) >= options.no_speech_hard_words
    if no_speech_prob > options.no_speech_hard and not heard and not sure:
        return None, "no-speech"
    if (no_speech_prob > options.no_speech_threshold and avg_logprob < options.logprob_confident and not heard
            and not loud):
        return None, "no-speech"
    if avg_logprob < options.logprob_threshold and not heard:
        return None, "low-logprob"
    cleaned = keep_second_reading(collapse_repeats(text, options.max_repeats))
    # One cut removes the last copy of a loop; a sentence said three times needs two (seen through the console
    # test once finals were no longer cut early by the token cap: "… in the cluster." twice).
    while (shorter := cut_trailing_loop(cleaned)) != cleaned:
        cleaned = shorter
    cleaned = cut_loose_restart(cleaned)
    n_words = len(cleaned.split())
    if duration_s > 0 and n_words > max(4, options.max_words_per_second * duration_s):
        return None, "too-many-words"
    return cleaned, "ok"
