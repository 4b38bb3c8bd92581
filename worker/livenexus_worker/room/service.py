"""Composition root of a worker process: runtime + metrics + HTTP endpoints + tier control, from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from livenexus_worker.ops.cpu import CpuSample
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer, start_metrics_server
from livenexus_worker.ops.tier_control import TierController, TierManager
from livenexus_worker.room.settings import WorkerSettings
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions
from livenexus_worker.streaming.scheduler import lanes_for
from livenexus_worker.streaming.stream_state import speakers_contend

log = logging.getLogger(__name__)


def tier_signals(runtime: Runtime, metrics: WorkerMetrics) -> tuple[CpuSample, float]:
    """One tick of the tier controller: the CPU sample and how long the oldest queued final has waited (what
    a listener waits for). Also refreshes the queue gauges (between jobs they go stale during one long
    decode) and the count of noisy streams, and lets as many decodes run at once as the CPU quota holds, one
    per ``decode_threads`` cores (the quota changes on an in-place resize)."""
    metrics.queue(runtime.scheduler.depth(), runtime.scheduler.lag_s(), runtime.active_speakers())
    metrics.set_noisy_streams(runtime.noisy_streams())
    sample = metrics.sampler.sample()
    runtime.scheduler.set_parallel(lanes_for(sample.usable_cores, runtime.decode_threads))
    return sample, runtime.scheduler.lag_s(finals_only=True)


@dataclass
class WorkerService:
    """The long-lived pieces of a worker; build with :meth:`start`, tear down with :meth:`close`."""

    settings: WorkerSettings
    """Where everything was configured from."""
    runtime: Runtime
    """Engines, scheduler and streams."""
    metrics: WorkerMetrics
    """Prometheus metrics (also the runtime's observer)."""
    tiers: TierController
    """Steps the tier on CPU pressure / final lag."""
    http: MetricsServer | None
    """/metrics, /healthz, /readyz (None when LIVENEXUS_METRICS_PORT=0)."""

    @classmethod
    def start(cls, settings: WorkerSettings, require_livekit: bool = True,
              options: RuntimeOptions | None = None) -> WorkerService:
        metrics = WorkerMetrics()
        # Serve health before the model loads, so a slow load shows as "not ready" rather than "down".
        http = start_metrics_server(metrics.registry, lambda: metrics.readiness(require_livekit=require_livekit),
                                    settings.metrics_host, settings.metrics_port)
        runtime = Runtime.create(options or settings.runtime_options(), observer=metrics)
        metrics.decode_threads.set(runtime.decode_threads)
        unavailable = {i for i in range(len(runtime.options.tiers)) if not runtime.is_available(i)}
        manager = TierManager(runtime.options.tiers, settings.tier_options(), unavailable=unavailable)

        def signals() -> tuple[float, float]:
            sample, lag = tier_signals(runtime, metrics)
            return sample.pressure, lag

        # set_tier only affects utterances that start later, so a change never lands mid-utterance.
        # The quota is re-read every tick: an in-place resize changes it under the running process.
        controller = TierController(manager, signals, runtime.set_tier,
                                    cores=lambda: metrics.sampler.sample().usable_cores,
                                    contended=lambda: speakers_contend(runtime)).start()
        return cls(settings, runtime, metrics, controller, http)

    def close(self, timeout: float = 10.0) -> None:
        """Stop; waits at most ``timeout`` for inference still running (the agent's shutdown deadline
        already waited for the finals that matter)."""
        self.tiers.stop()
        self.runtime.close(timeout)
        if self.http is not None:
            self.http.stop()
