"""Worker settings read from environment variables.

The names are the worker ↔ operator contract (:class:`livenexus_common.contract.Env`): the operator's pod
template sets them, and the README lists them.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from livenexus_common.contract import AGENT_IDENTITY_PREFIX, DEFAULT_THRESHOLDS, ContractError, Env, ladder_from_json
from livenexus_worker.core.tier_spec import DEFAULT_TIERS, TierSpec

if TYPE_CHECKING:
    from livenexus_worker.ops.tier_control import TierOptions
    from livenexus_worker.streaming.runtime import RuntimeOptions


IDENTITY_PREFIX = AGENT_IDENTITY_PREFIX
"""Every default worker identity starts with it (the console page and the demo recognise the transcriber by it)."""
_IDENTITY_MAX = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


_N = TypeVar("_N", int, float)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_integer(e: Mapping[str, str], name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    """``e[name]`` as an integer in [lo, hi]; ``default`` when unset or blank."""
    return _env_value(e, name, default, int, "an integer", lo, hi)


def env_number(e: Mapping[str, str], name: str, default: float, lo: float | None = None,
               hi: float | None = None) -> float:
    """``e[name]`` as a finite number in [lo, hi]; ``default`` when unset or blank."""
    return _env_value(e, name, default, float, "a finite number", lo, hi)


def _env_value(e: Mapping[str, str], name: str, default: _N, parse: Callable[[str], _N], what: str,
               lo: _N | None, hi: _N | None) -> _N:
    raw = e.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from exc
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SettingsError(f"{name} must be {what} in [{lo}, {hi}], got {raw!r}")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """Everything `livenexus-worker run` needs; built from the environment by :func:`from_env`."""

    livekit_url: str = ""
    """LIVEKIT_URL: ws(s):// URL of the LiveKit server."""
    api_key: str = ""
    """LIVEKIT_API_KEY: key used to mint the worker's own token."""
    api_secret: str = field(default="", repr=False)
    """LIVEKIT_API_SECRET: never logged (excluded from repr)."""
    room: str = ""
    """LIVENEXUS_ROOM: the one room this worker transcribes."""
    identity: str = IDENTITY_PREFIX
    """LIVENEXUS_IDENTITY: the worker's participant identity. Default: ``livenexus-agent-<pod>`` with the pod
    from LIVENEXUS_POD_NAME, else ``<host name>-<pid>`` (a pod's host name is its name). Two workers sharing
    one identity kick each other out of the room in turn, so it must differ per pod."""
    model: str = TierSpec.model
    """LIVENEXUS_MODEL: model of the first tier when LIVENEXUS_TIERS is not set."""
    compute_type: str = TierSpec.compute_type
    """LIVENEXUS_COMPUTE_TYPE: CTranslate2 compute type of the first tier."""
    beam_size: int = TierSpec.beam_size
    """LIVENEXUS_BEAM_SIZE: beam size of the first tier."""
    language: str | None = "en"
    """LIVENEXUS_LANGUAGE: language code, or 'auto' (None) to detect per utterance."""
    vad_aggressiveness: int = 2
    """LIVENEXUS_VAD_AGGRESSIVENESS: webrtcvad mode 0-3."""
    vad_hangover_ms: int = 250
    """LIVENEXUS_VAD_HANGOVER_MS: silence that ends an utterance."""
    tiers: tuple[TierSpec, ...] = DEFAULT_TIERS
    """LIVENEXUS_TIERS: JSON list of tiers (model, computeType, beamSize, partialIntervalMs), best first."""
    tier_cpu_high: float = DEFAULT_THRESHOLDS.cpu_high
    """LIVENEXUS_TIER_CPU_HIGH: CPU fraction (of the cores available to us) above which we step down."""
    tier_cpu_low: float = DEFAULT_THRESHOLDS.cpu_low
    """LIVENEXUS_TIER_CPU_LOW: CPU fraction below which we may step up."""
    tier_lag_high_ms: int = DEFAULT_THRESHOLDS.lag_high_ms
    """LIVENEXUS_TIER_LAG_HIGH_MS: inference lag above which we step down."""
    tier_lag_low_ms: int = DEFAULT_THRESHOLDS.lag_low_ms
    """LIVENEXUS_TIER_LAG_LOW_MS: inference lag below which we may step up."""
    tier_down_window_s: float = DEFAULT_THRESHOLDS.down_window_s
    """LIVENEXUS_TIER_DOWN_WINDOW_S: pressure must persist this long before stepping down."""
    tier_up_window_s: float = DEFAULT_THRESHOLDS.up_window_s
    """LIVENEXUS_TIER_UP_WINDOW_S: calm must persist this long before stepping up."""
    tier_cooldown_s: float = DEFAULT_THRESHOLDS.cooldown_s
    """LIVENEXUS_TIER_COOLDOWN_S: minimum time between two tier changes."""
    autoscale_max_cpu: float = 0.0
    """LIVENEXUS_AUTOSCALE_MAX_CPU: cores the operator may resize this pod up to (0: no autoscaler)."""
    autoscale_grace_s: float = 0.0
    """LIVENEXUS_AUTOSCALE_GRACE_S: extra time the tier is held under pressure while that CPU may still come."""
    metrics_port: int = 9300
    """LIVENEXUS_METRICS_PORT: port of /metrics, /healthz and /readyz (0 disables)."""
    metrics_host: str = "0.0.0.0"
    """LIVENEXUS_METRICS_HOST: bind address of the metrics server (tests use 127.0.0.1)."""
    threads: int = 0
    """LIVENEXUS_THREADS: CTranslate2 intra-op threads per decode (0 = from two usable cores on, two where a
    second thread measurably pays on this host, else one: ``inference.calibrate``; decodes run at once on the
    cores left, see ``streaming.scheduler.threads_for``)."""
    model_cache: str = ""
    """LIVENEXUS_MODEL_CACHE: directory of prepared models (default: user cache dir)."""
    max_streams: int = 32
    """LIVENEXUS_MAX_STREAMS: audio tracks transcribed at once; later tracks wait unsubscribed for a free slot."""
    max_speakers: int = 8
    """LIVENEXUS_MAX_SPEAKERS: streams inside an utterance at once; further speech is counted, not decoded."""
    shutdown_deadline_s: float = 20.0
    """LIVENEXUS_SHUTDOWN_DEADLINE_S: SIGTERM → exit, all stages together; keep it below the pod's
    terminationGracePeriodSeconds (30 s by default) so the kubelet never SIGKILLs a flush."""
    frame_ms: int = 30
    """LIVENEXUS_FRAME_MS: frame length asked of LiveKit's AudioStream, 10, 20 or 30 ms (webrtcvad's sizes)."""
    long_context_s: float = 0.0
    """LIVENEXUS_LONG_CONTEXT_S: seconds of earlier speech, across committed parts, a final hears before its own
    (0: the previous part's last 6 s, the default). Measured at 10 s (meeting benchmark, 2 slow cores): WER
    5.6-6.1 % vs 7.9 % on the file path, 6.8 vs 8.0 % through LiveKit, for 0.82-0.85 vs 0.69 CPU-s per audio-s,
    final lag p50 2.2-3.5 vs 1.4 s and 531 vs 413 MiB RSS: for hosts with time to spare per final."""
    noisy_below_db: float = 18.5
    """LIVENEXUS_NOISY_BELOW_DB: a stream whose speech stands less than this far above its background (dB, as
    the pause detector reads it, averaged over 5 s) chains its left context, as LIVENEXUS_LONG_CONTEXT_S does
    at 6 s (0: never). Meeting benchmark: at 12 dB SNR WER 19.2 vs 25.7 % on the file path, 20.8 vs 25.7 %
    through LiveKit; at 17 dB 9.3 vs 12.6 %; for 1.15-1.21 vs 0.95-0.96 CPU-s per audio-s and final p50
    1.08-1.38 vs 0.85-1.02 s. The default meeting (22 dB) never switches."""
    mkl_on_amd: bool = True
    """LIVENEXUS_MKL_ON_AMD: ``auto`` (true) or ``off``: on an AMD CPU, decode with Intel MKL's kernels
    (:mod:`livenexus_worker.inference.mkl_hook`, which reads the variable itself when the first model loads,
    in this process and in the thread-timing child alike); validated here so a wrong value fails the start."""
    trace_stages: bool = False
    """LIVENEXUS_TRACE_STAGES: ``1`` stamps every transcript's stages (data message ``trace`` and a log line);
    for transport measurements, off by default."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env

        def integer(name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
            return env_integer(e, name, default, lo, hi)

        def number(name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
            return env_number(e, name, default, lo, hi)

        d = cls  # the field defaults above (the tier ones are the contract's)
        model = e.get(Env.MODEL, d.model)
        compute_type = e.get(Env.COMPUTE_TYPE, d.compute_type)
        beam = integer(Env.BEAM_SIZE, d.beam_size, 1, 10)
        tiers = _parse_tiers(e.get(Env.TIERS, ""), TierSpec(model, compute_type, beam, TierSpec.partial_interval_ms))
        lang = e.get(Env.LANGUAGE, "en").strip() or "en"
        return cls(
            livekit_url=e.get(Env.LIVEKIT_URL, ""),
            api_key=e.get(Env.LIVEKIT_API_KEY, ""),
            api_secret=e.get(Env.LIVEKIT_API_SECRET, ""),
            room=e.get(Env.ROOM, ""),
            identity=_identity(e.get(Env.IDENTITY, ""), e.get(Env.POD_NAME, "")),
            model=model,
            compute_type=compute_type,
            beam_size=beam,
            language=None if lang == "auto" else lang,
            vad_aggressiveness=integer(Env.VAD_AGGRESSIVENESS, d.vad_aggressiveness, 0, 3),
            vad_hangover_ms=integer(Env.VAD_HANGOVER_MS, d.vad_hangover_ms, 30, 5000),
            tiers=tiers,
            tier_cpu_high=number(Env.TIER_CPU_HIGH, d.tier_cpu_high),
            tier_cpu_low=number(Env.TIER_CPU_LOW, d.tier_cpu_low),
            tier_lag_high_ms=integer(Env.TIER_LAG_HIGH_MS, d.tier_lag_high_ms, 0),
            tier_lag_low_ms=integer(Env.TIER_LAG_LOW_MS, d.tier_lag_low_ms, 0),
            tier_down_window_s=number(Env.TIER_DOWN_WINDOW_S, d.tier_down_window_s),
            tier_up_window_s=number(Env.TIER_UP_WINDOW_S, d.tier_up_window_s),
            tier_cooldown_s=number(Env.TIER_COOLDOWN_S, d.tier_cooldown_s),
            autoscale_max_cpu=number(Env.AUTOSCALE_MAX_CPU, d.autoscale_max_cpu, 0.0, 1024.0),
            autoscale_grace_s=number(Env.AUTOSCALE_GRACE_S, d.autoscale_grace_s, 0.0, 3600.0),
            metrics_port=integer(Env.METRICS_PORT, d.metrics_port, 0, 65535),
            metrics_host=e.get(Env.METRICS_HOST, d.metrics_host),
            threads=integer(Env.THREADS, d.threads, 0, 64),
            model_cache=e.get(Env.MODEL_CACHE, ""),
            max_streams=integer(Env.MAX_STREAMS, d.max_streams, 1, 1024),
            max_speakers=integer(Env.MAX_SPEAKERS, d.max_speakers, 1, 256),
            shutdown_deadline_s=number(Env.SHUTDOWN_DEADLINE_S, d.shutdown_deadline_s, 1.0, 3600.0),
            frame_ms=_frame_ms(integer(Env.FRAME_MS, d.frame_ms, 10, 30)),
            trace_stages=_flag(Env.TRACE_STAGES, e.get(Env.TRACE_STAGES, "")),
            mkl_on_amd=_mkl_on_amd(e.get(Env.MKL_ON_AMD, "")),
            # A window holds at most 30 s: the context and an utterance at its cap (15 s) must fit in it.
            long_context_s=number(Env.LONG_CONTEXT_S, d.long_context_s, 0.0, 12.0),
            noisy_below_db=number(Env.NOISY_BELOW_DB, d.noisy_below_db, 0.0, 40.0),
        )

    def runtime_options(self) -> RuntimeOptions:
        """What the runtime takes from these settings: the ladder, VAD, language, threads and model cache."""
        # Imported here: reading settings (the CLI does for every command) must not load the audio stack.
        from livenexus_worker.inference.guards import GuardOptions
        from livenexus_worker.ops.cpu import usable_cores
        from livenexus_worker.streaming.pipeline import PipelineOptions
        from livenexus_worker.streaming.runtime import RuntimeOptions
        from livenexus_worker.streaming.scheduler import decode_threads
        from livenexus_worker.streaming.segmenter import SegmenterOptions
        from livenexus_worker.streaming.vad import VadOptions

        pipeline = PipelineOptions(
            vad=VadOptions(aggressiveness=self.vad_aggressiveness, hangover_ms=self.vad_hangover_ms),
            segmenter=SegmenterOptions(),
            guards=GuardOptions(),
            language=self.language,
            noisy_below_db=self.noisy_below_db,
        )
        if self.long_context_s > 0:
            pipeline = replace(pipeline, final_left_context_s=self.long_context_s, final_left_context_chain=True)
        threads, measure = decode_threads(self.threads, usable_cores())
        return RuntimeOptions(tiers=self.tiers, pipeline=pipeline, threads=threads, model_cache=self.model_cache,
                              measure_threads=measure)

    def tier_options(self) -> TierOptions:
        """Thresholds and windows of the tier policy, over this ladder."""
        from livenexus_worker.ops.tier_control import TierOptions

        return TierOptions(
            levels=len(self.tiers),
            cpu_high=self.tier_cpu_high,
            cpu_low=self.tier_cpu_low,
            lag_high_s=self.tier_lag_high_ms / 1000.0,
            lag_low_s=self.tier_lag_low_ms / 1000.0,
            down_window_s=self.tier_down_window_s,
            up_window_s=self.tier_up_window_s,
            cooldown_s=self.tier_cooldown_s,
            autoscale_max_cores=self.autoscale_max_cpu,
            autoscale_grace_s=self.autoscale_grace_s,
        )

    def require_livekit(self) -> None:
        """Fail fast, naming every missing variable, before touching the network."""
        missing = [
            name
            for name, value in (
                (Env.LIVEKIT_URL, self.livekit_url),
                (Env.LIVEKIT_API_KEY, self.api_key),
                (Env.LIVEKIT_API_SECRET, self.api_secret),
                (Env.ROOM, self.room),
            )
            if not value
        ]
        if missing:
            raise SettingsError("missing required environment variables: " + ", ".join(missing))


def _parse_tiers(raw: str, first: TierSpec) -> tuple[TierSpec, ...]:
    if not raw.strip():
        # Without an explicit ladder, the configured model leads and the defaults below it follow.
        rest = tuple(t for t in DEFAULT_TIERS[1:] if t != first)
        return (first, *rest)
    try:
        return ladder_from_json(raw)
    except ContractError as exc:
        raise SettingsError(str(exc)) from exc


def _mkl_on_amd(raw: str) -> bool:
    from livenexus_worker.inference.mkl_hook import allowed

    try:
        return allowed(raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _frame_ms(value: int) -> int:
    if value not in (10, 20, 30):
        raise SettingsError(f"{Env.FRAME_MS} must be 10, 20 or 30, got {value}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 0 or 1, got {raw[:40]!r}")


def _identity(explicit: str, pod: str) -> str:
    """The participant identity: LIVENEXUS_IDENTITY as given (checked), else one unique to this pod/process."""
    if explicit.strip():
        value = explicit.strip()
        if len(value) > _IDENTITY_MAX or not value.isprintable():
            raise SettingsError(f"{Env.IDENTITY} must be printable and at most {_IDENTITY_MAX} characters")
        return value
    # A pod's host name is its name; outside Kubernetes two workers can share a host, so the pid joins it.
    suffix = pod.strip() or f"{socket.gethostname()}-{os.getpid()}"
    suffix = _UNSAFE.sub("-", suffix).strip("-")[: _IDENTITY_MAX - len(IDENTITY_PREFIX) - 1]
    return f"{IDENTITY_PREFIX}-{suffix}" if suffix else IDENTITY_PREFIX
