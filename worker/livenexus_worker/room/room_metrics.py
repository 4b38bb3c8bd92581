"""Metrics of the room layer: lost connections, the caps on tracks and speakers, transcripts not published.

They live on the worker's registry (``WorkerMetrics.registry``), so ``/metrics`` serves them with the rest;
one set per registry however many agents run on it (tests run several).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from livenexus_common.contract import Metric

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RoomMetrics] = weakref.WeakKeyDictionary()


class RoomMetrics:
    """Counters, and two gauges read from the current track set; labels are bounded enums (a DisconnectReason
    name, partial/final)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.disconnects = Counter(Metric.LIVEKIT_DISCONNECTS.removesuffix("_total"),
                                   "Connections to the room that were lost, by LiveKit's reason.", ["reason"],
                                   registry=r)
        self.streams_refused = Counter(Metric.STREAMS_REFUSED.removesuffix("_total"),
                                       "Audio tracks left unsubscribed: the worker transcribed its maximum.",
                                       registry=r)
        self.speech_over_cap = Counter(Metric.SPEECH_OVER_CAP.removesuffix("_total"),
                                       "Voiced seconds not transcribed: the maximum of concurrent speakers spoke.",
                                       registry=r)
        # Gauges of the track set, so the stream cap can be seen holding from outside (crowd benchmark).
        self.streams = Gauge("livenexus_streams", "Audio tracks being transcribed.", registry=r)
        self.streams_waiting = Gauge("livenexus_streams_waiting",
                                     "Audio tracks waiting unsubscribed for a slot (stream cap reached).", registry=r)
        self.transcripts_dropped = Counter(Metric.TRANSCRIPTS_DROPPED.removesuffix("_total"),
                                           "Transcript events not published (partials superseded or over the "
                                           "backlog; finals only when the final backlog is full).", ["kind"],
                                           registry=r)

    @classmethod
    def of(cls, worker_metrics: Any) -> RoomMetrics | None:
        """The room metrics on ``worker_metrics.registry`` (created once), or None without a registry."""
        registry = getattr(worker_metrics, "registry", None)
        if not isinstance(registry, CollectorRegistry):
            return None
        with _lock:
            found = _by_registry.get(registry)
            if found is None:
                found = _by_registry[registry] = cls(registry)
            return found
