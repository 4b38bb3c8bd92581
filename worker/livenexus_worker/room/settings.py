"""Worker settings read from environment variables.

These names are a contract: the operator's pod template sets exactly these, and the README lists them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from livenexus_worker.core.tier_spec import DEFAULT_TIERS, TierSpec

if TYPE_CHECKING:
    from livenexus_worker.ops.tier_control import TierOptions
    from livenexus_worker.streaming.runtime import RuntimeOptions


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


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
    identity: str = "livenexus-agent"
    """LIVENEXUS_IDENTITY: the worker's participant identity."""
    model: str = "base"
    """LIVENEXUS_MODEL: model of the first tier when LIVENEXUS_TIERS is not set."""
    compute_type: str = "int8"
    """LIVENEXUS_COMPUTE_TYPE: CTranslate2 compute type of the first tier."""
    beam_size: int = 5
    """LIVENEXUS_BEAM_SIZE: beam size of the first tier."""
    language: str | None = "en"
    """LIVENEXUS_LANGUAGE: language code, or 'auto' (None) to detect per utterance."""
    vad_aggressiveness: int = 2
    """LIVENEXUS_VAD_AGGRESSIVENESS: webrtcvad mode 0-3."""
    vad_hangover_ms: int = 250
    """LIVENEXUS_VAD_HANGOVER_MS: silence that ends an utterance."""
    tiers: tuple[TierSpec, ...] = DEFAULT_TIERS
    """LIVENEXUS_TIERS: JSON list of tiers (model, computeType, beamSize, partialIntervalMs), best first."""
    tier_cpu_high: float = 0.75
    """LIVENEXUS_TIER_CPU_HIGH: CPU fraction (of the cores available to us) above which we step down."""
    tier_cpu_low: float = 0.45
    """LIVENEXUS_TIER_CPU_LOW: CPU fraction below which we may step up."""
    tier_lag_high_ms: int = 500
    """LIVENEXUS_TIER_LAG_HIGH_MS: inference lag above which we step down."""
    tier_lag_low_ms: int = 150
    """LIVENEXUS_TIER_LAG_LOW_MS: inference lag below which we may step up."""
    tier_down_window_s: float = 3.0
    """LIVENEXUS_TIER_DOWN_WINDOW_S: pressure must persist this long before stepping down."""
    tier_up_window_s: float = 20.0
    """LIVENEXUS_TIER_UP_WINDOW_S: calm must persist this long before stepping up."""
    tier_cooldown_s: float = 4.0
    """LIVENEXUS_TIER_COOLDOWN_S: minimum time between two tier changes."""
    metrics_port: int = 9300
    """LIVENEXUS_METRICS_PORT: port of /metrics, /healthz and /readyz (0 disables)."""
    metrics_host: str = "0.0.0.0"
    """LIVENEXUS_METRICS_HOST: bind address of the metrics server (tests use 127.0.0.1)."""
    threads: int = 0
    """LIVENEXUS_THREADS: CTranslate2 intra-op threads (0 = number of usable cores)."""
    model_cache: str = ""
    """LIVENEXUS_MODEL_CACHE: directory of prepared models (default: user cache dir)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env

        def integer(name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
            raw = e.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError as exc:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise SettingsError(f"{name} must be in [{lo}, {hi}], got {value}")
            return value

        def number(name: str, default: float) -> float:
            raw = e.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError as exc:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from exc

        model = e.get("LIVENEXUS_MODEL", "base")
        compute_type = e.get("LIVENEXUS_COMPUTE_TYPE", "int8")
        beam = integer("LIVENEXUS_BEAM_SIZE", 5, 1, 10)
        tiers = _parse_tiers(e.get("LIVENEXUS_TIERS", ""), TierSpec(model, compute_type, beam, 250))
        lang = e.get("LIVENEXUS_LANGUAGE", "en").strip() or "en"
        return cls(
            livekit_url=e.get("LIVEKIT_URL", ""),
            api_key=e.get("LIVEKIT_API_KEY", ""),
            api_secret=e.get("LIVEKIT_API_SECRET", ""),
            room=e.get("LIVENEXUS_ROOM", ""),
            identity=e.get("LIVENEXUS_IDENTITY", "livenexus-agent"),
            model=model,
            compute_type=compute_type,
            beam_size=beam,
            language=None if lang == "auto" else lang,
            vad_aggressiveness=integer("LIVENEXUS_VAD_AGGRESSIVENESS", 2, 0, 3),
            vad_hangover_ms=integer("LIVENEXUS_VAD_HANGOVER_MS", 250, 30, 5000),
            tiers=tiers,
            tier_cpu_high=number("LIVENEXUS_TIER_CPU_HIGH", 0.75),
            tier_cpu_low=number("LIVENEXUS_TIER_CPU_LOW", 0.45),
            tier_lag_high_ms=integer("LIVENEXUS_TIER_LAG_HIGH_MS", 500, 0),
            tier_lag_low_ms=integer("LIVENEXUS_TIER_LAG_LOW_MS", 150, 0),
            tier_down_window_s=number("LIVENEXUS_TIER_DOWN_WINDOW_S", 3.0),
            tier_up_window_s=number("LIVENEXUS_TIER_UP_WINDOW_S", 20.0),
            tier_cooldown_s=number("LIVENEXUS_TIER_COOLDOWN_S", 4.0),
            metrics_port=integer("LIVENEXUS_METRICS_PORT", 9300, 0, 65535),
            metrics_host=e.get("LIVENEXUS_METRICS_HOST", "0.0.0.0"),
            threads=integer("LIVENEXUS_THREADS", 0, 0, 64),
            model_cache=e.get("LIVENEXUS_MODEL_CACHE", ""),
        )

    def runtime_options(self) -> RuntimeOptions:
        """What the runtime takes from these settings: the ladder, VAD, language, threads and model cache."""
        # Imported here: reading settings (the CLI does for every command) must not load the audio stack.
        from livenexus_worker.inference.guards import GuardOptions
        from livenexus_worker.streaming.pipeline import PipelineOptions
        from livenexus_worker.streaming.runtime import RuntimeOptions
        from livenexus_worker.streaming.segmenter import SegmenterOptions
        from livenexus_worker.streaming.vad import VadOptions

        pipeline = PipelineOptions(
            vad=VadOptions(aggressiveness=self.vad_aggressiveness, hangover_ms=self.vad_hangover_ms),
            segmenter=SegmenterOptions(),
            guards=GuardOptions(),
            language=self.language,
        )
        return RuntimeOptions(tiers=self.tiers, pipeline=pipeline, threads=self.threads, model_cache=self.model_cache)

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
        )

    def require_livekit(self) -> None:
        """Fail fast, naming every missing variable, before touching the network."""
        missing = [
            name
            for name, value in (
                ("LIVEKIT_URL", self.livekit_url),
                ("LIVEKIT_API_KEY", self.api_key),
                ("LIVEKIT_API_SECRET", self.api_secret),
                ("LIVENEXUS_ROOM", self.room),
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
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"LIVENEXUS_TIERS is not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data or not all(isinstance(x, dict) for x in data):
        raise SettingsError("LIVENEXUS_TIERS must be a non-empty JSON list of objects")
    return tuple(_tier_from_mapping(x) for x in data)


def _tier_from_mapping(raw: Mapping[str, object]) -> TierSpec:
    """One entry of LIVENEXUS_TIERS (camelCase as the CRD writes it, snake_case accepted too)."""

    def num(key: str, alt: str, default: int) -> int:
        value = raw.get(key, raw.get(alt, default))
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise SettingsError(f"tier field {key!r} must be an integer, got {value!r}")
        return int(value)

    return TierSpec(
        model=str(raw.get("model", "base")),
        compute_type=str(raw.get("computeType", raw.get("compute_type", "int8"))),
        beam_size=num("beamSize", "beam_size", 5),
        partial_interval_ms=num("partialIntervalMs", "partial_interval_ms", 250),
    )
