"""A synthetic meeting for the continuous-speech benchmark: script, voices, layout, noise, ground truth.

Speaker turns ("stretches") of 15-40 s of continuous speech, 100-200 ms pauses between the sentences of a
stretch and 0.8-1.5 s between turns, over pink noise and a little reversed-speech babble. Every random choice
comes from one seeded generator, so the same script gives the same samples; the mixed audio and the sentence
positions are cached under ~/.cache/livenexus/bench/ keyed by a hash of everything that shapes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from livenexus_dev.tts import synthesize, write_wav
from livenexus_worker.core.audio import SAMPLE_RATE, load

LAYOUT_VERSION = 2
"""Bump when the layout or mixing code changes in a way the cache key would not see."""

SCRIPT: tuple[str, ...] = (
    "Okay, let's get started, I think everyone who needs to be here has joined.",
    "The main thing on the agenda today is the release plan for next month.",
    "Before we get into that, I want to go over what happened last week.",
    "We shipped the new onboarding flow on Tuesday and the feedback has been mostly positive.",
    "There were a couple of complaints about the email confirmation step taking too long.",
    "Support told me that most of those tickets were closed within a day.",
    "So overall I would call it a good week, but we still have a few loose ends.",
    "Thanks, I can add some detail on the confirmation emails.",
    "The delay came from the mail provider and not from our own servers.",
    "They had a backlog on Tuesday afternoon that lasted about three hours.",
    "We asked them for a written explanation and a plan to avoid it next time.",
    "In the meantime we added a retry with a shorter timeout on our side.",
    "That change is already in production and the numbers look much better.",
    "Good, then let's move on to the release itself.",
    "The plan is to freeze features at the end of next week.",
    "After the freeze we have two weeks of testing before the public launch.",
    "The biggest risk right now is the new billing page.",
    "It touches the payment service, the invoice generator and the customer portal.",
    "If any of those slip, the whole release slips with them.",
    "I agree that billing is the risky part.",
    "My team finished the payment changes yesterday and they are in review.",
    "The invoice generator still needs a small fix for customers in other countries.",
    "We found that the tax line was rounded twice, which made some totals wrong by a cent.",
    "It is a one line change, but we want a proper test around it before we merge.",
    "I expect that to be done by Thursday at the latest.",
    "What about the customer portal, is anyone looking at that?",
    "Yes, that one is mine, and honestly it is behind schedule.",
    "The design changed twice in the last month and we had to rebuild the layout.",
    "We are about three days behind where we wanted to be.",
    "I think we can catch up if we drop the dark theme from this release.",
    "Nobody asked for it in the customer interviews anyway.",
    "That sounds reasonable to me, the dark theme can wait for the next version.",
    "Let's write that down as a decision so nobody is surprised later.",
    "I will update the release notes and tell the design team this afternoon.",
    "One more thing on testing, we need more people for the test days.",
    "Last time we only had four volunteers and we missed several obvious bugs.",
    "Could each team send at least one person for two afternoons?",
    "We can do that, I will ask around and send you names by Friday.",
    "Same here, we have a new engineer who would learn a lot from it.",
    "Great, thank you, that really helps.",
    "Now a quick look at the performance numbers from the staging environment.",
    "Page load time went down by almost twenty percent after the caching change.",
    "The search page is still slow when the filters are complex.",
    "We traced it to a database query that scans the whole orders table.",
    "Adding an index should fix it, but we want to test it on a copy of the real data first.",
    "How long would that take, roughly?",
    "Probably two days, including the time to restore the copy.",
    "Okay, please go ahead, and let us know if it turns out to be bigger.",
    "Moving on, the mobile team asked whether they can join the same release train.",
    "Their app update depends on the new billing page, so it makes sense.",
    "The only concern is the app store review, which can take up to a week.",
    "We should submit the app early and keep the new screens behind a flag.",
    "That way we can turn them on when the web release goes out.",
    "I like that, it keeps the two releases independent.",
    "Let's also plan a short review one week after the launch.",
    "We can look at the support tickets, the error rates and the sales numbers together.",
    "I will send a calendar invite for that later today.",
    "Is there anything else before we wrap up?",
    "Just a reminder that the office will be closed on Monday for the holiday.",
    "Right, thanks everyone, good discussion, talk to you next week.",
)


@dataclass(frozen=True)
class Voice:
    """One meeting participant: a TTS engine, its voice, and a level offset."""

    name: str
    engine: str
    voice: str
    rate_wpm: int = 165
    gain_db: float = 0.0


VOICES: tuple[Voice, ...] = (
    Voice("dana", "espeak-ng", "en-us+f3", 165, 0.0),
    Voice("alan", "flite", "awb", gain_db=-2.0),
    Voice("marcus", "espeak-ng", "en-gb", 160, 1.0),
    Voice("priya", "flite", "slt", gain_db=1.5),
    Voice("ravi", "flite", "rms", gain_db=-1.0),
    Voice("ken", "flite", "kal16", gain_db=0.5),
)


@dataclass(frozen=True)
class Layout:
    """Everything besides the text that shapes the audio (all of it goes into the cache key)."""

    minutes: float = 3.0
    stretch_s: tuple[float, float] = (15.0, 40.0)
    sentence_pause_s: tuple[float, float] = (0.10, 0.20)
    turn_gap_s: tuple[float, float] = (0.8, 1.5)
    lead_s: float = 1.0
    tail_s: float = 10.0
    """Noise after the last sentence, so both systems can end the last utterance on their own."""
    speech_dbfs: float = -18.0
    noise_dbfs: float = -30.0
    babble_dbfs: float = -40.0
    seed: int = 20261201


@dataclass(frozen=True)
class Sentence:
    """Ground truth of one sentence in the mixed audio."""

    index: int
    stretch: int
    speaker: str
    text: str
    start: int
    """First sample of the sentence's speech in the mixed audio."""
    end: int
    """One past its last sample."""


