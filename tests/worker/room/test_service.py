from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from livenexus_dev.livekit_server import free_port
from livenexus_worker.files.feed import feed
from livenexus_worker.room.service import WorkerService
from livenexus_worker.room.settings import WorkerSettings


@pytest.mark.model
def test_service_serves_health_metrics_and_counts_speech(speech_cache: dict[str, np.ndarray]) -> None:
    from tests.conftest import speak

    port = free_port()
    from livenexus_common.contract import DEFAULT_TIERS, TierSpec, ladder_to_json

    # The default ladder plus a rung no package ships: it is skipped, not fatal.
    ladder = ladder_to_json((*DEFAULT_TIERS, TierSpec("large-v9", "int8", 1, 0)))
    settings = WorkerSettings.from_env({"LIVENEXUS_METRICS_PORT": str(port), "LIVENEXUS_METRICS_HOST": "127.0.0.1",
                                        "LIVENEXUS_TIERS": ladder})
    svc = WorkerService.start(settings, require_livekit=False)
    try:
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        assert not svc.runtime.is_available(len(settings.tiers) - 1)
        assert svc.runtime.is_available(len(settings.tiers) - 2), "tiny.en, the default's last rung, is shipped"
        events = []
        pipe = svc.runtime.open_stream("t", "t", events.append)
        feed(pipe, speak(speech_cache, "Metrics should count this utterance."))
        assert svc.runtime.wait_idle(60)
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'livenexus_transcripts_total{kind="final"} 1.0' in body
        assert "livenexus_utterances_total 1.0" in body
        assert 'livenexus_tier_info{beam_size="5",compute_type="int8",model="base"' in body
        assert svc.tiers.manager.active == 0
        assert svc.runtime.decode_threads in (1, 2), "timed on this host: one or two, whichever pays"
        assert f"livenexus_decode_threads {float(svc.runtime.decode_threads)}" in body
    finally:
        svc.close()


@pytest.mark.parametrize(("cores", "threads", "lanes"),
                         [(0.6, 1, 1), (1.5, 1, 2), (3.0, 1, 3), (8.0, 1, 4), (2.0, 2, 1), (4.0, 2, 2), (1.0, 2, 1)])
def test_tier_signals_run_as_many_decodes_at_once_as_the_quota_holds(cores: float, threads: int, lanes: int) -> None:
    from livenexus_worker.ops.cpu import CpuSample, CpuSampler
    from livenexus_worker.ops.metrics import WorkerMetrics
    from livenexus_worker.room.service import tier_signals
    from livenexus_worker.streaming.scheduler import InferenceScheduler
    from livenexus_worker.streaming.stream_state import speakers_contend

    class Quota(CpuSampler):
        def sample(self) -> CpuSample:
            return CpuSample(0.0, 1.0, cores, True, 0.2, 0.3, 0.0, 0.3)

    class Rt:
        scheduler = InferenceScheduler(workers=4)
        decode_threads = threads  # each decode keeps this many cores busy

        def active_speakers(self) -> int:
            return 2

        def noisy_streams(self) -> int:
            return 1

    metrics = WorkerMetrics(sampler=Quota())
    rt = Rt()
    try:
        sample, lag = tier_signals(rt, metrics)  # type: ignore[arg-type]
        assert (sample.pressure, lag, rt.scheduler.parallel) == (0.3, 0.0, lanes)
        exposed = metrics.exposition().decode()
        assert "livenexus_active_speakers 2.0" in exposed and "livenexus_noisy_streams 1.0" in exposed
        # Two speakers wait for each other's decodes only on fewer than two lanes.
        assert speakers_contend(rt) == (lanes < 2)  # type: ignore[arg-type]
    finally:
        rt.scheduler.close()
