"""A room's transcript sinks (spec.sinks): settings from the environment, metrics, and the fan-out of finals.

The publisher hands every final to :meth:`SinkSet.submit` on the event loop, besides publishing it into the
room; the sinks deliver it on their own (a task for the webhook, a thread for the file), so a slow receiver or
disk never holds up transcription. At shutdown the agent gives :meth:`SinkSet.close` its own share of the
deadline; a final the webhook could not deliver by then goes to ``<room>.undelivered.jsonl`` beside the
room's file (when the file sink is on), and is counted and logged either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from livenexus_common.sinks import (
    SINK_NAMES,
    SINK_RESULTS,
    SinkEnv,
    SinkMetric,
    SinkRecord,
    sink_record,
    transcript_file_name,
    webhook_url_problem,
)
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.room.publisher import TranscriptPublisher
from livenexus_worker.room.settings import SettingsError, env_integer, env_number
from livenexus_worker.room.sinks_file import FileSink, FileSinkOptions
from livenexus_worker.room.sinks_webhook import WebhookOptions, WebhookSink

log = logging.getLogger(__name__)

DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class SinkSettings:
    """The LIVENEXUS_SINK_* variables (:class:`livenexus_common.sinks.SinkEnv`), checked."""

    webhook_url: str = ""
    """Endpoint of the webhook sink; empty: none."""
    webhook_key: bytes = field(default=b"", repr=False)
    """HMAC key of the signatures (never logged)."""
    webhook_timeout_s: float = 5.0
    """Per POST."""
    webhook_max_queue: int = 1000
    """Finals waiting for the webhook at most."""
    file_dir: str = ""
    """Directory of the room's JSONL file; empty: no file sink."""
    file_max_bytes: int = 1 << 30
    """Rotation size of the JSONL file."""

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.file_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SinkSettings:
        e = os.environ if env is None else env
        url = e.get(SinkEnv.WEBHOOK_URL, "").strip()
        key = e.get(SinkEnv.WEBHOOK_SECRET, "")
        if url:
            problem = webhook_url_problem(url, allow_http=e.get(SinkEnv.WEBHOOK_ALLOW_HTTP, "") == "1")
            if problem:
                raise SettingsError(f"{SinkEnv.WEBHOOK_URL}: {problem}")
            if len(key.encode()) < 16:
                raise SettingsError(f"{SinkEnv.WEBHOOK_SECRET} must hold a signing key of at least 16 bytes")
        file_dir = e.get(SinkEnv.FILE_DIR, "").strip()
        if file_dir and not os.path.isabs(file_dir):
            raise SettingsError(f"{SinkEnv.FILE_DIR} must be an absolute path, got {file_dir!r}")
        return cls(
            webhook_url=url, webhook_key=key.encode(),
            webhook_timeout_s=env_number(e, SinkEnv.WEBHOOK_TIMEOUT_S, 5.0, 0.1, 60.0),
            webhook_max_queue=env_integer(e, SinkEnv.WEBHOOK_MAX_QUEUE, 1000, 1, 100000),
            file_dir=file_dir,
            file_max_bytes=env_integer(e, SinkEnv.FILE_MAX_BYTES, 1 << 30, 4096, 1 << 40),
        )


