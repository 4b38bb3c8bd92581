"""A stream pipeline's options: every knob of the streaming path, documented with the measurement that set it.

Kept apart from the per-utterance state (``stream_state``) because the options are read by every streaming
module while the state is only touched by the pipeline's own steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from livenexus_worker.inference.guards import GuardOptions
from livenexus_worker.streaming.pauses import PauseOptions
from livenexus_worker.streaming.segmenter import SegmenterOptions
from livenexus_worker.streaming.vad import VadOptions


@dataclass(frozen=True)
class PipelineOptions:
    """Per-stream behaviour."""

    vad: VadOptions = field(default_factory=VadOptions)
    """Voice activity detection."""
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    """Utterance length cap."""
    guards: GuardOptions = field(default_factory=GuardOptions)
    """Hallucination guards."""
    language: str | None = "en"
    """Language code, or None to detect per utterance."""
    speculative_ms: int = 90
    """Start decoding the final after this much silence, before the hangover confirms the end; the result
    is thrown away if speech resumes. Hides most of the decode time inside the hangover."""
    end_quiet_ms: int = 600
    """Quiet this long (energy, :mod:`pauses`) ends the utterance even while the VAD hears speech (0: only the
    VAD ends it). webrtcvad reads background talk as speech: on the meeting benchmark, a turn gap with babble
    22 dB below the speaker never ended the utterance, and the stretch's last sentence was final only with
    the next speaker's first word, 2.0-2.3 s late. Not shorter: a soft word ending ("month") is quiet too,
    and with the 150 ms pause after it made 350 ms, which ended utterances between sentences; the short
    rest of a sentence ended so was dropped by the noise check (4 words, 2.5 points of WER)."""
    tail_ms: int = 200
    """Silence kept after the last voiced frame in the final's audio (Whisper ends words better with it)."""
    context_finals: int = 0
    """How many previous finals of this stream to give the decoder as context (Whisper's previous-text
    prompt). 0 keeps utterances independent, like condition_on_previous_text=False."""
    partial_max_new_tokens: int = 24
    """Tokens a partial may generate beyond the committed prefix."""
    final_min_coverage: float = 0.6
    """A final must say at least this fraction of the words its partials agreed on; otherwise it is decoded
    again with those words forced as its start (Whisper can skip the start of a window)."""
    partial_share: float = 0.6
    """Fraction of the inference thread the partials of all speaking streams (two or more; one alone:
    ``partial_share_alone``) may use together: each stream
    asks for a partial at most every (its partial's decode time x speakers / share) seconds, never more often
    than its tier's interval. The rest is kept for finals. Meeting benchmark, one speaker, through LiveKit:
    0.6 visible lag p50 0.26 s at 0.88 CPU-s per audio-s; 0.3 saved 0.19 CPU-s but words showed 1.24 s late
    (on the file path 0.11 s; why LiveKit suffers more was not measured)."""
    cpu_budget: float = 0.40
    """Core-seconds per second of its audio a stream's decodes (partials and finals) may use over the last
    ``cpu_budget_window_s`` (0: no budget): under it, its partials come at ``partial_share``; over it, at
    ``partial_share_min`` until the window is back under. Separated sentences of one-thread decodes stayed under it
    (the pauses between them cost nothing; two-thread ones do not: ``cpu_budget_alone``); in continuous speech,
    where finals take ~0.2, the partials give way. With many speakers the shared ``partial_share`` already spaces
    each stream's partials wider. Through LiveKit (2-core host, a partial ~200 ms): a fixed share of 0.6 / 0.45 /
    0.35 used 0.68 / 0.60 / 0.56 CPU-s per audio-s, with visible lag p50 0.28 / 0.19 / 0.34 s. 0.40 with
    ``commit_confirm_final`` (meeting benchmark, file path): 0.475-0.495 CPU-s per audio-s, final p50 0.69-0.79 s."""
    cpu_budget_alone: float = 0.8
    """``cpu_budget`` while the stream is the only one open (0: ``cpu_budget``): no other stream waits for its
    cores. One speaker's separated sentences spend 0.55-0.6 core-s per s with two-thread beam-5 finals; at
    0.40 their partials came at the floor's share, 0.7 s apart on an idle node (``concurrency.py --streams 1``),
    0.30 s at 0.8 (0.55 vs 0.76 cores). In continuous speech (meeting benchmark, file path) 0.8 still binds:
    0.97 vs 0.91 CPU-s per audio-s, visible lag p50 0.35 vs 0.48 s, finals alike."""
    partial_share_alone: float = 0.75
    """``partial_share`` while the stream is the only one open: no other stream's final can queue behind its
    partials, so they may come closer. Separated sentences, one speaker (``concurrency.py``, 30 s, runs back to
    back): partial gap p50 289-299 ms vs 307-322 ms at 0.6, final p50 / p95 the same within noise; continuous
    speech is held by ``cpu_budget`` either way (meeting benchmark, file path: 0.486 CPU-s per audio-s with
    both). Used for every speaker count, 0.75 put eight speakers' final p95 at 1078 ms vs 757 ms; for the only
    one speaking of several, at 1457 vs 742 ms (four: 1065 vs 887 ms)."""
    partial_share_min: float = 0.25
    """The partials' share over budget: words must still show while the speaker talks."""
    cpu_budget_window_s: float = 10.0
    """How much of the stream (s of audio) its decode time is summed over."""
    min_partial_audio_ms: int = 700
    """No partials for utterances shorter than this: too little audio to say anything useful. Separated
    sentences through livekit-server (``livekit_latency.py --utterances 12``, listener side), the publisher's first
    frame to the first words shown, p50: 1071-1080 ms at 1000, 626-751 ms at 700, 999 ms at 500 (its first
    partials said too little to pass the guards); finals alike (p50 467-492 vs 477-495 ms). Fed from a file
    (``concurrency.py --streams 1``, 120 s, two runs each) 564-566 vs 761-764 ms, final p50 517-526 vs 524-535 ms,
    p95 932-1262 vs 805-883 ms: a sentence's clause commits hang on where its partials fall against its pauses,
    and which sentences were unlucky changed. Once (session 29) 700 cost one speaker's finals more: a
    confirming decode that looped lost its word times (:func:`finals.times_of`) and was decoded again. A new
    utterance's first partial also waits a tier interval after the VAD's start, which brings 540 ms: through
    livekit-server it heard 0.81 s. Asked for at 0.72 s instead, 9-10 of 12 first partials of espeak sentences
    were dropped by the guards (5 of 12 at 0.81 s), and the first words came later: p50 886-978 ms in three
    runs, against 672-695 ms in four of seven at 0.81 s (878-1192 ms in the other three; session 34)."""
    partial_loud_shown: bool = True
    """A partial whose audio holds ``left_noise_loud_ms`` as loud as the speaker's words (once their level is
    settled, :meth:`PauseDetector.says_a_word`) is not dropped for a moderate no-speech probability
    (``GuardOptions.no_speech_threshold``; the hard bound and the log-prob rule still hold): Whisper rates a
    short window that starts abruptly as no-speech ("Please" at 0.67, log-prob -0.85), and the first words
    waited for the next partial or two (separated sentences through livekit-server, first words 1.1-1.6 s on
    two of twelve). Noise alone is never that loud, and no speech level is known before the speaker talks."""
    commit_in_speech: bool = True
    """Finals while the speaker goes on: a short pause inside an utterance is a candidate cut; when the next
    partial, which hears ``commit_lookahead_ms`` of what follows, ends a sentence there, the audio before the
    pause is decoded as a final and the utterance is cut in the pause. Words turn final while people talk, and
    no later decode re-reads them."""
    commit_pause_ms: int = 80
    """Quiet this long (energy, :mod:`pauses`, or VAD silence) is a pause that may commit."""
    commit_lookahead_ms: int = 300
    """Audio after the pause a confirming partial must hear, so Whisper can tell a sentence end from a breath."""
    commit_max_fragment_words: int = 2
    """Without word times: words the partial may show after the sentence end; more means its boundary is not
    at this pause. With word times the pause under the sentence's last word is found whatever follows."""
    commit_confirmations: int = 1
    """Consecutive partials that must end a sentence at the pause before it commits. Measured on espeak
    sentences with 150 ms pauses: 2 merged a third of the true boundaries and still passed a misheard one."""
    commit_text_from_partial: bool = False
    """A committed sentence's final is the confirming partial's text up to its sentence end. That partial heard
    the sentence with the words around it, which Whisper reads better than the sentence cut out alone
    (measured on the meeting benchmark: sentences decoded alone 11 % WER, cut mid-sentence 26 %), and it costs
    no second decode. False: decode the sentence again with the tier's beam, hearing the look-ahead too, and
    keep the words that end before the cut."""
    commit_stop_min_prob: float = 0.02
    """A full stop a partial or a confirming decode reads ends a sentence (or, on its last word, a clause) only when
    the decoder gives it this probability (its aligned words' pass; 0: any full stop): a stop forced from earlier
    partials' agreed words, that the decoder hearing what follows rates near 0, is inside a sentence (all 12 under
    0.02 in a traced LiveKit run were). Applied to plain partials only (before session 23), 0.02 against 0 moved p95
    both ways over five meeting runs (1.31 vs 2.47 s, 3.42 vs 1.98 s). Applied to the confirming decodes as well
    (they make most commits), file path, 0.02 vs 0, one run each: two LiveKit recordings of the default meeting p95
    3.19 / 1.62 / 1.58 vs 3.29 / 2.07 / 2.97 s, WER 7.9 / 9.1 / 8.7 vs 7.3 / 8.6 / 8.6 %; the default meeting 1.32
    vs 1.39 s, 7.0 vs 8.4 %; meeting 11 2.58 vs 3.43 s, 9.2 vs 9.8 %: p95 lower in all five (mean 2.06 vs 2.63 s),
    WER 8.4 vs 8.5 %."""
    commit_word_end_in_pause: bool = True
    """A word whose aligned end falls inside a pause (up to its end) ends at that pause, not only one that ends
    before it (see :func:`commits._under_word`). Meeting benchmark, file path, three meetings, on vs off:
    final p50 / p95 0.76 / 1.50 vs 0.80 / 2.05 s, 0.82 / 1.74 vs 0.84 / 2.86 s, 0.71 / 1.85 vs 0.64 / 1.82 s;
    WER 7.7 / 8.2 / 8.7 % vs 7.9 / 10.9 / 8.7 %. Through LiveKit (default meeting, three runs vs two) p95 3.16-4.30
    vs 3.53-4.12 s: the same within that path's noise; WER 7.2 / 10.3 / 10.5 vs 7.9 / 7.7 % (offline on the
    audio as received 6.8 / 7.2 / 8.4 vs 5.2 / 6.1 %), a hint of more WER that five runs cannot settle."""
    commit_stop_lead_ms: int = 700
    """A full stop's word may end up to this long before its pause is noticed (other words: 400 ms) while the
    pause is noticed before the next word ends (:func:`commits._under_word`)."""
    commit_rest_stop_prob: float = 0.03
    """A part after a commit that ended with a full stop is the rest of a cut sentence
    (:func:`rests.rest_of_sentence`) when a decode that heard the commit before it gave that full stop less
    than this probability (0: never). Traced: 0.000-0.021 at the stops of cuts inside a sentence, 0.25-0.9
    at real sentence ends. Meeting benchmark, file path, 0.03 vs 0 (both with the rest's first mark ending
    it, and with ``commit_stop_min_prob`` 0, as it was then): on the audio as received through LiveKit p95
    3.17 / 3.25 vs 2.92 / 3.64 / 2.83 s, WER 8.2 / 7.7 vs 8.7 / 8.2 / 8.7 %; meeting 11 3.44 vs 3.54 s, 8.9
    vs 11.8 %; the default meeting 1.68 / 1.82 vs 2.00 / 1.69 s, 7.5 / 9.1 vs 7.5 / 8.2 %: the lag within
    noise, WER 8.3 vs 8.9 % on average."""
    commit_confirm_final: bool = True
    """The first partial that hears a pause's look-ahead is decoded as a final (the tier's beam, the left
    context, word times). When it ends a sentence at the pause, its words before the cut are the commit's final
    and no second decode follows; when it does not, it is shown as a partial. Meeting benchmark, file path,
    off vs on: final p95 2.97 / 1.92 / 3.90 s vs 2.31 / 1.59 / 2.27 s over three meetings, WER +0.2-0.7 points,
    CPU +0.02-0.045 CPU-s per audio-s (paid back by ``cpu_budget`` 0.40)."""
    commit_confirm_min_pause_ms: int = 140
    """A partial is decoded as a final (``commit_confirm_final``) only when a pause it is the first to hear the
    look-ahead of lasted this long (0: any pause); after a shorter one it is a plain partial, which still
    commits a sentence it ends there (with a decode of its own, ``_propose_commit``), and the guess decoded in
    that pause may become the commit. Those decodes were half of a meeting run's decode time (117 of 192 finals,
    0.42 s of the lane each, 3 in 4 finding no sentence end): most pauses are gaps inside a sentence, and
    those are shorter (72 of 260 inside sentences were 140 ms or more, 62 of 82 between sentences). Their beam
    was not the cost: at beam 1 they took 15 % less and the finals' WER rose from 7.9 to 10.5 %. At 140 (with
    ``cpu_budget_alone``) 45 of 124 finals, 20 s of decode time instead of 49; the budget gives partials what
    that frees. Meeting benchmark, file path, against 0: the meeting 0.85 vs 0.91 CPU-s per audio-s, final p50 /
    p95 0.83 / 1.75 vs 0.79 / 1.95 s, WER 7.9 vs 7.9 %; a LiveKit recording of it 0.81 vs 0.89, 0.80 / 2.63
    vs 0.90 / 2.36 s, end of stretch 0.49 vs 0.79 s, WER 8.9 vs 9.6 % (one run each)."""
    commit_heard_after_cut_ms: int = 600
    """A commit decode (a greedy partial found the sentence end) hears this much audio after its cut, not all
    the partial heard (0: all of it): the words after the cut are thrown away, and each costs a decoder step."""
    commit_speculative: bool = True
    """A speculative final of a pause the speaker then talks on after is not thrown away: it heard everything
    up to the pause, so it becomes the final of that part (cut in the pause), like a commit."""
    commit_speculative_min_s: float = 3.0
    """...when it heard at least this much: shorter parts are mostly a breath inside a sentence, and cutting
    there cost accuracy on the meeting benchmark."""
    commit_min_s: float = 1.5
    """Audio the utterance must hold before a pause may commit it (shorter heads are rarely a sentence); also
    the shortest head a clause cut (``commit_clause_after_s``) leaves, in a part after a commit too, unless it
    is the rest of a cut sentence."""
    commit_min_after_cut_s: float = 0.3
    """The same for a part that follows a commit and hears it as its left context (its partials may then
    come once it holds this much and the look-ahead, before ``min_partial_audio_ms``): when a commit cut
    inside a sentence, its rest ("... to be.", 0.3-0.9 s) could not commit at its own pause and waited for
    the end of the next sentence (2-4 s: most of the meeting benchmark's lag p95)."""
    commit_any_after_s: float = 10.0
    """From this length on any pause commits, sentence end or not: it bounds the window every decode sees."""
    commit_clause_after_s: float = 3.0
    """Clause cuts (0: none): a pause under a word that ends a clause commits without a sentence end. The
    speaker's sentence may run on, but the words before the pause are heard, and the commit's decode hears the
    look-ahead too. Bounds the wait of a sentence whose partials put no full stop at its pause below
    ``commit_any_after_s``. Cutting a sentence costs accuracy only when its parts are decoded alone: with
    ``final_left_context_s`` the next part hears the words before the cut. A word the partial marked (a comma,
    a colon...) ends a clause from ``commit_min_s`` into the part; from this length on, an agreed word without a
    mark at a long pause does too, and from ``commit_clause_unmarked_after_s`` at any pause."""
    commit_clause_unmarked_pause_ms: int = 140
    """...but a pause at least this long may end an unmarked clause from ``commit_clause_after_s``: over two
    meetings of the benchmark, 72 of 260 quiet runs inside sentences (commas included) and 62 of 82 between
    sentences were this long; a stop consonant's gap inside a word or phrase is shorter."""
    commit_rest_end_within_ms: int = 800
    """The rest of a cut sentence does not end at its first long pause under an unmarked word when the same
    reading ends the sentence (a closing mark the decoder does not doubt, ``commit_stop_min_prob``) on a word
    ending within this much after that pause (0: it always may): its end is a word or two away, and such a cut
    left them to wait for the next sentence's end ("a plan to avoid it next | time.": 4.1 s late twice on one
    LiveKit recording replayed, 1.31 s with this hold; among the two slowest sentences in five of six replays).
    The reading before counts too (:attr:`OpenUtterance.stops_read`): one partial read "next time.", the next
    ran on ("next time in the") and cut under "next" (4.43 s late on the file path, 4.14 s through LiveKit,
    session 53)."""
    commit_clause_unmarked_after_s: float = 6.0
    """From this length on, the clause rule also cuts after a word with no mark. From 3 s, 28 of 85 cuts of one
    meeting run came this way, about 20 of them at a gap inside a phrase ("drop the dark | theme", "scans
    the whole orders | table", "the plan is to freeze | features"): both sides were then misread, and the
    rest waited for a commit of its own."""
    pauses: PauseOptions = field(default_factory=PauseOptions)
    """How quiet a pause is."""
    final_left_context_s: float = 6.0
    """A final of the part that goes on after a commit also hears up to this much of the committed part before
    it (0: never): its last words, with their text forced as the decoder's start, and keeps only what follows.
    A sentence cut out alone loses the words around it, which Whisper reads it by. Every forced token costs a
    decoder step (times the beam), so it is kept short."""
    final_left_context_chain: bool = False
    """The left context may reach back over several committed parts (their words as their decodes forced
    them), not only the last one: a short part left the next one a short context. Off: it pays in words, not
    in time. Meeting benchmark, file path, 2 cores of a host where a 5 s window encodes in 100 ms: at 10 s
    WER 6.1 / 5.6 % vs 7.9 % in three runs of the shipped rule (offline base 6.6 %), but CPU 0.82-0.84 vs 0.68-0.72
    CPU-s per audio-s and final lag p50 2.2-2.8 vs 1.4 s; at 8 s 7.0 %, 0.82, 2.3 s. Through LiveKit at 10 s:
    WER 6.8 vs 8.0 %, p50 / p95 3.5 / 10.7 vs 1.5 / 4.2 s, RSS 531 vs 413 MiB. Forced words cost a
    decoder step each, as much as generated ones (a 4 s part with 12 s of context: 1.7 s vs 0.37 s alone at
    beam 5, 1.4 vs 0.33 s at beam 1, one thread), so the cost is the context's words. Offline at one run's
    cuts (``benchmarks/left_context_study.py``): 6 s 8.2 %, 6 s chained 8.4 %, 8 s 7.3 %, 10 s 5.9 %, 12 s
    7.3 %, 15 s 5.8 %."""
    chain_short_left_s: float = 3.0
    """A part whose left context (the last part's words) would be shorter than this hears it chained over the
    parts before, as ``final_left_context_chain`` does (0: never). A part cut out of a sentence is often 2-3 s,
    and the part after it read worst after it: "Let's write that down as a decision" after 2.6 s of context
    read "Let's write netdown and a decision" and needed a second decode after 4.7 s (``hard_logprob``) in
    every traced run, which put that sentence at the LiveKit path's p95 (1.7-2.0 s). Chained, no part was
    decoded twice in four of five meeting runs (1-6 a run before; the fifth: one), and those sentences were
    final in 0.6-1.2 s, with WER 6.5 / 6.8 % on the file path (offline 6.6 %)."""
    hard_left_context_s: float = 10.0
    """A final that heard its left context and still reads below ``hard_logprob`` is decoded again hearing up
    to this much (0: never), reaching back over earlier parts as ``final_left_context_chain`` does, and that
    reading is the final when it says something and reads better; the part's later finals then hear it at
    once. The longer context is what Whisper reads a hard part by ("and we missed him long up with Spurge"
    after 2.5 s of context, "and we missed several obvious bugs" after 10 s), but every forced word is a
    decoder step, so only the parts that read badly pay for it. ``left_context_study``-style replay of one
    file run's 71 cuts (beam 5, 2 threads): 6 s for all WER 10.1 % (15.3 s of decoding), 10 s chained for all
    6.8 % (37.7 s), again at 10 s below log-prob -0.3 / -0.2 / -0.15: 5 / 13 / 20 parts, 8.0 / 7.5 / 6.8 %
    (17.8 / 21.8 / 25.6 s)."""
    hard_logprob: float = -0.3
    """See ``hard_left_context_s``."""
    hard_min_words: int = 3
    """...and only a first reading of at least this many words: a short reply reads at a low log-prob anyway
    and read the same after more context in every traced run ("God." at -0.44, "Catch you." at -0.38, "Support
    told me" at -0.30), where the parts read better were 6 words and more."""
    noisy_below_db: float = 18.5
    """A stream whose speech stands less than this far above its background (the pause detector's
    :meth:`~livenexus_worker.streaming.pauses.PauseDetector.snr_db`, a 5 s average) chains its left context as
    ``final_left_context_chain`` does (0: never), until it reads ``noisy_margin_db`` more. In noise the words
    around a cut part are what Whisper reads it by, and a short part left the next one little of them. Meeting
    benchmark, file path (one run each, chained vs not): 12 dB SNR (reads 10.3-15.7 dB; offline base 13.5 %)
    WER 19.2 vs 25.7 / 23.1 %, final p50 / p95 1.08 / 3.53 vs 0.85 / 3.10 s, CPU 1.21 vs 0.96 CPU-s per audio-s;
    17 dB (reads 16.4-19.9; offline 11.2 %) 9.3 vs 12.6 %, 1.20 / 2.58 vs 0.88 / 2.56 s, CPU 1.15 vs 0.95. At 22
    dB (reads 19.5-23.6) it stays off: the default meeting's figures are from there, and its WER is within a
    point of offline without the chain's later finals."""
    noisy_margin_db: float = 2.0
    """...so a stream near the line does not switch back and forth."""
    partial_left_context: bool = True
    """Partials of a part that has a left context hear it too (forced before the part's agreed words) once one
    of them said nothing the guards kept; those partials are held only to the loop and runaway guards, as the
    VAD has heard speech all along. Meeting benchmark, two pairs of runs with every such part's partials
    hearing it from the start: lag p95 3.9 vs 5.9 s, but WER 10.1-10.5 vs 7.9-8.6 % (more, earlier commits),
    hence only after a dropped partial."""
    partial_trim: bool = True
    """Partials decode only the audio from inside the latest agreed word that leaves ``partial_trim_tail_s``
    after it, that word forced and the agreed words before it as Whisper's previous text (one decoder pass)
    instead of forced (a decoder step each): a partial costs what is still unstable, not the whole part
    (:mod:`trims`). Finals and confirming partials still decode the whole part. Meeting benchmark, file path:
    about half the partials cut, a partial 125-137 instead of ~185 ms, CPU 0.565-0.626 against 0.654-0.680."""
    partial_trim_head_s: float = 0.5
    """The cut is at least this far into the part: a shorter head saves little decoding."""
    partial_trim_tail_s: float = 0.8
    """Audio after the cut a partial must have: under it, Whisper reads a scrap of speech alone badly, so the
    cut moves to an earlier word."""
    partial_rates_left: bool = True
    """A part whose left context ends with a full stop no decode has rated yet: its first partial that hears
    the look-ahead of a pause under ``commit_min_s`` into it (where only the rest of a cut sentence ends)
    hears that context too, forced, and rates the stop (:func:`rests.rest_of_sentence`). A guess committed in
    a pause, a commit decoded up to its cut and a final at the VAD's end all end with the full stop Whisper
    puts at the end of any audio, and before a final of the part heard it, nothing said whether the part
    was the rest of a cut sentence: "a plan to avoid it next. | time, in the meantime" was not cut at the
    comma 0.4-0.6 s in, and the sentence was final with the next one, 4.1-5.0 s late. Rating every such
    part's first partial instead cost ~0.03 CPU-s per audio-s (17 partials of ~0.35 s a meeting run)."""
    partials_spelled_by_finals: bool = True
    """A final's decode of the open part (a guess in a pause, a confirming decode) respells the words the
    partials agreed on, as later partials are forced to them (:meth:`LocalAgreement.respell`): its punctuation
    instead of the first greedy reading's, which carried on unmarked for seconds once it had none."""
    left_noise_check_s: float = 2.0
    """A final of a part this short, decoded with a left context and with no agreed words, must also pass the
    no-speech and log-prob guards decoded alone (noise right after a final reads as words next to it)."""
    left_noise_loud_ms: int = 100
    """...unless this much of it is as loud as the speaker's words (:func:`pauses.loud_ms`): a word said."""
    quiet_no_speech: float = 0.5
    """A final with fewer than ``evidence_words`` agreed words and less than ``left_noise_loud_ms`` as loud as the
    speaker's words (once their level is settled) is dropped above this no-speech probability, or below
    ``quiet_logprob``; decoded after a left context, its decode alone is held to them. On the meeting
    benchmark's audio every sentence had 330 ms or more that loud even at 9 dB SNR, and no window of the
    noise after the last one had any. Decoded alone (base, beam 5), windows of that noise read as words at
    no-speech 0.67-0.86 and log-prob -1.4 to -2.6; short replies 10-14 dB softer than the speaker, which a
    quiet part may also be, at 0.15-0.35 and -0.4 to -0.6 when read right."""
    quiet_logprob: float = -0.8
    """See ``quiet_no_speech``."""
    final_left_context_gap_ms: int = 500
    """An utterance that starts within this much of the end of the previous final's audio (0: never) hears
    that final as its left context too, like the part after a commit: the VAD ends an utterance at a pause
    of a few hundred ms, a comma or a breath inside a sentence as well, and the words after it were decoded
    alone. The gap holds the VAD's start window and pre-roll (540 ms), so 500 ms is a silence of about 1 s:
    a speaker's pause inside a turn, not a new turn, whose decode would only pay for the forced words.
    Meeting benchmark, file path, two runs each at 1000 ms: WER 7.0-7.2 % with it, 10.3-11.2 % without
    (offline 6.6 %)."""
