"""The worker ↔ operator contract, defined once, and what the console and the dev kit read of it.

The operator renders the worker's pod environment and the worker parses it; the worker serves ``/metrics``
and the operator scrapes it; the worker publishes transcripts and the console page and the dev bots read
them. Every name both ends must agree on lives here. ``tests/operator/test_contract.py`` is the one test
that renders a pod with the operator and parses it with the worker.

Only the standard library is imported: both images and the console install this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, NotRequired, TypedDict

from livenexus_common import tiers
from livenexus_common.tiers import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS
from livenexus_common.tiers import DEFAULT_TIERS as DEFAULT_TIERS
from livenexus_common.tiers import TierSpec as TierSpec
from livenexus_common.tiers import TierThresholds as TierThresholds
from livenexus_common.tiers import ladder_to_json as ladder_to_json
from livenexus_common.tiers import model_ladder as model_ladder


class ContractError(ValueError):
    """A value on the wire (an environment variable, a ladder entry) does not follow the contract."""


# -- The TranscriptionRoom API (charts/livenexus/crds): the operator reconciles it, the console lists it ----

GROUP: Final = "livenexus.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "transcriptionrooms"
KIND: Final = "TranscriptionRoom"
API_VERSION: Final = f"{GROUP}/{VERSION}"


# -- The worker's environment ----------------------------------------------------------------------------


class Env:
    """Names of the environment variables the worker reads (``WorkerSettings.from_env``)."""

    LIVEKIT_URL: Final = "LIVEKIT_URL"
    """ws(s):// URL of the LiveKit server."""
    LIVEKIT_API_KEY: Final = "LIVEKIT_API_KEY"
    """Key the worker mints its own token with (from a secretKeyRef in the pod)."""
    LIVEKIT_API_SECRET: Final = "LIVEKIT_API_SECRET"
    """Secret of that key (from a secretKeyRef; never logged)."""
    ROOM: Final = "LIVENEXUS_ROOM"
    """The one room the worker transcribes."""
    IDENTITY: Final = "LIVENEXUS_IDENTITY"
    """The worker's participant identity (the operator leaves the default)."""
    MODEL: Final = "LIVENEXUS_MODEL"
    """Model of the first tier when no ladder is given."""
    COMPUTE_TYPE: Final = "LIVENEXUS_COMPUTE_TYPE"
    """CTranslate2 compute type of the first tier."""
    BEAM_SIZE: Final = "LIVENEXUS_BEAM_SIZE"
    """Beam size of the first tier."""
    LANGUAGE: Final = "LIVENEXUS_LANGUAGE"
    """Language code, or ``auto``."""
    VAD_AGGRESSIVENESS: Final = "LIVENEXUS_VAD_AGGRESSIVENESS"
    """webrtcvad mode 0-3."""
    VAD_HANGOVER_MS: Final = "LIVENEXUS_VAD_HANGOVER_MS"
    """Silence that ends an utterance."""
    TIERS: Final = "LIVENEXUS_TIERS"
    """The ladder as JSON (:func:`ladder_to_json` / :func:`ladder_from_json`), best first."""
    TIER_CPU_HIGH: Final = "LIVENEXUS_TIER_CPU_HIGH"
    """:attr:`TierThresholds.cpu_high`."""
    TIER_CPU_LOW: Final = "LIVENEXUS_TIER_CPU_LOW"
    """:attr:`TierThresholds.cpu_low`."""
    TIER_LAG_HIGH_MS: Final = "LIVENEXUS_TIER_LAG_HIGH_MS"
    """:attr:`TierThresholds.lag_high_ms`."""
    TIER_LAG_LOW_MS: Final = "LIVENEXUS_TIER_LAG_LOW_MS"
    """:attr:`TierThresholds.lag_low_ms`."""
    TIER_DOWN_WINDOW_S: Final = "LIVENEXUS_TIER_DOWN_WINDOW_S"
    """:attr:`TierThresholds.down_window_s`."""
    TIER_UP_WINDOW_S: Final = "LIVENEXUS_TIER_UP_WINDOW_S"
    """:attr:`TierThresholds.up_window_s`."""
    TIER_COOLDOWN_S: Final = "LIVENEXUS_TIER_COOLDOWN_S"
    """:attr:`TierThresholds.cooldown_s`."""
    METRICS_PORT: Final = "LIVENEXUS_METRICS_PORT"
    """Port of /metrics, /healthz and /readyz; the pod's probes and the operator's scrape use it."""
    METRICS_HOST: Final = "LIVENEXUS_METRICS_HOST"
    """Bind address of that server (the operator leaves the default, all addresses)."""
    THREADS: Final = "LIVENEXUS_THREADS"
    """CTranslate2 intra-op threads per decode (the operator leaves the default, 0: from two usable cores on, two
    where a second thread measurably pays on the node, else one)."""
    MKL_ON_AMD: Final = "LIVENEXUS_MKL_ON_AMD"
    """``auto`` (default): on an AMD CPU, CTranslate2 multiplies with Intel MKL's optimised kernels
    (``livenexus_worker.inference.mkl_hook``); ``off``: with oneDNN, CTranslate2's own choice there."""
    MODEL_CACHE: Final = "LIVENEXUS_MODEL_CACHE"
    """Directory of prepared models (the image's, or a mounted volume)."""
    AUTOSCALE_MAX_CPU: Final = "LIVENEXUS_AUTOSCALE_MAX_CPU"
    """Cores the operator may resize the pod up to (spec.autoscaling.maxCpu); unset when autoscaling is off.
    Below it the worker holds its tier a little longer under pressure, since more CPU is on its way."""
    AUTOSCALE_GRACE_S: Final = "LIVENEXUS_AUTOSCALE_GRACE_S"
    """How much longer than the down window the worker holds its tier while its quota is below
    :attr:`AUTOSCALE_MAX_CPU` (upAfter + the time a resize takes); after it, it steps down anyway."""
    POD_NAME: Final = "LIVENEXUS_POD_NAME"
    """The pod's name (downward API, optional): part of the default identity, else the host name is."""
    MAX_STREAMS: Final = "LIVENEXUS_MAX_STREAMS"
    """Audio tracks transcribed at once; tracks beyond it wait unsubscribed (counted, logged)."""
    MAX_SPEAKERS: Final = "LIVENEXUS_MAX_SPEAKERS"
    """Streams inside an utterance at once; speech of others beyond it is counted and logged, not decoded."""
    SHUTDOWN_DEADLINE_S: Final = "LIVENEXUS_SHUTDOWN_DEADLINE_S"
    """One deadline for SIGTERM → exit (flush, decode, publish, leave); below the pod's grace period."""
    FRAME_MS: Final = "LIVENEXUS_FRAME_MS"
    """Frame length asked of LiveKit's AudioStream (10, 20 or 30 ms; default 30)."""
    LONG_CONTEXT_S: Final = "LIVENEXUS_LONG_CONTEXT_S"
    """Seconds of earlier speech across committed parts a final hears (0-12; 0: the previous part's last 6 s):
    fewer misread words, more CPU per final (the operator leaves it unset; the chart's worker.extraEnv sets it)."""
    NOISY_BELOW_DB: Final = "LIVENEXUS_NOISY_BELOW_DB"
    """A stream whose speech stands less than this many dB above its background gets the long left context
    (0-40; default 18.5; 0: never): fewer misread words in a noisy room, more CPU per final there."""
    LOG_LEVEL: Final = "LIVENEXUS_LOG_LEVEL"
    """``debug``, ``info`` (default) or ``warning``: the level of a command started without ``-v``
    (:func:`livenexus_common.cli.setup_logging`), for a pod to tell its story when asked (the chart's extraEnv)."""
    TRACE_STAGES: Final = "LIVENEXUS_TRACE_STAGES"
    """``1``: stamp each transcript's stages (monotonic clock) into its data message's ``trace`` and the log."""


