"""LocalAgreement-2: the prefix two consecutive hypotheses agree on is stable and never changes again."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_NORM = re.compile(r"[^\w']+")


def word_key(word: str) -> str:
    """A word without case and punctuation, so "dog" and "dog." agree."""
    return _NORM.sub("", word.lower())


class LocalAgreement:
    """Tracks the committed (stable) words of one utterance across partial hypotheses."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []
        self._spelled: dict[int, str] = {}  # committed words a final's decode spelled otherwise (respell)

    def update(self, text: str) -> tuple[str, str]:
        """Feed the newest hypothesis; returns (stable, unstable) text."""
        words = text.split()
        n = len(self.committed)
        # The new hypothesis must extend what is committed; if Whisper wanders, its tail is all unstable.
        if [word_key(w) for w in words[:n]] == [word_key(w) for w in self.committed]:
            tail, prev_tail = words[n:], self._previous[n:]
            agree = 0
            for a, b in zip(tail, prev_tail, strict=False):
                if word_key(a) != word_key(b):
                    break
                agree += 1
            # Commit the newer spelling: it heard more of what follows, so its punctuation is the better
            # guess. The committed words are forced as the start of every later partial, and a sentence end
            # lost here ("long support told me" for "long. Support told me") never comes back, so no pause
            # in the utterance could be confirmed as the sentence's end (seen on the meeting benchmark).
            self.committed.extend(tail[:agree])
            unstable = tail[agree:]
        else:
            unstable = words[n:] if len(words) > n else []
        self._previous = words
        return " ".join(self.committed), " ".join(unstable)

    @property
    def forced(self) -> list[str]:
        """The committed words as later decodes are forced to them: spelled as the latest :meth:`respell` read
        them. ``committed`` keeps the spelling shown, which never changes once stable."""
        return [self._spelled.get(i, w) for i, w in enumerate(self.committed)]

    def respell(self, text: str) -> list[tuple[str, str]]:
        """A final's decode (beam search, the left context) of the same audio from its start read ``text``: the
        committed words it also says take its spelling, its punctuation above all, up to the first word it
        reads otherwise. Not its last word, whose full stop Whisper puts at the end of any audio. Forced
        without marks, greedy partials go on without any: through LiveKit the agreed "Great Thank you that
        really" was read on as "helps now a quick look at the performance numbers" for 3 s after a guess had
        read "Great thank you, that really helps.", so the pause after "helps" ended no sentence and it was
        final 4.6 s late. Returns the forced words it spelled otherwise, as (before, now)."""
        changed: list[tuple[str, str]] = []
        for i, (mine, theirs) in enumerate(zip(self.committed, text.split()[:-1], strict=False)):
            if word_key(mine) != word_key(theirs):
                break
            if (was := self._spelled.get(i, mine)) != theirs:
                changed.append((was, theirs))
            self._spelled[i] = theirs
        return changed

    def reset(self) -> None:
        self.committed.clear()
        self._spelled.clear()
        self._previous = []


def coverage(agreed: list[str], text: str) -> float:
    """Fraction of ``agreed`` words that ``text`` also says (as a multiset, order ignored); 1.0 when none."""
    if not agreed:
        return 1.0
    pool: dict[str, int] = {}
    for w in text.split():
        pool[word_key(w)] = pool.get(word_key(w), 0) + 1
    hit = 0
    for w in agreed:
        k = word_key(w)
        if pool.get(k, 0) > 0:
            pool[k] -= 1
            hit += 1
    return hit / len(agreed)


def skipped_start(agreed: list[str], text: str, least: int) -> bool:
    """Does ``text`` begin ``least`` or more of the ``agreed`` words later than they do: Whisper skipped the
    start of its window ("bugs." for the agreed "we missed several obvious bugs")? Where they first say the
    same words tells, when ``text`` has at most one word before them; a text that says none of them
    skipped it when it says fewer than half as many words. A text that only reads the first words otherwise
    ("They had a mark on" for the agreed "May have a mark on") did not: the partials' greedy guess from the
    first second is the worse reading there. Nor did one that reads all of them otherwise: after a dropped
    first partial the agreed "Let's count three's and it will tell me." shared only "me" with the final's
    "That sound reasonable to me." (a stretch's first sentence, in the meeting as received through LiveKit),
    and forced to them the final said them instead of the right words."""
    said = [word_key(w) for w in text.split()]
    first = next((b for b in SequenceMatcher(None, [word_key(w) for w in agreed], said, autojunk=False)
                  .get_matching_blocks() if b.size), None)
    if first is None:
        return 2 * len(said) < len(agreed)
    return first.a - first.b >= least and first.b <= 1


def forced_words(agreed: list[str], text: str, least: int) -> list[str]:
    """The ``agreed`` words a final that reads ``text`` is decoded again from: all of them when it skipped the
    start of its window (:func:`skipped_start`), none when it did not. But where the words it lacks already read
    its first ``least`` words once, they hold a first, garbled reading of the same speech, and only the words
    before that reading are forced: through LiveKit the partials agreed on "Thanks. I can add some more. I can
    add some detail on the" (a guess at the cut-off "de-" that the partials, forced to the agreed words, read
    again after it), the final said "I can add some detail on the confirmation.", and forced to all of them it
    said the five words twice."""
    if not skipped_start(agreed, text, least):
        return []
    head = [word_key(w) for w in text.split()[:least]]
    if len(head) < least:
        return agreed
    keys = [word_key(w) for w in agreed]
    # The agreed words say the final's first words twice: the first reading starts at the first of them.
    readings = [i for i in range(len(keys) - least + 1) if keys[i : i + least] == head]
    return agreed[: readings[0]] if len(readings) > 1 else agreed
