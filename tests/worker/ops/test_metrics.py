"""WorkerMetrics and the HTTP server, scraped for real over loopback."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livenexus_common.contract import TIER_INFO_LABELS, Metric
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import DEFAULT_TIERS
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.metrics_server import MetricsServer, start_metrics_server
from livenexus_worker.room.settings import WorkerSettings

# The contract with the operator, the alerts and the dashboard (issue 5): exposed sample names.
REQUIRED = {
    "livenexus_frames_received_total",
    "livenexus_frames_silence_total",
    "livenexus_speech_seconds_total",
    "livenexus_utterances_total",
    "livenexus_transcripts_total",
    "livenexus_inference_seconds_bucket",
    "livenexus_final_latency_seconds_bucket",
    "livenexus_partial_interval_seconds_bucket",
    "livenexus_realtime_factor",
    "livenexus_queue_depth",
    "livenexus_lag_seconds",
    "livenexus_tier_index",
    "livenexus_tier_info",
    "livenexus_tier_changes_total",
    "livenexus_active_speakers",
    "livenexus_noisy_streams",
    "livenexus_process_cpu_ratio",
    "livenexus_process_rss_bytes",
    "livenexus_livekit_connected",
    "livenexus_livekit_reconnects_total",
    "livenexus_model_loaded",
    "livenexus_decode_threads",
    "livenexus_publish_errors_total",
    "livenexus_bad_audio_total",
}


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def server(metrics: WorkerMetrics) -> Iterator[MetricsServer]:
    srv = MetricsServer(metrics.registry, lambda: metrics.readiness(require_livekit=True),
                        host="127.0.0.1", port=0).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_metrics_endpoint_exposes_every_contract_name(metrics: WorkerMetrics, server: MetricsServer) -> None:
    assert server.port != 0
    metrics.set_tier(0, DEFAULT_TIERS[0])
    code, body = fetch(server.url + "/metrics")
    assert code == 200
    names = {name for name, _ in samples(body)}
    assert REQUIRED - names == set()
    # Bounded labels only: every label name is one of the enums we chose.
    for _, labels in samples(body):
        assert {k for k, _ in labels} <= {"kind", "stage", "le", "direction", "tier", "model", "reason",
                                          "compute_type", "beam_size"}


def test_observations_show_up_in_the_scrape(metrics: WorkerMetrics, server: MetricsServer) -> None:
    metrics.add_frames(100, silence=40)
    metrics.utterance(2.0)
    metrics.observe_inference("encode", "final", 0.3)
    metrics.observe_inference("decode", "final", 0.2)
    metrics.observe_final(0.7)
    metrics.observe_partial(0.25)
    metrics.set_queue(3, 0.8)
    metrics.set_active_speakers(2)
    metrics.publish_failed()
    metrics.bad_audio_frame()
    metrics.livekit_reconnected()
    s = samples(fetch(server.url + "/metrics")[1])
    assert s[("livenexus_frames_received_total", ())] == 100
    assert s[("livenexus_frames_silence_total", ())] == 40
    assert s[("livenexus_speech_seconds_total", ())] == 2.0
    assert s[("livenexus_utterances_total", ())] == 1
    assert s[("livenexus_transcripts_total", (("kind", "final"),))] == 1
    assert s[("livenexus_transcripts_total", (("kind", "partial"),))] == 1
    assert s[("livenexus_inference_seconds_count", (("kind", "final"), ("stage", "encode")))] == 1
    assert s[("livenexus_inference_seconds_count", (("kind", "partial"), ("stage", "decode")))] == 0
    assert s[("livenexus_final_latency_seconds_bucket", (("le", "0.75"),))] == 1
    assert s[("livenexus_final_latency_seconds_bucket", (("le", "0.5"),))] == 0
    assert s[("livenexus_partial_interval_seconds_count", ())] == 1
    assert s[("livenexus_realtime_factor", ())] == pytest.approx(0.25)  # 0.5 s inference / 2 s speech
    assert s[("livenexus_queue_depth", ())] == 3
    assert s[("livenexus_lag_seconds", ())] == 0.8
    assert s[("livenexus_active_speakers", ())] == 2
    assert s[("livenexus_publish_errors_total", ())] == 1
    assert s[("livenexus_bad_audio_total", ())] == 1
    assert s[("livenexus_livekit_reconnects_total", ())] == 1
    assert s[("livenexus_livekit_connected", ())] == 1
    assert s[("livenexus_process_rss_bytes", ())] > 10 * 1024 * 1024
    assert 0.0 <= s[("livenexus_process_cpu_ratio", ())] <= 1.5


def test_tier_info_keeps_only_the_current_tier(metrics: WorkerMetrics) -> None:
    metrics.set_tier(0, DEFAULT_TIERS[0])
    metrics.set_tier(2, DEFAULT_TIERS[2])
    metrics.set_tier(1, DEFAULT_TIERS[1])
    s = samples(metrics.exposition().decode())
    info = {labels for name, labels in s if name == "livenexus_tier_info"}
    assert info == {(("beam_size", "1"), ("compute_type", "int8"), ("model", "base"),
                     ("tier", DEFAULT_TIERS[1].name))}
    assert s[("livenexus_tier_index", ())] == 1
    assert s[("livenexus_tier_changes_total", (("direction", "down"),))] == 1
    assert s[("livenexus_tier_changes_total", (("direction", "up"),))] == 1


def test_unknown_label_values_are_rejected(metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError):
        metrics.observe_inference("beam", "final", 0.1)
    with pytest.raises(ValueError):
        metrics.observe_inference("encode", "segment-42", 0.1)


def test_realtime_factor_window_forgets_old_samples() -> None:
    now = [0.0]
    m = WorkerMetrics(rtf_window_s=10.0, clock=lambda: now[0])
    m.add_speech(1.0)
    m.observe_inference("decode", "final", 2.0)
    assert m.rtf.value() == pytest.approx(2.0)
    now[0] = 5.0
    m.add_speech(3.0)
    m.observe_inference("decode", "final", 0.5)
    assert m.rtf.value() == pytest.approx(2.5 / 4.0)
    now[0] = 12.0  # the first pair fell out of the window
    assert m.rtf.value() == pytest.approx(0.5 / 3.0)
    now[0] = 30.0
    assert m.rtf.value() == 0.0


def test_healthz_and_readyz_flip(metrics: WorkerMetrics, server: MetricsServer) -> None:
    assert fetch(server.url + "/healthz") == (200, "ok\n")
    code, body = fetch(server.url + "/readyz")
    assert (code, body.strip()) == (503, "model not loaded")
    metrics.set_model_loaded(True)
    code, body = fetch(server.url + "/readyz")
    assert (code, body.strip()) == (503, "not connected to LiveKit")
    metrics.set_livekit_connected(True)
    assert fetch(server.url + "/readyz") == (200, "ready\n")
    metrics.set_livekit_connected(False)
    assert fetch(server.url + "/readyz")[0] == 503
    assert fetch(server.url + "/nope")[0] == 404


def test_plain_bool_and_failing_readiness_checks() -> None:
    state = {"ready": False}
    with MetricsServer(WorkerMetrics().registry, lambda: state["ready"], "127.0.0.1", 0) as srv:
        assert fetch(srv.url + "/readyz") == (503, "not ready\n")
        state["ready"] = True
        assert fetch(srv.url + "/readyz") == (200, "ready\n")

        def broken() -> bool:
            raise RuntimeError("boom")

        srv.set_readiness(broken)
        assert fetch(srv.url + "/readyz") == (503, "readiness check failed: RuntimeError\n")
        assert fetch(srv.url + "/healthz")[0] == 200


def test_metrics_port_zero_disables_the_server() -> None:
    settings = WorkerSettings.from_env({"LIVENEXUS_METRICS_PORT": "0"})
    registry = WorkerMetrics().registry
    assert start_metrics_server(registry, host=settings.metrics_host, port=settings.metrics_port) is None


def test_two_registries_are_independent() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.add_frames(5)
    assert samples(a.exposition().decode())[("livenexus_frames_received_total", ())] == 5
    assert samples(b.exposition().decode())[("livenexus_frames_received_total", ())] == 0


def test_runtime_observer_hooks_exist_on_worker_metrics() -> None:
    # The runtime duck-types its observer; every hook it calls must exist here, or the first call
    # from the inference thread fails at run time instead of in review.
    from livenexus_worker.streaming import runtime

    runtime_src = Path(runtime.__file__).read_text()
    hooks = set(re.findall(r"self\.observer\.([a-zA-Z_]+)\(", runtime_src))
    assert hooks, "runtime.py no longer calls its observer?"
    m = WorkerMetrics()
    missing = {h for h in hooks if not callable(getattr(m, h, None))}
    assert missing == set()


def event(segment: str, final: bool, latency_ms: float = 0.0) -> TranscriptEvent:
    return TranscriptEvent(stream_id="s", speaker="spk", segment_id=segment, text="hello", is_final=final, start=0.0,
                           end=1.0, latency_ms=latency_ms)


def test_observer_interface_feeds_the_metrics() -> None:
    now = [0.0]
    m = WorkerMetrics(clock=lambda: now[0])
    m.model_loaded(True)
    m.set_tier(0, DEFAULT_TIERS[0])
    m.set_tier(1, DEFAULT_TIERS[1], previous=0)
    m.frames(50, 20)
    m.inference("partial", 0.05, 0.1, 1.0)
    m.emitted(event("a", False))
    now[0] = 0.3
    m.emitted(event("a", False))
    now[0] = 0.9
    m.emitted(event("a", False))
    m.emitted(event("a", True, latency_ms=420.0))
    m.utterance(1.5)
    m.queue(2, 0.4, 1)
    s = samples(m.exposition().decode())
    assert s[("livenexus_model_loaded", ())] == 1
    assert s[("livenexus_tier_changes_total", (("direction", "down"),))] == 1
    assert s[("livenexus_frames_silence_total", ())] == 20
    decode = ("livenexus_inference_seconds_sum", (("kind", "partial"), ("stage", "decode")))
    assert s[decode] == pytest.approx(0.1)
    assert s[("livenexus_transcripts_total", (("kind", "partial"),))] == 3
    assert s[("livenexus_partial_interval_seconds_count", ())] == 2  # the first partial has no interval
    assert s[("livenexus_partial_interval_seconds_sum", ())] == pytest.approx(0.9)
    assert s[("livenexus_final_latency_seconds_sum", ())] == pytest.approx(0.42)
    assert s[("livenexus_utterances_total", ())] == 1
    assert s[("livenexus_speech_seconds_total", ())] == 1.5
    assert s[("livenexus_realtime_factor", ())] == pytest.approx(0.15 / 1.5)
    assert (s[("livenexus_queue_depth", ())], s[("livenexus_active_speakers", ())]) == (2, 1)
    # A new utterance starts its partial interval afresh.
    m.emitted(event("b", False))
    assert samples(m.exposition().decode())[("livenexus_partial_interval_seconds_count", ())] == 2


def test_exports_what_the_contract_says_the_operator_scrapes(metrics: WorkerMetrics) -> None:
    metrics.set_tier(0, DEFAULT_TIERS[0])
    metrics.observe_final(0.3)
    s = samples(metrics.exposition().decode())
    names = {name for name, _ in s}
    scraped = {v for k, v in vars(Metric).items() if not k.startswith("_")}
    assert {f"{Metric.FINAL_LATENCY}_bucket", f"{Metric.FINAL_LATENCY}_count"} <= names
    # The room layer's counters live on the same registry (room/room_metrics.py); a labelled counter has no
    # sample before its first child, so families count by name.
    from livenexus_worker.room.room_metrics import RoomMetrics

    RoomMetrics.of(metrics)
    families = {f.name + ("_total" if f.type == "counter" else "") for f in metrics.registry.collect()}
    assert scraped - {Metric.FINAL_LATENCY} <= names | families
    (info,) = [labels for name, labels in s if name == Metric.TIER_INFO]
    assert tuple(k for k, _ in info) == tuple(sorted(TIER_INFO_LABELS))
    assert dict(info)["tier"] == DEFAULT_TIERS[0].name
