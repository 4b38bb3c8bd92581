"""The one event type every stage downstream of the engine speaks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from livenexus_common.contract import TranscriptMessage, transcript_message


@dataclass(frozen=True, kw_only=True)
class TranscriptEvent:
    """A partial or final transcript of one utterance of one stream (built by keywords only)."""

    stream_id: str
    """Which audio stream this came from (a LiveKit track sid, or the file name)."""
    speaker: str
    """Who spoke: the LiveKit participant identity, or the stream id for files."""
    segment_id: str
    """Stable id of the utterance; partials and the final of one utterance share it."""
    text: str
    """Full text of the utterance so far (``stable + unstable`` for partials)."""
    is_final: bool
    """True once the utterance ended and was decoded with the final settings."""
    start: float
    """Utterance start, seconds of stream time."""
    end: float
    """End of the audio covered by this hypothesis, seconds of stream time."""
    stable: str = ""
    """Prefix that two consecutive hypotheses agreed on (LocalAgreement-2); never changes afterwards."""
    unstable: str = ""
    """Tail that may still change in later partials."""
    language: str = ""
    """Detected or configured language code."""
    tier: str = ""
    """Name of the model/decoding tier that produced this event."""
    processing_ms: float = 0.0
    """Inference time spent on this hypothesis."""
    latency_ms: float = 0.0
    """For finals: wall time from the end of speech (VAD end) to emission. For partials: audio end to emission."""
    words: list[tuple[float, float, str]] = field(default_factory=list)
    """Optional word timings (start, end, word) in stream time."""
    trace: dict[str, float] | None = None
    """Stage stamps (monotonic s) when LIVENEXUS_TRACE_STAGES is on (see :mod:`core.stages`), else None."""

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["trace"] is None:
            del fields["trace"]  # output unchanged when tracing is off
        return json.dumps(fields, ensure_ascii=False)

    def to_wire(self) -> TranscriptMessage:
        """The JSON data message published on topic ``livenexus.transcript``."""
        return transcript_message(
            text=self.text, is_final=self.is_final, speaker=self.speaker, segment_id=self.segment_id,
            start=self.start, end=self.end, latency_ms=self.latency_ms, stable=self.stable,
            unstable=self.unstable, language=self.language, tier=self.tier, trace=self.trace,
        )
