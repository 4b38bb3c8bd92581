"""Decoding an utterance as a final: the tier's beam, the agreed words as a safety net, and (for a commit) the
look-ahead that is heard but not kept.

Runs on the inference thread, without the stream's lock: it reads only what a final's job captured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from livenexus_worker.core.audio import SAMPLE_RATE, SAMPLES_PER_MS
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.inference.guards import check
from livenexus_worker.streaming.agreement import coverage
from livenexus_worker.streaming.stream_state import OpenUtterance, PendingFinal, PipelineOptions, StreamContext

log = logging.getLogger("livenexus_worker.streaming.pipeline")  # one logger for the stream's story


@dataclass(frozen=True)
class FinalRequest:
    """What one final decode needs from its stream."""

    stream_id: str
    """The stream, for events and logs."""
    speaker: str
    """Who spoke, as the events say it."""
    context: str
    """Recent finals of the stream, given to the decoder as earlier text ('' for none)."""


def decode_final(ctx: StreamContext, o: PipelineOptions, req: FinalRequest, op: OpenUtterance, audio: np.ndarray,
                 speech_end_wall: float, keep_until: int | None = None) -> PendingFinal | None:
    """Decode ``audio`` as a final; with ``keep_until``, only its words that end before that sample (the rest
    is look-ahead that belongs to the next utterance). None: dropped (logged), or no word could be kept."""
    _idx, tier, engine = ctx.engine_for(op.tier)
    hyp = engine.transcribe(audio, beam_size=tier.beam_size, language=o.language, context=req.context,
                            word_times=keep_until is not None)
    dur = audio.shape[0] / SAMPLE_RATE
    ctx.on_inference("final", hyp, dur)
    agreed = list(op.agreement.committed)
    if len(agreed) >= o.guards.evidence_words and coverage(agreed, hyp.text) < o.final_min_coverage:
        # Whisper sometimes skips the first seconds of a window that starts abruptly (measured on the meeting
        # benchmark: a final of 5 s of speech said only its last sentence). The words the partials agreed on
        # were heard: decode again from them, so the final can only add to what was stable.
        log.debug("stream %s: final %r misses the agreed %r; decoding from them", req.stream_id, hyp.text[:60],
                  " ".join(agreed)[:60])
        hyp = engine.transcribe(audio, beam_size=tier.beam_size, language=o.language, context=req.context,
                                prefix=" ".join(agreed), word_times=keep_until is not None)
        ctx.on_inference("final", hyp, dur)
    said = hyp.text
    if keep_until is not None:
        # A word may end a frame or two past the cut (20 ms alignment steps); one that ends later is the next
        # sentence's. Without word times nothing can be kept safely: the commit is declined.
        limit = (keep_until + 40 * SAMPLES_PER_MS) / SAMPLE_RATE
        kept = sum(1 for end in hyp.word_ends if end <= limit)
        if not kept:
            log.debug("stream %s: commit declined, no word ends before %.2f s (%s)", req.stream_id,
                      keep_until / SAMPLE_RATE, hyp.word_ends[:3])
            return None
        said, dur = " ".join(hyp.text.split()[:kept]), keep_until / SAMPLE_RATE
    text, why = check(said, hyp.no_speech_prob, hyp.avg_logprob, dur, o.guards, evidence_words=len(agreed))
    if text is None:
        log.debug("stream %s dropped utterance %s: %s", req.stream_id, op.utt.segment_id, why)
        return None
    start = op.utt.start_sample / SAMPLE_RATE
    event = TranscriptEvent(
        stream_id=req.stream_id, speaker=req.speaker, segment_id=op.utt.segment_id, text=text, is_final=True,
        start=start, end=start + dur, stable=text, unstable="", language=hyp.language, tier=tier.name,
        processing_ms=(hyp.encode_s + hyp.decode_s) * 1000, latency_ms=0.0,
    )
    return PendingFinal(event, speech_end_wall)
