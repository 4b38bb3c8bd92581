"""The sink settings a worker accepts from its environment, and the signature contract receivers rely on."""

from __future__ import annotations

import pytest

from livenexus_common.sinks import SinkEnv, idempotency_key, sign, verify, webhook_url_problem
from livenexus_worker.room.settings import SettingsError
from livenexus_worker.room.sinks import SinkSettings

KEY = "k" * 32


def test_nothing_set_means_no_sinks() -> None:
    assert not SinkSettings.from_env({}).enabled


def test_a_webhook_and_a_file() -> None:
    s = SinkSettings.from_env({SinkEnv.WEBHOOK_URL: "https://hooks.example.com/t", SinkEnv.WEBHOOK_SECRET: KEY,
                               SinkEnv.WEBHOOK_TIMEOUT_S: "2.5", SinkEnv.WEBHOOK_MAX_QUEUE: "50",
                               SinkEnv.FILE_DIR: "/transcripts/team-a"})
    assert (s.webhook_url, s.webhook_key, s.webhook_timeout_s, s.webhook_max_queue, s.file_dir) == (
        "https://hooks.example.com/t", KEY.encode(), 2.5, 50, "/transcripts/team-a")
    assert KEY not in repr(s)


@pytest.mark.parametrize(("env", "complaint"), [
    ({SinkEnv.WEBHOOK_URL: "http://hooks.example.com/t", SinkEnv.WEBHOOK_SECRET: KEY}, "not encrypted"),
    ({SinkEnv.WEBHOOK_URL: "https://user:pw@hooks.example.com/t", SinkEnv.WEBHOOK_SECRET: KEY}, "user info"),
    ({SinkEnv.WEBHOOK_URL: "https://a.example\\@b.example/", SinkEnv.WEBHOOK_SECRET: KEY}, "user info"),
    ({SinkEnv.WEBHOOK_URL: "ftp://hooks.example.com/", SinkEnv.WEBHOOK_SECRET: KEY}, "plain http"),
    ({SinkEnv.WEBHOOK_URL: "https://hooks.example.com:99999/", SinkEnv.WEBHOOK_SECRET: KEY}, "invalid port"),
    ({SinkEnv.WEBHOOK_URL: "https://hooks.example.com/t"}, "signing key"),
    ({SinkEnv.WEBHOOK_URL: "https://hooks.example.com/t", SinkEnv.WEBHOOK_SECRET: "short"}, "signing key"),
    ({SinkEnv.WEBHOOK_MAX_QUEUE: "0"}, "must be an integer in"),
    ({SinkEnv.WEBHOOK_TIMEOUT_S: "nan"}, "finite number in"),
    ({SinkEnv.WEBHOOK_TIMEOUT_S: "soon"}, "must be a finite number, got"),
    ({SinkEnv.WEBHOOK_MAX_QUEUE: "10.5"}, "must be an integer"),
    ({SinkEnv.FILE_MAX_BYTES: "1e400"}, "must be an integer"),
    ({SinkEnv.FILE_DIR: "transcripts"}, "absolute"),
])
def test_bad_settings_are_refused_by_name(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        SinkSettings.from_env(env)


def test_http_only_when_the_operator_admitted_it() -> None:
    env = {SinkEnv.WEBHOOK_URL: "http://receiver.team-a.svc:8080/t", SinkEnv.WEBHOOK_SECRET: KEY,
           SinkEnv.WEBHOOK_ALLOW_HTTP: "1"}
    assert SinkSettings.from_env(env).webhook_url == "http://receiver.team-a.svc:8080/t"
    assert webhook_url_problem("http://receiver.team-a.svc:8080/t") is not None


def test_a_receiver_verifies_the_signature_and_refuses_tampering_and_replays() -> None:
    body = b'{"id":"x","text":"hello"}'
    h = sign(b"key-of-sixteen-bytes", body, timestamp=1_700_000_000)
    ts, sig = h["X-LiveNexus-Timestamp"], h["X-LiveNexus-Signature"]
    assert verify(b"key-of-sixteen-bytes", body, ts, sig, now=1_700_000_010)
    assert not verify(b"key-of-sixteen-bytes", body.replace(b"hello", b"hellO"), ts, sig, now=1_700_000_010)
    assert not verify(b"another-key-sixteen", body, ts, sig, now=1_700_000_010)
    assert not verify(b"key-of-sixteen-bytes", body, ts, sig, now=1_700_000_000 + 301)  # a replay, too late
    assert not verify(b"key-of-sixteen-bytes", body, str(int(ts) + 1), sig, now=1_700_000_010)
    # During a key rotation a sender may sign with both keys; either verifies.
    both = f"v1=deadbeef {sig}"
    assert verify(b"key-of-sixteen-bytes", body, ts, both, now=1_700_000_010)


def test_the_idempotency_key_is_per_segment() -> None:
    a = idempotency_key("room", "TR_1", "run-TR_1-1-0")
    assert a == idempotency_key("room", "TR_1", "run-TR_1-1-0")
    assert len({a, idempotency_key("room", "TR_1", "run-TR_1-1-1"), idempotency_key("room2", "TR_1", "run-TR_1-1-0"),
                idempotency_key("room", "TR_2", "run-TR_1-1-0"), idempotency_key("roo", "mTR_1", "run-TR_1-1-0")}) == 5


async def test_a_worker_with_bad_sink_settings_refuses_to_start_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from livenexus_common.cli import EXIT_ERROR
    from livenexus_worker.room.agent import run_agent
    from livenexus_worker.room.settings import WorkerSettings

    monkeypatch.setenv(SinkEnv.WEBHOOK_URL, "http://hooks.example.com/t")
    monkeypatch.setenv(SinkEnv.WEBHOOK_SECRET, KEY)
    settings = WorkerSettings(livekit_url="ws://127.0.0.1:9", api_key="k", api_secret="s", room="r")
    assert await run_agent(settings) == EXIT_ERROR  # before any model load or connection
    assert SinkEnv.WEBHOOK_URL in caplog.text and "not encrypted" in caplog.text


async def test_a_failing_sink_never_costs_the_room_its_final(caplog: pytest.LogCaptureFixture) -> None:
    from livenexus_worker.core.events import TranscriptEvent
    from livenexus_worker.room.sinks import SinkSet, TappedPublisher

    class Broken(SinkSet):
        def submit(self, event: TranscriptEvent) -> None:
            raise RuntimeError("sink bug")

    pub = TappedPublisher()
    pub.sinks = Broken(SinkSettings(), "r")
    pub.submit(TranscriptEvent(stream_id="s", speaker="a", segment_id="x", text="t", is_final=True, start=0.0,
                               end=1.0), "TR")
    assert pub.pending_finals == 1  # still queued for the room
    assert "sink bug" in caplog.text
