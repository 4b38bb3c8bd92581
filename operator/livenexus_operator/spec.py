"""Typed views of a TranscriptionRoom spec and of the chart's worker template.

The API server already applies the CRD's defaults; they are repeated here so that rendering is a total
function of whatever body it is handed (unit tests, objects stored before a default was added).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livenexus_common.contract import DEFAULT_THRESHOLDS, TierSpec, model_ladder
from livenexus_operator.sinks_spec import SinksError, SinksSpec, TranscriptsVolume

COMPUTE_TYPES = ("int8", "int8_float32", "float32")


class SpecError(ValueError):
    """The spec cannot be rendered (only reachable when the API server's validation was bypassed)."""


def _obj(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _num(raw: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise SpecError(f"{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _str(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _partial_model(raw: Mapping[str, Any]) -> str:
    """A ladder entry's partialModel: "" (the tier's own model) or a name as the CRD's pattern allows."""
    value = raw.get("partialModel", "")
    if value == "":
        return ""
    if not isinstance(value, str) or len(value) > 253 or not re.fullmatch(r"[A-Za-z0-9._/-]+", value):
        raise SpecError(f"tiers.ladder[].partialModel must be a model name, got {value!r}")
    return value


def _compute(raw: Mapping[str, Any], key: str) -> str:
    value = _str(raw, key, "int8")
    if value not in COMPUTE_TYPES:
        raise SpecError(f"{key} must be one of {', '.join(COMPUTE_TYPES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class RoomSpec:
    """Everything the operator needs from one TranscriptionRoom's spec, defaults applied."""

    room: str
    """LiveKit room (spec.room, else metadata.name)."""
    livekit_url: str
    """spec.livekit.url."""
    secret_name: str
    """spec.livekit.credentialsSecretRef.name."""
    api_key_key: str = "api-key"
    """Key of the API key inside the Secret."""
    api_secret_key: str = "api-secret"
    """Key of the API secret inside the Secret."""
    model: str = TierSpec.model
    """First-tier model."""
    compute_type: str = TierSpec.compute_type
    """First-tier compute type."""
    language: str = "en"
    """Language code or 'auto'."""
    beam_size: int = TierSpec.beam_size
    """First-tier beam size."""
    vad_aggressiveness: int = 2
    """webrtcvad mode."""
    vad_hangover_ms: int = 250
    """Silence that ends an utterance."""
    ladder: tuple[TierSpec, ...] = ()
    """Explicit ladder, best first (empty: derived from the model, see :attr:`effective_ladder`)."""
    cpu_high: float = DEFAULT_THRESHOLDS.cpu_high
    """Step down above this CPU fraction."""
    cpu_low: float = DEFAULT_THRESHOLDS.cpu_low
    """Step up below this CPU fraction."""
    lag_high_ms: int = DEFAULT_THRESHOLDS.lag_high_ms
    """Step down above this inference lag."""
    lag_low_ms: int = DEFAULT_THRESHOLDS.lag_low_ms
    """Step up below this inference lag."""
    down_window_s: float = DEFAULT_THRESHOLDS.down_window_s
    """Pressure must last this long before stepping down."""
    up_window_s: float = DEFAULT_THRESHOLDS.up_window_s
    """Calm must last this long before stepping up."""
    cooldown_s: float = DEFAULT_THRESHOLDS.cooldown_s
    """Minimum time between tier changes."""
    resources: Mapping[str, Any] | None = None
    """spec.resources (ResourceRequirements), None to use the chart's default."""
    suspend: bool = False
    """Scale the worker to zero."""
    autoscaling: Mapping[str, Any] | None = None
    """spec.autoscaling as written (fields over the chart's worker.autoscaling; see autoscale.AutoscalePolicy)."""
    sinks: SinksSpec = field(default_factory=SinksSpec)
    """spec.sinks: where finals go besides the room (webhook, JSONL file)."""

    @property
    def effective_ladder(self) -> tuple[TierSpec, ...]:
        """The explicit ladder, or cheaper variants of spec.model down to finals only (no partials).

        The worker's own default ladder ends on a second model (``tiny.en``), which an image may not ship;
        deriving the fallback from the configured model keeps every tier loadable.
        """
        return self.ladder or model_ladder(self.model, self.compute_type, self.beam_size)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RoomSpec:
        meta = _obj(body, "metadata")
        spec = _obj(body, "spec")
        livekit = _obj(spec, "livekit")
        ref = _obj(livekit, "credentialsSecretRef")
        model = _obj(spec, "model")
        vad = _obj(spec, "vad")
        tiers = _obj(spec, "tiers")
        raw_ladder = tiers.get("ladder") or []
        if not isinstance(raw_ladder, list):
            raise SpecError("tiers.ladder must be a list")
        ladder = tuple(
            TierSpec(
                model=_str(t, "model", ""),
                compute_type=_compute(t, "computeType"),
                # The CRD's default for a ladder entry (the API server applies it); the worker's is 5, but the
                # operator always writes the field.
                beam_size=_int(t, "beamSize", 1, 1, 10),
                partial_interval_ms=_int(t, "partialIntervalMs", 250, 0, 10000),
                partial_model=_partial_model(t),
            )
            for t in raw_ladder
            if isinstance(t, Mapping)
        )
        language = _str(model, "language", "en")
        resources = spec.get("resources")
        try:
            sinks = SinksSpec.from_spec(spec.get("sinks"))
        except SinksError as exc:
            raise SpecError(str(exc)) from exc
        d = DEFAULT_THRESHOLDS
        out = cls(
            room=str(spec.get("room") or meta.get("name") or ""),
            livekit_url=_str(livekit, "url", ""),
            secret_name=_str(ref, "name", ""),
            api_key_key=_str(ref, "apiKeyKey", "api-key"),
            api_secret_key=_str(ref, "apiSecretKey", "api-secret"),
            model=_str(model, "name", TierSpec.model),
            compute_type=_compute(model, "computeType"),
            language=language,
            beam_size=_int(model, "beamSize", TierSpec.beam_size, 1, 10),
            vad_aggressiveness=_int(vad, "aggressiveness", 2, 0, 3),
            vad_hangover_ms=_int(vad, "hangoverMs", 250, 30, 5000),
            ladder=ladder,
            cpu_high=_num(tiers, "cpuHigh", d.cpu_high, 0.0, 1.0),
            cpu_low=_num(tiers, "cpuLow", d.cpu_low, 0.0, 1.0),
            lag_high_ms=_int(tiers, "lagHighMs", d.lag_high_ms, 0, 600000),
            lag_low_ms=_int(tiers, "lagLowMs", d.lag_low_ms, 0, 600000),
            down_window_s=_num(tiers, "downWindowSeconds", d.down_window_s, 0.0, 3600.0),
            up_window_s=_num(tiers, "upWindowSeconds", d.up_window_s, 0.0, 3600.0),
            cooldown_s=_num(tiers, "cooldownSeconds", d.cooldown_s, 0.0, 3600.0),
            resources=resources if isinstance(resources, Mapping) and resources else None,
            suspend=bool(spec.get("suspend", False)),
            autoscaling=_obj(spec, "autoscaling") or None,
            sinks=sinks,
        )
        if not out.room:
            raise SpecError("neither spec.room nor metadata.name is set")
        if out.cpu_low >= out.cpu_high:
            raise SpecError("tiers.cpuLow must be lower than tiers.cpuHigh")
        if out.lag_low_ms >= out.lag_high_ms:
            raise SpecError("tiers.lagLowMs must be lower than tiers.lagHighMs")
        return out


@dataclass(frozen=True)
class ModelSource:
    """Where the worker finds its prepared models."""

    cache_path: str = "/opt/livenexus/models"
    """LIVENEXUS_MODEL_CACHE inside the container (the image prepares ``base`` there at build time)."""
    volume: Mapping[str, Any] | None = None
    """A Volume source (e.g. ``{persistentVolumeClaim: {claimName: models}}``) mounted read-only at
    :attr:`cache_path`; None keeps the models baked into the image."""


@dataclass(frozen=True)
class WorkerTemplate:
    """Chart-wide worker pod settings (values.yaml ``worker:``), shared by every room."""

    image: str = "livenexus-worker:0.1.0"
    """Worker image reference."""
    image_pull_policy: str = "IfNotPresent"
    """Container imagePullPolicy."""
    image_pull_secrets: tuple[Mapping[str, Any], ...] = ()
    """Pod imagePullSecrets."""
    resources: Mapping[str, Any] = field(default_factory=dict)
    """Default container resources when a room sets none."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Pod nodeSelector."""
    tolerations: tuple[Mapping[str, Any], ...] = ()
    """Pod tolerations."""
    affinity: Mapping[str, Any] = field(default_factory=dict)
    """Pod affinity."""
    pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    """Pod securityContext (merged over the non-root defaults)."""
    security_context: Mapping[str, Any] = field(default_factory=dict)
    """Container securityContext (merged over the locked-down defaults)."""
    extra_env: tuple[Mapping[str, Any], ...] = ()
    """Additional EnvVar entries; names the operator sets itself are skipped."""
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    """Extra pod labels."""
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    """Extra pod annotations."""
    service_account_name: str = ""
    """Worker ServiceAccount; empty uses the namespace default with no token mounted."""
    priority_class_name: str = ""
    """Pod priorityClassName."""
    termination_grace_period_seconds: int = 30
    """Time the worker gets to leave the room cleanly."""
    metrics_port: int = 9300
    """LIVENEXUS_METRICS_PORT and the Service port."""
    tmp_size_limit: str = "256Mi"
    """sizeLimit of the /tmp emptyDir."""
    model_source: ModelSource = field(default_factory=ModelSource)
    """Where models come from."""
    autoscaling: Mapping[str, Any] = field(default_factory=dict)
    """worker.autoscaling: the defaults of every room's spec.autoscaling."""
    transcripts: TranscriptsVolume = field(default_factory=TranscriptsVolume)
    """worker.transcripts: the volume of rooms' file sinks."""

    @classmethod
    def from_values(cls, raw: Mapping[str, Any]) -> WorkerTemplate:
        """Build from the chart's ``worker`` values (camelCase keys, as rendered into the ConfigMap)."""
        src = _obj(raw, "modelSource")
        volume = src.get("volume")
        port = raw.get("metricsPort", 9300)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SpecError(f"worker.metricsPort must be a port number, got {port!r}")
        image = raw.get("image", cls.image)
        if isinstance(image, Mapping):
            repo = str(image.get("repository", "livenexus-worker"))
            tag = str(image.get("tag", "") or "latest")
            image = f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"
        return cls(
            image=str(image),
            image_pull_policy=str(raw.get("imagePullPolicy", "IfNotPresent")),
            image_pull_secrets=tuple(raw.get("imagePullSecrets") or ()),
            resources=dict(raw.get("resources") or {}),
            node_selector=dict(raw.get("nodeSelector") or {}),
            tolerations=tuple(raw.get("tolerations") or ()),
            affinity=dict(raw.get("affinity") or {}),
            pod_security_context=dict(raw.get("podSecurityContext") or {}),
            security_context=dict(raw.get("securityContext") or {}),
            extra_env=tuple(raw.get("extraEnv") or ()),
            pod_labels=dict(raw.get("podLabels") or {}),
            pod_annotations=dict(raw.get("podAnnotations") or {}),
            service_account_name=str(raw.get("serviceAccountName") or ""),
            priority_class_name=str(raw.get("priorityClassName") or ""),
            termination_grace_period_seconds=int(raw.get("terminationGracePeriodSeconds", 30)),
            metrics_port=port,
            tmp_size_limit=str(raw.get("tmpSizeLimit") or "256Mi"),
            model_source=ModelSource(
                cache_path=str(src.get("cachePath") or ModelSource.cache_path),
                volume=dict(volume) if isinstance(volume, Mapping) and volume else None,
            ),
            autoscaling=dict(_obj(raw, "autoscaling")),
            transcripts=_transcripts(raw.get("transcripts")),
        )


def _transcripts(raw: Any) -> TranscriptsVolume:
    try:
        return TranscriptsVolume.from_values(raw)
    except SinksError as exc:
        raise SpecError(str(exc)) from exc