AUTOSCALE_ENV: Final = frozenset({Env.AUTOSCALE_MAX_CPU, Env.AUTOSCALE_GRACE_S})
"""Set by the operator only on rooms with spec.autoscaling enabled (a room's extraEnv may not shadow them)."""

RENDERED_ENV: Final = frozenset(
    {
        Env.LIVEKIT_URL, Env.LIVEKIT_API_KEY, Env.LIVEKIT_API_SECRET, Env.ROOM,
        Env.MODEL, Env.COMPUTE_TYPE, Env.BEAM_SIZE, Env.LANGUAGE, Env.VAD_AGGRESSIVENESS, Env.VAD_HANGOVER_MS,
        Env.TIERS, Env.TIER_CPU_HIGH, Env.TIER_CPU_LOW, Env.TIER_LAG_HIGH_MS, Env.TIER_LAG_LOW_MS,
        Env.TIER_DOWN_WINDOW_S, Env.TIER_UP_WINDOW_S, Env.TIER_COOLDOWN_S, Env.METRICS_PORT, Env.MODEL_CACHE,
    }
)
"""What the operator sets on every worker pod (a room's extraEnv may not shadow these)."""

WORKER_ENV: Final = RENDERED_ENV | AUTOSCALE_ENV | {Env.IDENTITY, Env.METRICS_HOST, Env.THREADS, Env.POD_NAME,
                                                    Env.MAX_STREAMS, Env.MAX_SPEAKERS, Env.SHUTDOWN_DEADLINE_S,
                                                    Env.FRAME_MS, Env.TRACE_STAGES, Env.LONG_CONTEXT_S,
                                                    Env.NOISY_BELOW_DB, Env.MKL_ON_AMD, Env.LOG_LEVEL}
