"""Stage stamps on the room side: the frame that carried an event's last voiced audio, and the publisher's
submit / publish / per-channel stamps (data message and log line). Stand-in room from test_publisher.py."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from livenexus_worker.room.frame_feed import FrameStamps
from livenexus_worker.room.publisher import TranscriptPublisher
from tests.worker.room.test_publisher import Room, drain, ev


def test_frame_stamps_find_the_frame_holding_a_position_and_stay_bounded() -> None:
    st = FrameStamps(keep=3)
    for i in range(5):  # five 30 ms frames: positions (0, 480], (480, 960], ...
        st.pushed(480, recv=10.0 + i, push=20.0 + i)
    assert st.find(480 * 4) == (13.0, 23.0)
    assert st.find(480 * 4 + 1) == (14.0, 24.0) == st.find(480 * 5)
    assert st.find(480 * 2) is None  # its frame is no longer kept: no guess from a later frame
    assert st.find(480 * 5 + 1) is None and st.find(-1) is None  # never pushed / hostile position


async def test_traced_event_carries_its_stamps_in_the_message_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    pub = TranscriptPublisher().start()
    room = Room()
    pub.attach(room)  # type: ignore[arg-type]
    traced = replace(ev("s-1", True), trace={"recv": 1.0, "push": 1.5, "emit": 2.0})
    with caplog.at_level(logging.INFO, logger="livenexus_worker.stages"):
        pub.submit(traced, "TR")
        pub.submit(ev("s-2", True), "TR")
        await drain(pub, room, 2)
        await pub.close(1.0)
    first, second = map(json.loads, room.data)
    t = first["trace"]
    assert (t["recv"], t["push"], t["emit"]) == (1.0, 1.5, 2.0)
    assert 2.0 < t["submit"] <= t["pub"]
    assert "trace" not in second  # untraced events publish exactly as before
    (line,) = [r.getMessage() for r in caplog.records if r.name == "livenexus_worker.stages"]
    logged = json.loads(line.split(" ", 2)[2])
    assert logged["segmentId"] == "s-1" and logged["isFinal"] is True
    for channel in ("text", "transcription", "data"):
        assert logged["trace"][channel] >= t["pub"]




def test_agent_takes_frame_size_and_tracing_from_the_settings() -> None:
    from livenexus_worker.room.agent import AgentOptions
    from livenexus_worker.room.settings import WorkerSettings

    limits = AgentOptions.from_settings(WorkerSettings.from_env({"LIVENEXUS_FRAME_MS": "10",
                                                                 "LIVENEXUS_TRACE_STAGES": "1"})).limits
    assert (limits.frame_ms, limits.trace_stages) == (10, True)
    assert not AgentOptions.from_settings(WorkerSettings.from_env({})).limits.trace_stages


def test_the_per_track_buffer_holds_the_same_time_whatever_the_frame_size() -> None:
    from livenexus_worker.room.tracks import TrackLimits

    # 100 frames were 3 s of 30 ms frames but only 1 s of 10 ms ones: a loop stall of 0.5-0.7 s (measured on a
    # loaded machine with a crowd) then came close to dropping audio.
    assert [TrackLimits(frame_ms=ms).stream_capacity for ms in (10, 20, 30)] == [300, 150, 100]
    assert TrackLimits(frame_ms=10, buffer_ms=5).stream_capacity == 1  # never zero: zero means unbounded to LiveKit
