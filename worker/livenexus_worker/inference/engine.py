"""faster-whisper / CTranslate2 inference with right-sized encoder windows.

Whisper's encoder is usually fed a 30 s window padded with silence; on CPU that costs ~0.5-1 s however short
the speech. CTranslate2 accepts shorter mel inputs, so we pad only to the utterance length plus a margin,
rounded up to a bucket: a few seconds of speech encode ~5-8x faster with the same text.

numpy's BLAS is held to one thread. Measured on 2 cores (base int8, 10 windows each, 0.2 s apart, as partials
come): with numpy's default BLAS threads the feature extractor's one BLAS call left OpenBLAS threads spinning on
the other core for ~100 ms after every decode, and 2 intra-op threads looked no faster than one (a 2.5 s
beam-1 partial 127 vs 116 ms). Meeting benchmark (file path): 0.91 -> 0.57 CPU-s per audio-s, sentence-final
lag p50/p95 1.43/3.98 -> 1.24/3.23 s. With BLAS held, ``threads`` 2 decodes 1.5-6 s windows 1.75-1.85x faster
than one (beam 1 and 5; the worker's choice is ``streaming.scheduler.threads_for``).
"""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.inference import batching, mkl_hook
from livenexus_worker.inference.vocab import IdMap

log = logging.getLogger(__name__)
_blas_limited = False

FRAMES_PER_SECOND = 100  # mel hop of 10 ms
HOP_SAMPLES = SAMPLE_RATE // FRAMES_PER_SECOND
TOKENS_PER_SECOND = FRAMES_PER_SECOND // 2
"""Encoder output steps per second (the alignment's time unit): the encoder halves the mel frame rate."""
_PUNCTUATION = frozenset(string.punctuation)
FULL_WINDOW_FRAMES = 3000
MAX_RETURNED_TOKENS = 224
"""Whisper's decoder holds 448 positions; CTranslate2 returns at most half of ``max_length`` (see ``_decode``)."""
MAX_WINDOW_SAMPLES = 30 * SAMPLE_RATE
"""Whisper's window: audio beyond it is not decoded."""


@dataclass(frozen=True)
class EngineOptions:
    """How windows are sized and how decoding is bounded."""

    padded_30s: bool = False
    """Classic mode: pad every window to 30 s (kept to compare against in benchmarks)."""
    margin_frames: int = 100
    """Mel frames of padding after the speech; without a margin the last word is often lost or looped."""
    bucket_frames: int = 0
    """Window lengths are rounded up to a multiple of this. 0 picks by the kernels: 10 (0.1 s) when MKL
    multiplies, 100 (1 s) otherwise. oneDNN (CTranslate2's products on a CPU without MKL) keeps what it makes for
    each shape, so there 0.1 s buckets held 85-94 MiB more for ~3 % less time. MKL keeps nothing per shape, and
    the convolutions oneDNN still runs are then capped at 8 shapes (:mod:`mkl_hook`): over 1-12 s windows peak
    RSS 267-270 MiB against 273-295 with 1 s buckets, and on 1-5 s windows the encoder took 0.86-0.91x the time
    without the 0.5 s of silence a 1 s bucket adds on average."""
    min_window_frames: int = 200
    """Shortest window; very short inputs make Whisper unreliable."""
    tokens_per_second: float = 6.0
    """Decoding stops after this many tokens per second of audio (plus a constant): bounds loops."""


@dataclass(frozen=True)
class DecodeRequest:
    """One window to decode and how."""

    audio: np.ndarray
    """int16 or float32 16 kHz mono samples; only the first 30 s are decoded."""
    beam_size: int = 1
    """Beam width (requests decoded in one batch share it)."""
    language: str | None = "en"
    """Language code, or None to detect it."""
    prefix: str = ""
    """Text forced as the decoder's start; it is part of the returned text."""
    max_new_tokens: int | None = None
    """Cap on tokens generated after the prefix (besides the per-second bound)."""
    context: str = ""
    """Earlier text, in Whisper's previous-text slot."""
    word_times: bool = False
    """Align the words (one more decoder pass)."""