"""Everything the worker reads: the rendered names plus the knobs the operator leaves at their defaults."""


# -- The tier ladder (:mod:`livenexus_common.tiers`, re-exported) ----------------------------------------


def ladder_from_json(raw: str) -> tuple[TierSpec, ...]:
    """Parse a LIVENEXUS_TIERS value; raises :class:`ContractError` naming the variable."""
    try:
        return tiers.parse_ladder(raw)
    except tiers.LadderError as exc:
        raise ContractError(f"{Env.TIERS}: {exc}") from exc


# -- The worker's /metrics, as far as the operator scrapes it ----------------------------------------------


class Metric:
    """Names of the worker series the operator reads into a TranscriptionRoom's status."""

    FINAL_LATENCY: Final = "livenexus_final_latency_seconds"
    """Histogram of end of speech → final; the operator reads its ``_bucket`` and ``_count`` samples."""
    REALTIME_FACTOR: Final = "livenexus_realtime_factor"
    """Gauge: inference seconds per speech second."""
    ACTIVE_SPEAKERS: Final = "livenexus_active_speakers"
    """Gauge: streams inside an utterance."""
    TIER_INDEX: Final = "livenexus_tier_index"
    """Gauge: the tier in force, 0 = preferred."""
    TIER_INFO: Final = "livenexus_tier_info"
    """Gauge at 1 for the tier in force, labelled :data:`TIER_INFO_LABELS`."""
    TIER_CHANGES: Final = "livenexus_tier_changes_total"
    """Counter of tier changes, labelled ``direction`` (:data:`TIER_DIRECTIONS`)."""
    LIVEKIT_CONNECTED: Final = "livenexus_livekit_connected"
    """Gauge: 1 while the worker is connected to its room."""
    CPU_RATIO: Final = "livenexus_process_cpu_ratio"
    """Gauge: the worker's CPU time per wall second ÷ usable cores (its quota); the autoscaler's "use vs quota"."""
    CPU_CORES: Final = "livenexus_cpu_cores"
    """Gauge: cores the worker may use: its CFS quota (the autoscaler's in-place resize), else its CPU set."""
    CPU_PRESSURE: Final = "livenexus_cpu_pressure"
    """Gauge: the CPU signal of the worker's tier policy (max of own share, PSI stall, busy cores)."""
    LAG: Final = "livenexus_lag_seconds"
    """Gauge: age of the oldest waiting inference job."""
    LIVEKIT_RECONNECTS: Final = "livenexus_livekit_reconnects_total"
    """Counter: connections to the room after the first (the worker's own and the SDK's resumes)."""
    LIVEKIT_DISCONNECTS: Final = "livenexus_livekit_disconnects_total"
    """Counter of lost connections, labelled ``reason`` (LiveKit's DisconnectReason name, a bounded enum)."""
    STREAMS_REFUSED: Final = "livenexus_streams_refused_total"
    """Counter: audio tracks left unsubscribed because the worker already transcribes its maximum."""
    SPEECH_OVER_CAP: Final = "livenexus_speech_over_cap_seconds_total"
    """Counter: voiced audio not transcribed because the maximum of concurrent speakers was reached."""
    TRANSCRIPTS_DROPPED: Final = "livenexus_transcripts_dropped_total"
    """Counter of transcript events not published, labelled ``kind`` (partial: superseded or over the
    backlog; final: only when the final backlog is full, each one logged as an error)."""


TIER_INFO_LABELS: Final = ("tier", "model", "compute_type", "beam_size")
"""Labels of :attr:`Metric.TIER_INFO`: :attr:`TierSpec.name` and the fields it is made of."""
TIER_DIRECTIONS: Final = ("down", "up")
"""Values of the ``direction`` label of :attr:`Metric.TIER_CHANGES`."""


# -- Transcripts in the room -------------------------------------------------------------------------------

