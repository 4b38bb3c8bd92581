"""Read a worker's ``/metrics`` into the few numbers the TranscriptionRoom status shows."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from livenexus_common.contract import TIER_DIRECTIONS, Metric

MetricsUrl = Callable[[Mapping[str, Any], int], str]
"""(the worker's live Service object, port) → URL of the worker's /metrics."""


def service_metrics_url(service: Mapping[str, Any], port: int) -> str:
    """The Service's ClusterIP as the API server assigned it, else its DNS name. The IP needs no cluster DNS
    (some clusters run without one, or with one that lags behind new Services) and costs no lookup."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    ip = str(spec.get("clusterIP") or "")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"http://{meta.get('name')}.{meta.get('namespace')}.svc:{port}/metrics"
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"http://{host}:{port}/metrics"


@dataclass(frozen=True)
class WorkerStats:
    """What one scrape says about a worker; None where the worker did not export the series."""

    final_latency_p50_ms: float | None = None
    """Median end-of-speech → final latency, from the histogram buckets."""
    final_latency_p95_ms: float | None = None
    """95th percentile of the same."""
    final_count: int = 0
    """Finals observed so far (percentiles are None while this is 0)."""
    realtime_factor: float | None = None
    """livenexus_realtime_factor."""
    active_speakers: int | None = None
    """livenexus_active_speakers."""
    tier_index: int | None = None
    """livenexus_tier_index (0 = preferred)."""
    tier_name: str | None = None
    """``tier`` label of the livenexus_tier_info series at 1."""
    model: str | None = None
    """``model`` label of the same."""
    livekit_connected: bool | None = None
    """livenexus_livekit_connected == 1."""
    tier_changes_down: int = 0
    """livenexus_tier_changes_total{direction="down"}."""
    tier_changes_up: int = 0
    """livenexus_tier_changes_total{direction="up"}."""
    cpu_ratio: float | None = None
    """livenexus_process_cpu_ratio: CPU use ÷ the worker's quota (the autoscaler's input)."""
    cpu_pressure: float | None = None
    """livenexus_cpu_pressure: the worker's tier-policy CPU signal."""
    lag_seconds: float | None = None
    """livenexus_lag_seconds: age of the oldest queued inference job."""
    final_latency_buckets: tuple[tuple[float, float], ...] = ()
    """Cumulative (upper bound, count) of the final latency histogram, so a caller holding the previous
    scrape can take the quantiles of just the finals in between."""


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative (upper bound, count) pairs.

    Linear interpolation inside the bucket holding the rank, lower edge 0 for the first bucket; a rank
    in the +Inf bucket returns the highest finite bound (the same answer Prometheus gives).
    """
    pairs = sorted(buckets)
    if not pairs or not math.isinf(pairs[-1][0]):
        return None
    total = pairs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in pairs:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket
        prev_bound, prev_count = bound, count
    return prev_bound


def parse_worker_metrics(text: str) -> WorkerStats:
    """Parse a worker's exposition; unknown series are ignored, so newer workers stay readable."""
    buckets: list[tuple[float, float]] = []
    final_count = 0.0
    values: dict[str, float] = {}
    tier_name = model = None
    changes = dict.fromkeys(TIER_DIRECTIONS, 0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == f"{Metric.FINAL_LATENCY}_bucket":
                buckets.append((float(sample.labels["le"]), float(sample.value)))
            elif name == f"{Metric.FINAL_LATENCY}_count":
                final_count = float(sample.value)
            elif name in (Metric.REALTIME_FACTOR, Metric.ACTIVE_SPEAKERS, Metric.TIER_INDEX, Metric.LIVEKIT_CONNECTED,
                          Metric.CPU_RATIO, Metric.CPU_PRESSURE, Metric.LAG):
                values[name] = float(sample.value)
            elif name == Metric.TIER_INFO and sample.value == 1:
                tier_name = sample.labels.get("tier")
                model = sample.labels.get("model")
            elif name == Metric.TIER_CHANGES:
                direction = sample.labels.get("direction", "")
                if direction in changes:
                    changes[direction] = int(sample.value)

    def ms(q: float) -> float | None:
        value = histogram_quantile(q, buckets)
        return None if value is None else round(value * 1000.0, 1)

    def opt_int(key: str) -> int | None:
        return int(values[key]) if key in values else None

    return WorkerStats(
        final_latency_p50_ms=ms(0.5),
        final_latency_p95_ms=ms(0.95),
        final_count=int(final_count),
        realtime_factor=round(values[Metric.REALTIME_FACTOR], 4) if Metric.REALTIME_FACTOR in values else None,
        active_speakers=opt_int(Metric.ACTIVE_SPEAKERS),
        tier_index=opt_int(Metric.TIER_INDEX),
        tier_name=tier_name,
        model=model,
        livekit_connected=(values[Metric.LIVEKIT_CONNECTED] == 1) if Metric.LIVEKIT_CONNECTED in values else None,
        tier_changes_down=changes["down"],
        tier_changes_up=changes["up"],
        cpu_ratio=values.get(Metric.CPU_RATIO),
        cpu_pressure=values.get(Metric.CPU_PRESSURE),
        lag_seconds=values.get(Metric.LAG),
        final_latency_buckets=tuple(sorted(buckets)),
    )


class ScrapeError(RuntimeError):
    """The worker's /metrics could not be fetched or parsed."""


async def scrape(session: aiohttp.ClientSession, url: str, timeout_s: float = 3.0) -> WorkerStats:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise ScrapeError(f"GET {url}: HTTP {resp.status}")
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ScrapeError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    try:
        return parse_worker_metrics(text)
    except ValueError as exc:
        raise ScrapeError(f"GET {url}: unparsable exposition: {exc}") from exc
