from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from livenexus_common.contract import DEFAULT_THRESHOLDS, WORKER_ENV, Env
from livenexus_worker.core.tier_spec import DEFAULT_TIERS, TierSpec
from livenexus_worker.room.settings import SettingsError, WorkerSettings


class Asked(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_reads_exactly_the_contracts_names() -> None:
    env = Asked()
    s = WorkerSettings.from_env(env)
    assert env.names == WORKER_ENV - {Env.LOG_LEVEL}  # that one is read by setup_logging, before the settings
    with pytest.raises(SettingsError) as missing:
        s.require_livekit()
    assert set(str(missing.value).split(": ")[1].split(", ")) <= WORKER_ENV


def test_threshold_defaults_are_the_contracts() -> None:
    s, t = WorkerSettings.from_env({}), DEFAULT_THRESHOLDS
    assert (s.tier_cpu_high, s.tier_cpu_low, s.tier_lag_high_ms, s.tier_lag_low_ms) == (
        t.cpu_high, t.cpu_low, t.lag_high_ms, t.lag_low_ms)
    assert (s.tier_down_window_s, s.tier_up_window_s, s.tier_cooldown_s) == (
        t.down_window_s, t.up_window_s, t.cooldown_s)
    o = s.tier_options()
    assert (o.lag_high_s, o.lag_low_s) == (t.lag_high_ms / 1000, t.lag_low_ms / 1000)


def test_defaults_and_secret_not_in_repr() -> None:
    s = WorkerSettings.from_env({"LIVEKIT_API_SECRET": "s" * 40})
    assert s.tiers[0] == TierSpec("base", "int8", 5, 250)
    assert s.tiers[1:] == DEFAULT_TIERS[1:]
    assert "sss" not in repr(s)


def test_env_parsing() -> None:
    s = WorkerSettings.from_env({
        "LIVENEXUS_LANGUAGE": "auto", "LIVENEXUS_VAD_AGGRESSIVENESS": "3",
        "LIVENEXUS_TIERS": '[{"model": "base", "computeType": "int8", "beamSize": 2, "partialIntervalMs": 400}]',
    })
    assert s.language is None and s.vad_aggressiveness == 3
    assert s.tiers == (TierSpec("base", "int8", 2, 400),)


@pytest.mark.parametrize("env,match", [
    ({"LIVENEXUS_VAD_AGGRESSIVENESS": "7"}, "LIVENEXUS_VAD_AGGRESSIVENESS"),
    ({"LIVENEXUS_BEAM_SIZE": "x"}, "LIVENEXUS_BEAM_SIZE"),
    ({"LIVENEXUS_TIERS": "{"}, "LIVENEXUS_TIERS"),
    ({"LIVENEXUS_TIERS": "[]"}, "LIVENEXUS_TIERS"),
    ({"LIVENEXUS_TIER_CPU_HIGH": "inf"}, "LIVENEXUS_TIER_CPU_HIGH must be a finite number"),
    ({"LIVENEXUS_TIER_CPU_HIGH": "nan"}, "LIVENEXUS_TIER_CPU_HIGH must be a finite number"),
])
def test_bad_env_names_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        WorkerSettings.from_env(env)


def test_require_livekit_lists_all_missing() -> None:
    with pytest.raises(SettingsError, match="LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, LIVENEXUS_ROOM"):
        WorkerSettings.from_env({}).require_livekit()


def test_tier_options_from_settings() -> None:
    s = WorkerSettings.from_env({
        "LIVENEXUS_TIER_CPU_HIGH": "0.9", "LIVENEXUS_TIER_LAG_HIGH_MS": "1500",
        "LIVENEXUS_TIER_DOWN_WINDOW_S": "3", "LIVENEXUS_TIER_UP_WINDOW_S": "6",
        "LIVENEXUS_TIER_COOLDOWN_S": "2",
    })
    o = s.tier_options()
    assert (o.levels, o.cpu_high, o.lag_high_s, o.down_window_s, o.up_window_s, o.cooldown_s) == (
        len(s.tiers), 0.9, 1.5, 3.0, 6.0, 2.0)


def test_default_identity_is_unique_per_pod_and_process() -> None:
    # One shared identity made two workers (or a restart overlapping the old pod) kick each other out forever.
    a = WorkerSettings.from_env({"LIVENEXUS_POD_NAME": "room-a-7d9f-x2"})
    b = WorkerSettings.from_env({"LIVENEXUS_POD_NAME": "room-a-7d9f-q8"})
    assert a.identity == "livenexus-agent-room-a-7d9f-x2"
    assert a.identity != b.identity and b.identity.startswith("livenexus-agent-")
    import os
    import socket

    assert WorkerSettings.from_env({}).identity.endswith(f"-{os.getpid()}")
    assert socket.gethostname()[:8].replace("_", "-") in WorkerSettings.from_env({}).identity
    # Hostile pod names are cleaned and bounded; an explicit identity is kept as given.
    odd = WorkerSettings.from_env({"LIVENEXUS_POD_NAME": "a/b c\n" + "z" * 500}).identity
    assert odd.startswith("livenexus-agent-a-b-c-") and len(odd) <= 128 and odd.isprintable()
    assert WorkerSettings.from_env({"LIVENEXUS_IDENTITY": "transcriber-1"}).identity == "transcriber-1"


@pytest.mark.parametrize("env,match", [
    ({"LIVENEXUS_IDENTITY": "x" * 200}, "LIVENEXUS_IDENTITY"),
    ({"LIVENEXUS_IDENTITY": "bad\x00id"}, "LIVENEXUS_IDENTITY"),
    ({"LIVENEXUS_MAX_STREAMS": "0"}, "LIVENEXUS_MAX_STREAMS"),
    ({"LIVENEXUS_MAX_SPEAKERS": "100000"}, "LIVENEXUS_MAX_SPEAKERS"),
    ({"LIVENEXUS_SHUTDOWN_DEADLINE_S": "nan"}, "LIVENEXUS_SHUTDOWN_DEADLINE_S"),
    ({"LIVENEXUS_SHUTDOWN_DEADLINE_S": "0"}, "LIVENEXUS_SHUTDOWN_DEADLINE_S"),
])
def test_bad_hardening_env(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        WorkerSettings.from_env(env)


def test_hardening_defaults() -> None:
    s = WorkerSettings.from_env({"LIVENEXUS_MAX_STREAMS": "4", "LIVENEXUS_MAX_SPEAKERS": "2",
                                 "LIVENEXUS_SHUTDOWN_DEADLINE_S": "12.5"})
    assert (s.max_streams, s.max_speakers, s.shutdown_deadline_s) == (4, 2, 12.5)
    d = WorkerSettings.from_env({})
    assert d.shutdown_deadline_s < 30, "must fit the pod's default terminationGracePeriodSeconds"


def test_frame_ms_and_trace_stages() -> None:
    d = WorkerSettings.from_env({})
    assert (d.frame_ms, d.trace_stages) == (30, False)
    s = WorkerSettings.from_env({"LIVENEXUS_FRAME_MS": "10", "LIVENEXUS_TRACE_STAGES": "1"})
    assert (s.frame_ms, s.trace_stages) == (10, True)
    for bad in ({"LIVENEXUS_FRAME_MS": "25"}, {"LIVENEXUS_FRAME_MS": "0"}, {"LIVENEXUS_TRACE_STAGES": "maybe"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            WorkerSettings.from_env(bad)


def test_mkl_on_amd_is_auto_or_off_and_nothing_else() -> None:
    assert WorkerSettings.from_env({}).mkl_on_amd
    assert WorkerSettings.from_env({"LIVENEXUS_MKL_ON_AMD": "auto"}).mkl_on_amd
    assert not WorkerSettings.from_env({"LIVENEXUS_MKL_ON_AMD": "off"}).mkl_on_amd
    with pytest.raises(SettingsError, match="LIVENEXUS_MKL_ON_AMD must be auto or off"):
        WorkerSettings.from_env({"LIVENEXUS_MKL_ON_AMD": "sometimes"})


def test_long_context_chains_the_left_context_within_one_window() -> None:
    from livenexus_worker.core.audio import SAMPLE_RATE
    from livenexus_worker.inference.engine import MAX_WINDOW_SAMPLES

    shipped = WorkerSettings.from_env({}).runtime_options().pipeline
    assert (shipped.final_left_context_s, shipped.final_left_context_chain) == (6.0, False)
    long = WorkerSettings.from_env({"LIVENEXUS_LONG_CONTEXT_S": "10"}).runtime_options().pipeline
    assert (long.final_left_context_s, long.final_left_context_chain) == (10.0, True)
    assert long.vad == shipped.vad and long.language == shipped.language, "only the context changes"
    for bad in ("12.5", "-1", "nan", "ten"):
        with pytest.raises(SettingsError, match="LIVENEXUS_LONG_CONTEXT_S"):
            WorkerSettings.from_env({"LIVENEXUS_LONG_CONTEXT_S": bad})
    top = WorkerSettings.from_env({"LIVENEXUS_LONG_CONTEXT_S": "12"}).runtime_options().pipeline
    worst = (top.final_left_context_s + top.segmenter.max_utterance_s) * SAMPLE_RATE + top.tail_ms * 16
    assert worst <= MAX_WINDOW_SAMPLES, "the longest context and the longest utterance fit in one window"


@pytest.mark.parametrize(("cores", "threads"), [(0.5, 1), (1.0, 1), (1.9, 1), (2.0, 2), (4.0, 2), (16.0, 2)])
def test_decode_threads_follow_the_usable_cores_unless_set(monkeypatch: pytest.MonkeyPatch, cores: float,
                                                           threads: int) -> None:
    from livenexus_worker.ops import cpu
    from livenexus_worker.streaming.scheduler import lanes_for

    monkeypatch.setattr(cpu, "usable_cores", lambda: cores)
    auto = WorkerSettings.from_env({}).runtime_options()
    assert auto.threads == threads
    assert auto.measure_threads, "left to the default: timed on the host, which may keep one"
    assert lanes_for(cores, auto.threads) * auto.threads <= max(cores + 0.5, auto.threads), "no core oversubscribed"
    assert WorkerSettings.from_env({"LIVENEXUS_THREADS": "1"}).runtime_options().threads == 1, "set: kept"
    given = WorkerSettings.from_env({"LIVENEXUS_THREADS": "2"}).runtime_options()
    assert (given.threads, given.measure_threads) == (2, False), "set: not second-guessed"
    with pytest.raises(SettingsError, match="LIVENEXUS_THREADS"):
        WorkerSettings.from_env({"LIVENEXUS_THREADS": "-2"})


def test_the_noisy_room_switch_is_a_knob_of_its_own() -> None:
    from livenexus_worker.streaming.options import PipelineOptions

    assert WorkerSettings.from_env({}).runtime_options().pipeline.noisy_below_db == PipelineOptions().noisy_below_db
    off = WorkerSettings.from_env({"LIVENEXUS_NOISY_BELOW_DB": "0"}).runtime_options().pipeline
    assert off.noisy_below_db == 0 and not off.final_left_context_chain, "0: a noisy stream is decoded as any other"
    assert WorkerSettings.from_env({"LIVENEXUS_NOISY_BELOW_DB": "20"}).runtime_options().pipeline.noisy_below_db == 20
    for bad in ("41", "-3", "nan", "inf", "loud"):
        with pytest.raises(SettingsError, match="LIVENEXUS_NOISY_BELOW_DB"):
            WorkerSettings.from_env({"LIVENEXUS_NOISY_BELOW_DB": bad})