@dataclass
class Meeting:
    audio: np.ndarray
    """16 kHz mono int16, noise included."""
    sentences: list[Sentence]
    path: Path
    """The cached WAV file."""
    key: str

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE

    @property
    def reference(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def stretch_ends(self) -> set[int]:
        """Indexes of the last sentence of each stretch."""
        last: dict[int, int] = {}
        for s in self.sentences:
            last[s.stretch] = s.index
        return set(last.values())


def cache_dir() -> Path:
    d = Path.home() / ".cache" / "livenexus" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _dbfs_gain(x: np.ndarray, dbfs: float) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    return float(10 ** (dbfs / 20) * 32768.0 / rms)


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut the TTS engine's own leading and trailing silence (2 % of the peak, 10 ms margin)."""
    loud = np.nonzero(np.abs(x.astype(np.float32)) > 0.02 * float(np.max(np.abs(x)) or 1))[0]
    if loud.size == 0:
        return x
    margin = SAMPLE_RATE // 100
    return x[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    spec /= np.sqrt(f)
    spec[f < 40] *= 0.1  # no rumble below 40 Hz
    return np.fft.irfft(spec, n)


def _babble(clips: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Three overlapping loops of reversed sentences: speech-like, but no words."""
    loop = np.concatenate([c[::-1].astype(np.float64) for c in clips])
    reps = int(np.ceil(n / loop.shape[0])) + 1
    out = np.zeros(n)
    for _ in range(3):
        tiled = np.tile(loop, reps)
        off = int(rng.integers(0, loop.shape[0]))
        out += tiled[off : off + n]
    return out


def _key(layout: Layout, quick: bool) -> str:
    blob = json.dumps({"v": LAYOUT_VERSION, "script": SCRIPT, "voices": [asdict(v) for v in VOICES],
                       "layout": asdict(layout), "quick": quick}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build(layout: Layout, quick: bool = False, log: bool = True) -> Meeting:
    """The meeting audio and its ground truth, from the cache when the same script was synthesized before."""
    key = _key(layout, quick)
    wav, meta = cache_dir() / f"meeting-{key}.wav", cache_dir() / f"meeting-{key}.json"
    if wav.is_file() and meta.is_file():
        cached = [Sentence(**s) for s in json.loads(meta.read_text())["sentences"]]
        return Meeting(load(wav), cached, wav, key)
    if log:
        print(f"synthesizing the meeting ({'quick' if quick else f'{layout.minutes:g} min'}) ...", flush=True)
    rng = np.random.default_rng(layout.seed)
    target_s = 20.0 if quick else layout.minutes * 60
    parts: list[np.ndarray] = [np.zeros(int(layout.lead_s * SAMPLE_RATE))]
    pos = parts[0].shape[0]
    sentences: list[Sentence] = []
    clean: list[np.ndarray] = []
    order = [int(i) for i in rng.permutation(len(VOICES))]  # every voice speaks before any speaks twice
    stretch, nxt = 0, 0
    lo, hi = (0.0, 20.0) if quick else layout.stretch_s
    while pos < target_s * SAMPLE_RATE + parts[0].shape[0]:
        voice = VOICES[order[stretch % len(order)]]
        want = 20.0 if quick else float(rng.uniform(lo, hi))
        begun = pos
        while (pos - begun) / SAMPLE_RATE < want:
            text = SCRIPT[nxt % len(SCRIPT)]
            x = _trim(synthesize(text, voice=voice.voice, engine=voice.engine, rate_wpm=voice.rate_wpm))
            gain = min(_dbfs_gain(x, layout.speech_dbfs + voice.gain_db), 0.89 * 32768 / float(np.max(np.abs(x))))
            x = x.astype(np.float64) * gain  # RMS at the speaker's level, peaks below -1 dBFS
            gap = np.zeros(int(rng.uniform(*layout.sentence_pause_s) * SAMPLE_RATE) if pos > begun else 0)
            so_far = (pos - begun) / SAMPLE_RATE
            if pos > begun and so_far >= lo and so_far + (gap.shape[0] + x.shape[0]) / SAMPLE_RATE > hi:
                break  # the stretch would grow past its maximum: this sentence opens the next one
            nxt += 1
            parts.append(gap)
            pos += gap.shape[0]
            sentences.append(Sentence(len(sentences), stretch, voice.name, text, pos, pos + x.shape[0]))
            parts.append(x)
            clean.append(x)
            pos += x.shape[0]
        stretch += 1
        if quick:
            break
        gap = np.zeros(int(rng.uniform(*layout.turn_gap_s) * SAMPLE_RATE))
        parts.append(gap)
        pos += gap.shape[0]
    if not quick:  # the last turn gap is replaced by the tail
        pos -= parts.pop().shape[0]
    parts.append(np.zeros(int(layout.tail_s * SAMPLE_RATE)))
    speech = np.concatenate(parts)
    n = speech.shape[0]
    pink = _pink(n, rng)
    babble = _babble(clean[:6], n, rng)
    mix = (speech + pink * _dbfs_gain(pink, layout.noise_dbfs)
           + babble * _dbfs_gain(babble, layout.babble_dbfs))
    audio = np.clip(np.round(mix), -32768, 32767).astype(np.int16)
    write_wav(wav, audio)
    meta.write_text(json.dumps({"key": key, "layout": asdict(layout),
                                "sentences": [asdict(s) for s in sentences]}, indent=1))
    return Meeting(audio, sentences, wav, key)


def slice_meeting(m: Meeting, start_s: float, dur_s: float) -> Meeting:
    """The sentences that lie wholly in [start_s, start_s + dur_s], the audio from just before the first to just
    after the last, positions shifted to the slice."""
    lo, hi = int(start_s * SAMPLE_RATE), int((start_s + dur_s) * SAMPLE_RATE)
    keep = [s for s in m.sentences if s.start >= lo and s.end <= hi]
    if not keep:
        raise ValueError(f"no whole sentence in {start_s:.0f}..{start_s + dur_s:.0f} s of the meeting")
    a = max(0, keep[0].start - SAMPLE_RATE // 5)
    b = min(m.audio.shape[0], keep[-1].end + SAMPLE_RATE // 2)
    sents = [replace(s, index=i, start=s.start - a, end=s.end - a) for i, s in enumerate(keep)]
    return Meeting(m.audio[a:b], sents, m.path, f"{m.key}-{a}-{b}")


def _offset(ref: np.ndarray, rec: np.ndarray) -> int:
    """Where ``ref`` begins in ``rec`` (samples; negative: before it), by cross-correlation."""
    n = 1 << int(np.ceil(np.log2(ref.shape[0] + rec.shape[0])))
    a, b = rec.astype(np.float32), ref.astype(np.float32)
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    k = int(np.argmax(corr))
    return k if k < n - ref.shape[0] else k - n


def recorded(m: Meeting, rec: np.ndarray, path: Path) -> tuple[Meeting, list[int]]:
    """The meeting as ``rec`` recorded it (e.g. what a LiveKit subscriber received: after Opus and the jitter
    buffer), cut so that its samples line up with the meeting's sentences, written to ``path``. Also returns
    where each minute of the meeting was found in ``rec`` relative to where its start was: a recording that
    lost or stretched audio on the way drifts, and its per-sentence lags would be off by that much."""
    head = m.audio[: 30 * SAMPLE_RATE]
    start = _offset(head, rec[: 60 * SAMPLE_RATE])
    drift = []
    for s in range(SAMPLE_RATE * 60, m.audio.shape[0] - 20 * SAMPLE_RATE, SAMPLE_RATE * 60):
        lo = max(0, start + s - 5 * SAMPLE_RATE)
        drift.append(lo + _offset(m.audio[s: s + 10 * SAMPLE_RATE], rec[lo: lo + 20 * SAMPLE_RATE]) - start - s)
    out = np.zeros_like(m.audio)
    at = max(0, -start)
    src = rec[max(0, start):][: out.shape[0] - at]
    out[at: at + src.shape[0]] = src
    write_wav(path, out)
    return Meeting(out, m.sentences, path, f"{m.key}-rec-{hashlib.sha256(out.tobytes()).hexdigest()[:12]}"), drift