@dataclass(frozen=True)
class Hypothesis:
    """One decoding result."""

    text: str
    """Decoded text, stripped."""
    no_speech_prob: float
    """Model's probability that the window holds no speech."""
    avg_logprob: float
    """Average log-probability of the decoded tokens."""
    language: str
    """Language used (configured or detected)."""
    encode_s: float
    """Encoder wall time."""
    decode_s: float
    """Decoder wall time."""
    window_frames: int
    """Mel frames fed to the encoder."""
    truncated: bool = False
    """Generation stopped at its token cap, not at the end of the text: the text may not cover the audio."""
    word_ends: tuple[float, ...] = ()
    """End time (s, from the start of the audio) of each space-separated word of ``text``, when asked for
    (cross-attention alignment, as faster-whisper's word timestamps); empty otherwise or when it failed."""
    word_probs: tuple[float, ...] = ()
    """With ``word_ends``: the probability the decoder gives each word's last token (its punctuation, where it
    has some), read in the same alignment pass. A forced token gets one too: a forced full stop near 0 is a
    sentence end the decoder, hearing more audio, does not make."""


class WhisperEngine:
    """One loaded model. Up to ``workers`` calls run at once (CTranslate2 replicas sharing the weights); more
    wait in CTranslate2's queue."""

    def __init__(self, model_dir: Path, compute_type: str = "int8", threads: int = 0,
                 options: EngineOptions | None = None, workers: int = 1) -> None:
        mkl_hook.install()  # before CTranslate2's first import, which the next line may be
        from faster_whisper import WhisperModel

        self.options = options or EngineOptions()
        threads = threads or 1
        self.threads = threads
        """Intra-op threads of each decode: the cores one call keeps busy."""
        _limit_blas()
        t0 = time.perf_counter()
        self._wm = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads,
                                num_workers=max(1, workers))
        self.load_s = time.perf_counter() - t0
        self.kernels = mkl_hook.check_after_load()
        """Which library multiplies (MKL or oneDNN, :mod:`mkl_hook`), for the log."""
        self.bucket_frames = self.options.bucket_frames or (10 if mkl_hook.consulted() else 100)
        """Window lengths are multiples of this (``EngineOptions.bucket_frames``, resolved)."""
        self._ids = IdMap.of_model(model_dir, self._wm.hf_tokenizer)
        """A pruned model's ids (``vocab``); None when it has the tokenizer's whole vocabulary."""
        self.model_dir = model_dir
        self.compute_type = compute_type
        self._tokenizers: dict[str | None, object] = {}

    @property
    def vocabulary(self) -> str:
        """Which vocabulary the decoder scores, for the log: the whole, or a pruned copy's size."""
        return "whole vocabulary" if self._ids is None else f"English vocabulary, {self._ids.kept.shape[0]} tokens"

    @property
    def multilingual(self) -> bool:
        return bool(self._wm.model.is_multilingual)

    def window_frames(self, content_frames: int) -> int:
        o = self.options
        if o.padded_30s:
            return FULL_WINDOW_FRAMES
        want = max(o.min_window_frames, content_frames + o.margin_frames)
        want = -(-want // self.bucket_frames) * self.bucket_frames
        return min(FULL_WINDOW_FRAMES, want)

    def _tokenizer(self, language: str | None) -> object:
        from faster_whisper.tokenizer import Tokenizer

        tok = self._tokenizers.get(language)
        if tok is None:
            tok = Tokenizer(self._wm.hf_tokenizer, self.multilingual, task="transcribe",
                            language=language or "en")
            self._tokenizers[language] = tok
        return tok

    def transcribe(self, audio: np.ndarray, beam_size: int = 1, language: str | None = "en",
                   prefix: str = "", max_new_tokens: int | None = None, context: str = "",
                   word_times: bool = False) -> Hypothesis:
        """Decode int16 or float32 16 kHz mono audio of at most 30 s.

        Inside :meth:`batching.Batcher.together` the call waits for the other jobs' calls and runs in one batch."""
        req = DecodeRequest(audio, beam_size, language, prefix, max_new_tokens, context, word_times)
        gate = batching.current_gate()
        if gate is not None:
            return gate.call(self, req)
        return self.transcribe_batch([req])[0]

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        """Decode several windows in one encoder and one decoder call (they must share ``beam_size``).

        Windows are padded to the longest one's length. Measured (base int8, 2 threads, 3 s clips, beam 5):
        4 windows 2.1-2.3x faster than one after another, 2 windows 1.2-1.5x; same text, same scores when the
        windows are the same length. Encode and decode times are each request's share of the batch's."""

        if not requests:
            return []
        beam = requests[0].beam_size
        if any(r.beam_size != beam for r in requests):
            raise ValueError("a batch shares one beam size")
        if len(requests) > 1 and any(r.context for r in requests):
            # CTranslate2 wants <|startoftranscript|> at one position across a batch, and previous text (off
            # by default, ``context_finals``) differs in length: those requests are decoded one by one.
            plain = [r for r in requests if not r.context]
            done = iter(self._decode(plain) if plain else [])
            return [self._decode([r])[0] if r.context else next(done) for r in requests]
        return self._decode(requests)

    def _decode(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        import ctranslate2

        beam = requests[0].beam_size
        samples = [_samples(r.audio) for r in requests]
        frames = max(self.window_frames(s.shape[0] // HOP_SAMPLES) for s in samples)
        feats = np.stack([self._features(s, frames) for s in samples])
        t0 = time.perf_counter()
        enc = self._wm.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        t1 = time.perf_counter()
        langs = [r.language for r in requests]
        if any(lang is None for lang in langs) and self.multilingual:
            detected = self._wm.model.detect_language(enc)
            langs = [lang or d[0][0][2:-2] for lang, d in zip(langs, detected, strict=True)]
        toks = [self._tokenizer(lang) for lang in langs]
        prompts, forced, limit = [], [], []
        for r, tok, s in zip(requests, toks, samples, strict=True):
            prompt, f = _prompt(tok, r.context, r.prefix)
            if self._ids is not None:
                prompt, f = self._ids.to_model(prompt), self._ids.to_model(f)
            prompts.append(prompt)
            forced.append(f)
            cap = int(s.shape[0] / SAMPLE_RATE * self.options.tokens_per_second) + 8
            new = min(cap, r.max_new_tokens) if r.max_new_tokens is not None else cap
            limit.append(min(len(f) + new, MAX_RETURNED_TOKENS))
        results = self._wm.model.generate(
            enc,
            prompts,
            beam_size=beam,
            # Measured on CTranslate2 4.5-4.8: Whisper's generate returns at most max_length // 2 tokens
            # (forced prefix included), whatever the prompt. Asked for as documented, finals were cut at 3
            # tokens per second of audio and partials at 14 new tokens, and neither knew it.
            # The decoder also stops at max_length minus the prompt before <|notimestamps|> (previous text
            # included), so that much is added too.
            max_length=min(448, max(max(2 * n, n + len(p)) for n, p in zip(limit, prompts, strict=True))),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        decoded_at = time.perf_counter()
        n = len(requests)
        out: list[Hypothesis] = []
        for i, (r, result) in enumerate(zip(requests, results, strict=True)):
            # CTranslate2 returns the forced prefix tokens as part of the sequence; in a batch the shared
            # max_length may let one run past its own cap, which is cut here as if decoded alone.
            tokens = result.sequences_ids[0][: limit[i]]
            if self._ids is not None:
                tokens = self._ids.to_tokenizer(tokens)
            # Scores are cumulative log-probs normalised by length (length_penalty=1), as in faster-whisper.
            avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1) if tokens else -10.0
            text = toks[i].decode(tokens).strip()  # type: ignore[attr-defined]
            ends: tuple[float, ...] = ()
            probs: tuple[float, ...] = ()
            aligned_at = time.perf_counter()
            if r.word_times:
                one = enc if n == 1 else ctranslate2.StorageView.from_array(np.asarray(enc)[i : i + 1])
                ends, probs = self._word_ends(toks[i], one, tokens, samples[i].shape[0] // HOP_SAMPLES, text)
            out.append(Hypothesis(text, float(result.no_speech_prob), avg_logprob, langs[i] or "",
                                  (t1 - t0) / n, (decoded_at - t1) / n + time.perf_counter() - aligned_at, frames,
                                  truncated=len(tokens) >= limit[i] - 1, word_ends=ends, word_probs=probs))
        return out

    def _features(self, samples: np.ndarray, frames: int) -> np.ndarray:
        # Pad with silence in the audio domain, as Whisper was trained: zero-valued mel frames are not
        # silence after log-mel normalisation, and Whisper loops on them.
        padded = np.zeros(frames * HOP_SAMPLES, dtype=np.float32)
        padded[: samples.shape[0]] = samples[: padded.shape[0]]
        feats = self._wm.feature_extractor(padded, padding=HOP_SAMPLES)
        return np.ascontiguousarray(feats[:, :frames], dtype=np.float32)

    def _word_ends(self, tok: Any, enc: Any, tokens: list[int], num_frames: int, text: str
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Word end times and last-token probabilities from the decoder's alignment pass; () and () when the
        words do not match ``text``."""
        if not tokens or num_frames <= 0:
            return (), ()
        start, text_tokens = tok.sot_sequence, tokens
        if self._ids is not None:
            start, text_tokens = self._ids.to_model(start), self._ids.to_model(tokens)
        result = self._wm.model.align(enc, start, [text_tokens], num_frames, median_filter_width=7)[0]
        words, word_tokens = tok.split_to_word_tokens([*tokens, tok.eot])
        pairs = np.array(result.alignments)
        if len(word_tokens) <= 1 or pairs.size == 0:
            return (), ()
        jumps = np.pad(np.diff(pairs[:, 0]), (1, 0), constant_values=1).astype(bool)
        jump_times = pairs[:, 1][jumps] / TOKENS_PER_SECOND
        bounds = np.cumsum([len(t) for t in word_tokens[:-1]])
        if bounds[-1] >= jump_times.shape[0]:
            return (), ()
        token_probs = list(result.text_token_probs)
        last = [float(token_probs[b - 1]) if 0 < b <= len(token_probs) else 1.0 for b in bounds]
        return text_word_ends(words[:-1], [float(jump_times[b]) for b in bounds], text, last)


def text_word_ends(pieces: list[str], ends: list[float], text: str, probs: list[float] | None = None
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The end time of each whitespace-separated word of ``text``, from Whisper's word split (``pieces``, each
    with its end time); () when the two disagree (no times rather than wrong ones). Whisper splits punctuation
    off as a piece of its own ("start" "."), and what follows it with no space goes with it ("re" "-try",
    "3" ".5"): a piece with no leading space belongs to the word before, and its end is that word's end unless
    it is punctuation only (which the alignment places in the pause after the word). With ``probs`` (each
    piece's last token's probability), each word's is its last piece's, punctuation included."""
    out: list[float] = []
    p_out: list[float] = []
    for i, (piece, end) in enumerate(zip(pieces, ends, strict=True)):
        p = probs[i] if probs is not None else 1.0
        if out and not piece.startswith(" "):
            if not all(c in _PUNCTUATION for c in piece.strip()):
                out[-1] = end
            p_out[-1] = p
            continue
        out.append(end)
        p_out.append(p)
    if len(out) != len(text.split()):
        return (), ()
    return tuple(out), (tuple(p_out) if probs is not None else ())


def _limit_blas() -> None:
    """Hold numpy's BLAS to one thread, process-wide (see the module docstring: its idle threads spin)."""
    global _blas_limited
    if not _blas_limited:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_limited = True


def _samples(audio: np.ndarray) -> np.ndarray:
    """Float32 samples in [-1, 1], at most 30 s."""
    if audio.dtype == np.int16:
        samples = audio.astype(np.float32) / 32768.0
    else:
        samples = np.clip(np.nan_to_num(audio.astype(np.float32)), -1.0, 1.0)
    return samples[:MAX_WINDOW_SAMPLES]


def _prompt(tok: Any, context: str, prefix: str) -> tuple[list[int], list[int]]:
    """The decoder's prompt and, of it, the forced prefix's tokens."""
    prompt: list[int] = []
    if context:
        # Whisper's "previous text" slot: earlier finals of the same speaker, as in its own long-form
        # decoding, bounded to the last ~100 tokens.
        prompt.append(tok.sot_prev)
        prompt.extend(tok.encode(" " + context.strip())[-100:])
    prompt.extend(tok.sot_sequence)
    prompt.append(tok.no_timestamps)
    forced = tok.encode(" " + prefix.strip()) if prefix else []
    prompt.extend(forced)
    return prompt, forced
