"""Operator-wide configuration, from the environment the chart sets (tests build it directly)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from livenexus_operator.scrape import MetricsUrl, service_metrics_url


def _flag(raw: str, default: bool) -> bool:
    raw = raw.strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


@dataclass
class OperatorConfig:
    """How this operator instance behaves."""

    namespace: str = "livenexus"
    """Namespace the operator runs in (its ConfigMap and Lease live there)."""
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces whose TranscriptionRooms are reconciled; empty = all namespaces."""
    template_configmap: str = "livenexus-worker-template"
    """ConfigMap (in :attr:`namespace`) holding the chart's worker template."""
    template_key: str = "worker.yaml"
    """Key of the template inside that ConfigMap."""
    status_interval_s: float = 15.0
    """How often each room's status is refreshed from its Deployment and metrics."""
    retry_delay_s: float = 10.0
    """Delay before retrying a room whose Secret is missing or whose API calls failed."""
    retry_max_s: float = 300.0
    """Upper bound of the exponential backoff after API failures (429, 5xx, unreachable)."""
    status_heartbeat_s: float = 300.0
    """A status whose only change is lastScrapeTime is rewritten at most this often."""
    worker_limit: int = 64
    """Rooms kopf handles at once (settings.queueing.worker_limit): bounds a burst such as 1,000 resumes.
    kopf keeps a slot busy while a room waits for a retry, so this must exceed the rooms retrying at once."""
    refresh_concurrency: int = 8
    """Rooms the status refresher reconciles at once."""
    scrape_timeout_s: float = 3.0
    """Timeout of one /metrics scrape."""
    metrics_url: MetricsUrl = field(default=service_metrics_url)
    """Where a worker's /metrics is; tests point this at 127.0.0.1."""
    leader_election: bool = True
    """Hold a coordination.k8s.io Lease before reconciling anything."""
    lease_name: str = "livenexus-operator"
    """Name of that Lease."""
    identity: str = ""
    """This replica's identity in the Lease (the pod name)."""
    metrics_port: int = 9400
    """Port of the operator's own /metrics and /healthz (0 disables)."""
    metrics_host: str = "0.0.0.0"
    """Bind address of that server (tests use 127.0.0.1)."""
    liveness_port: int = 9401
    """Port of kopf's liveness endpoint (bound to 127.0.0.1, proxied by /healthz)."""
    livekit_url: str = ""
    """LiveKit server of the TranscriptionPolicies (webhooks from it, RoomService resync against it); ''
    turns policies off. From chart values, never from a CR: the operator's credentials go only here."""
    livekit_api_key: str = field(default="", repr=False)
    """API key that signs its webhooks and lists its rooms (from the Secret named in the chart values)."""
    livekit_api_secret: str = field(default="", repr=False)
    """The matching API secret."""
    webhook_port: int = 9402
    """Port of the LiveKit webhook endpoint (POST /livekit/webhook); 0 disables it (resync alone)."""
    webhook_host: str = "0.0.0.0"
    """Bind address of that endpoint."""
    resync_interval_s: float = 30.0
    """How often the policy rooms are re-read from LiveKit's RoomService (repairs lost webhooks)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env
        watch = tuple(n.strip() for n in e.get("LIVENEXUS_WATCH_NAMESPACES", "").split(",") if n.strip())
        return cls(
            namespace=e.get("LIVENEXUS_OPERATOR_NAMESPACE", "") or "livenexus",
            watch_namespaces=watch,
            template_configmap=e.get("LIVENEXUS_WORKER_TEMPLATE_CONFIGMAP", "") or cls.template_configmap,
            status_interval_s=float(e.get("LIVENEXUS_STATUS_INTERVAL_S", "") or 15.0),
            retry_delay_s=float(e.get("LIVENEXUS_RETRY_DELAY_S", "") or 10.0),
            retry_max_s=float(e.get("LIVENEXUS_RETRY_MAX_S", "") or 300.0),
            status_heartbeat_s=float(e.get("LIVENEXUS_STATUS_HEARTBEAT_S", "") or 300.0),
            worker_limit=int(e.get("LIVENEXUS_WORKER_LIMIT", "") or 64),
            refresh_concurrency=int(e.get("LIVENEXUS_REFRESH_CONCURRENCY", "") or 8),
            leader_election=_flag(e.get("LIVENEXUS_LEADER_ELECTION", ""), True),
            lease_name=e.get("LIVENEXUS_LEASE_NAME", "") or cls.lease_name,
            identity=e.get("POD_NAME", "") or os.uname().nodename,
            metrics_port=int(e.get("LIVENEXUS_OPERATOR_METRICS_PORT", "") or 9400),
            metrics_host=e.get("LIVENEXUS_OPERATOR_METRICS_HOST", "") or "0.0.0.0",
            liveness_port=int(e.get("LIVENEXUS_OPERATOR_LIVENESS_PORT", "") or 9401),
            livekit_url=e.get("LIVENEXUS_LIVEKIT_URL", ""),
            livekit_api_key=e.get("LIVENEXUS_LIVEKIT_API_KEY", ""),
            livekit_api_secret=e.get("LIVENEXUS_LIVEKIT_API_SECRET", ""),
            webhook_port=int(e.get("LIVENEXUS_WEBHOOK_PORT", "") or 9402),
            resync_interval_s=float(e.get("LIVENEXUS_RESYNC_INTERVAL_S", "") or 30.0),
        )

    @property
    def policies_enabled(self) -> bool:
        """TranscriptionPolicies act only with a LiveKit server and credentials to verify and list it."""
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)


    def __post_init__(self) -> None:
        for name in ("status_interval_s", "retry_delay_s", "retry_max_s", "status_heartbeat_s", "resync_interval_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not 0 <= self.webhook_port <= 65535:
            raise ValueError(f"webhook_port must be a port number or 0 (off), got {self.webhook_port!r}")
        for name, top in (("worker_limit", 1000), ("refresh_concurrency", 1000)):
            value = getattr(self, name)
            if not 1 <= value <= top:
                raise ValueError(f"{name} must be between 1 and {top}, got {value!r}")


_current = OperatorConfig()


def current() -> OperatorConfig:
    """The configuration the handlers use (set once by ``main`` or by a test before kopf starts)."""
    return _current


def install(cfg: OperatorConfig) -> None:
    global _current
    _current = cfg