TEXT_STREAM_TOPIC: Final = "lk.transcription"
"""Topic of the text streams LiveKit clients and livekit/agents front ends read (one stream per hypothesis)."""
DATA_TOPIC: Final = "livenexus.transcript"
"""Topic of the JSON data messages (:class:`TranscriptMessage`)."""
AGENT_IDENTITY_PREFIX: Final = "livenexus-agent"
"""Every worker identity starts with this (the worker joins with kind ``agent``); the console page believes
transcripts only from agent participants with this prefix."""


class StreamAttr:
    """Attributes of each ``lk.transcription`` text stream (LiveKit's names)."""

    TRACK_ID: Final = "lk.transcribed_track_id"
    """Sid of the audio track the text transcribes."""
    SEGMENT_ID: Final = "lk.segment_id"
    """Utterance id, shared by its partials and its final."""
    FINAL: Final = "lk.transcription_final"
    """``"true"`` on the final, ``"false"`` on partials."""


def stream_attributes(*, track_sid: str, segment_id: str, is_final: bool) -> dict[str, str]:
    """The attributes of one hypothesis's text stream."""
    return {
        StreamAttr.TRACK_ID: track_sid,
        StreamAttr.SEGMENT_ID: segment_id,
        StreamAttr.FINAL: "true" if is_final else "false",
    }


class TranscriptMessage(TypedDict):
    """The JSON data message on :data:`DATA_TOPIC` (console/src/transcript.ts ``parseWire`` reads it)."""

    type: Literal["transcript"]
    """Always ``"transcript"`` (readers ignore other types)."""
    text: str
    """Full text of the utterance so far."""
    isFinal: bool
    """True on the utterance's final."""
    speaker: str
    """Participant identity of the speaker."""
    segmentId: str
    """Utterance id, shared by its partials and its final (and by the text stream's ``lk.segment_id``)."""
    start: float
    """Utterance start, seconds of stream time (ms precision)."""
    end: float
    """End of the audio this hypothesis covers, seconds of stream time."""
    latencyMs: float
    """Finals: end of speech → emission; partials: audio end → emission."""
    stable: str
    """Prefix agreed by two consecutive hypotheses; never changes afterwards."""
    unstable: str
    """Tail that may still change."""
    language: str
    """Language code."""
    tier: str
    """:attr:`TierSpec.name` of the tier that produced it."""
    trace: NotRequired[dict[str, float]]
    """Only with LIVENEXUS_TRACE_STAGES=1: monotonic seconds (CLOCK_MONOTONIC, shared by the processes of one
    machine) of the stages this transcript passed, keys from :data:`TRACE_STAGES` only. Readers may ignore it."""


TRANSCRIPT_OPTIONAL_FIELDS: Final = frozenset({"trace"})
"""Keys of a :class:`TranscriptMessage` that may be absent (``NotRequired`` is not visible at run time here)."""
TRANSCRIPT_FIELDS: Final = frozenset(TranscriptMessage.__annotations__) - TRANSCRIPT_OPTIONAL_FIELDS
"""Every key each :class:`TranscriptMessage` has."""
TRACE_STAGES: Final = (
    "recv", "push", "end", "queued", "start", "decoded", "emit", "submit", "pub", "text", "transcription", "data",
)
"""Stage stamps a transcript may carry, in pipeline order: the frame with its last voiced audio received
(event loop) and pushed (frames thread); utterance end decided (finals); decode job queued, started, finished;
emitted by the pipeline; submitted to the publisher; publish started; each channel's publish returned (log only:
the data message cannot carry its own return)."""


def transcript_message(
    *,
    text: str,
    is_final: bool,
    speaker: str,
    segment_id: str,
    start: float,
    end: float,
    latency_ms: float,
    stable: str,
    unstable: str,
    language: str,
    tier: str,
    trace: Mapping[str, float] | None = None,
) -> TranscriptMessage:
    """Build the data message; times are rounded to what a reader can use (ms, 0.1 ms for the latency).
    ``trace``: stage stamps (only the :data:`TRACE_STAGES` keys are kept, so it stays bounded)."""
    msg: TranscriptMessage = {
        "type": "transcript",
        "text": text,
        "isFinal": is_final,
        "speaker": speaker,
        "segmentId": segment_id,
        "start": round(start, 3),
        "end": round(end, 3),
        "latencyMs": round(latency_ms, 1),
        "stable": stable,
        "unstable": unstable,
        "language": language,
        "tier": tier,
    }
    if trace:
        msg["trace"] = {k: round(float(trace[k]), 6) for k in TRACE_STAGES if k in trace}
    return msg