class SinkMetrics:
    """The delivery series (names in :class:`livenexus_common.sinks.SinkMetric`), one set per registry."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics]] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.deliveries = Counter(SinkMetric.DELIVERIES.removesuffix("_total"),
                                  "Finals handed to a sink, by sink and result.", ["sink", "result"], registry=r)
        for sink in SINK_NAMES:
            for result in SINK_RESULTS:
                self.deliveries.labels(sink=sink, result=result)
        self.queue_depth = Gauge(SinkMetric.QUEUE_DEPTH, "Finals waiting for the webhook.", registry=r)
        self.retries = Counter(SinkMetric.RETRIES.removesuffix("_total"),
                               "Webhook attempts after the first of a final.", registry=r)
        self.delivery_seconds = Histogram(SinkMetric.DELIVERY_SECONDS,
                                          "Final handed to the webhook sink -> acknowledged by the receiver.",
                                          buckets=DELIVERY_BUCKETS, registry=r)

    @classmethod
    def of(cls, worker_metrics: Any) -> SinkMetrics:
        registry = getattr(worker_metrics, "registry", None)
        if not isinstance(registry, CollectorRegistry):
            return cls(CollectorRegistry())  # no worker registry (unit tests): a private one
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found


class SinkSet:
    """The sinks of one room; every final goes to each of them."""

    def __init__(self, settings: SinkSettings, room: str, metrics: Any = None) -> None:
        self.settings = settings
        self.room = room
        self.metrics = SinkMetrics.of(metrics)
        self.file: FileSink | None = None
        self.undelivered: FileSink | None = None
        self.webhook: WebhookSink | None = None
        if settings.file_dir:
            path = Path(settings.file_dir) / transcript_file_name(room)
            self.file = FileSink(FileSinkOptions(path, settings.file_max_bytes), self._counter("file"))
            # What the webhook could not deliver, for a replay by whoever runs the receiver.
            self.undelivered = FileSink(FileSinkOptions(path.with_name(path.stem + ".undelivered.jsonl"),
                                                        settings.file_max_bytes))
        if settings.webhook_url:
            m = self.metrics
            self.webhook = WebhookSink(
                WebhookOptions(settings.webhook_url, settings.webhook_key, settings.webhook_timeout_s,
                               settings.webhook_max_queue),
                on_result=self._counter("webhook"), on_retry=m.retries.inc, on_depth=m.queue_depth.set,
                on_latency=m.delivery_seconds.observe,
                spill=self.undelivered.submit if self.undelivered is not None else None)

    def _counter(self, sink: str) -> Any:
        def count(result: str, n: int) -> None:
            self.metrics.deliveries.labels(sink=sink, result=result).inc(n)
        return count

    def start(self) -> SinkSet:
        if self.webhook is not None:
            self.webhook.start()
        log.info("transcript sinks of room %s: webhook %s, file %s", self.room,
                 self.settings.webhook_url or "off", self.file.options.path if self.file else "off")
        return self

    def submit(self, event: TranscriptEvent) -> None:
        """Event loop; never blocks. Partials are not delivered (sinks get what a transcript keeps)."""
        if not event.is_final or not event.text.strip():
            return
        record = self.record(event)
        if self.file is not None:
            self.file.submit(record)
        if self.webhook is not None:
            self.webhook.submit(record)

    def record(self, event: TranscriptEvent) -> SinkRecord:
        return sink_record(room=self.room, stream_id=event.stream_id, segment_id=event.segment_id,
                           speaker=event.speaker, start=event.start, end=event.end, text=event.text,
                           language=event.language, tier=event.tier, emitted_at=time.time())

    async def close(self, timeout: float) -> dict[str, int]:
        """Deliver within ``timeout`` (webhook first, then what it spilled goes to disk); returns what was left."""
        end = time.monotonic() + max(0.0, timeout)
        left = {"webhook": 0, "file": 0}
        if self.webhook is not None:
            # The disk needs a moment after the webhook for the spill: keep a fifth of the share for it.
            share = 0.8 if self.file is not None else 1.0
            left["webhook"] = await self.webhook.close(share * max(0.0, end - time.monotonic()))
        loop = asyncio.get_running_loop()
        for name, sink in (("file", self.file), ("undelivered", self.undelivered)):
            if sink is not None:
                n = await loop.run_in_executor(None, sink.close, max(0.1, end - time.monotonic()))
                if name == "file":
                    left["file"] = n
        return left


class TappedPublisher(TranscriptPublisher):
    """The room's publisher that also hands every final to the sinks, first (they keep it even when the room
    cannot take it: disconnected, or its final backlog full)."""

    sinks: SinkSet | None = None

    def submit(self, event: TranscriptEvent, track_sid: str) -> None:
        if event.is_final and self.sinks is not None:
            try:
                self.sinks.submit(event)
            except Exception:  # a sink's bug must not cost the room its transcript
                log.exception("transcript sinks failed on final %s", event.segment_id)
        super().submit(event, track_sid)
