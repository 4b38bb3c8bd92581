"""The JSONL file sink on real files: appended, rotated (not refused) at its size, a planted symlink refused,
an unwritable or full volume a clear error that loses nothing it can keep."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from livenexus_common.sinks import sink_record, transcript_file_name
from livenexus_worker.room.sinks_file import FileSink, FileSinkOptions


def rec(i: int, text: str = "a sentence of the meeting") -> Any:
    return sink_record(room="standup", stream_id="TR_a", segment_id=f"s-{i}", speaker="alice", start=i, end=i + 1,
                       text=f"{text} {i}", language="en", tier="t", emitted_at=1.0)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_one_line_per_final_appended_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "ns" / "standup.jsonl"
    for run in range(2):  # a restarted worker appends to what the previous one wrote
        sink = FileSink(FileSinkOptions(path))
        for i in range(3):
            assert sink.submit(rec(run * 10 + i))
        assert sink.close(10.0) == 0
    rows = read(path)
    assert [r["segmentId"] for r in rows] == ["s-0", "s-1", "s-2", "s-10", "s-11", "s-12"]
    assert set(rows[0]) >= {"id", "speaker", "start", "end", "text", "language", "tier", "room"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_file_is_rotated_at_its_size_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "standup.jsonl"
    line = len(json.dumps(rec(0), separators=(",", ":"))) + 1
    sink = FileSink(FileSinkOptions(path, max_bytes=4096))
    n = 3 * 4096 // line
    for i in range(n):
        sink.submit(rec(i))
    assert sink.close(10.0) == 0
    files = sorted(tmp_path.glob("standup*.jsonl"))
    assert len(files) >= 3
    assert all(f.stat().st_size <= 4096 for f in files)
    ids = [r["segmentId"] for f in files for r in read(f)]
    assert sorted(ids) == sorted(f"s-{i}" for i in range(n))


def test_a_symlink_planted_on_the_volume_is_not_followed(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    (tmp_path / "standup.jsonl").symlink_to(target)
    sink = FileSink(FileSinkOptions(tmp_path / "standup.jsonl"))
    sink.submit(rec(1))
    assert sink.close(0.5) == 1
    assert target.read_text() == "untouched\n"
    assert "NOT written" in caplog.text


def test_an_unwritable_volume_is_a_clear_error_and_submit_never_raises(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "transcripts"
    blocker.write_text("a file where the directory should be")
    counts: dict[str, int] = {}
    sink = FileSink(FileSinkOptions(blocker / "ns" / "standup.jsonl", max_queue=5),
                    lambda result, n: counts.__setitem__(result, counts.get(result, 0) + n))
    caplog.set_level(logging.ERROR)
    for i in range(8):
        sink.submit(rec(i))  # the transcription goes on whatever the volume does
    assert sink.close(0.5) == 5
    assert counts == {"failed": 8}  # 3 over the queue at once, 5 left at the shutdown
    assert "Not a directory" in caplog.text or "cannot write" in caplog.text


def test_a_full_volume_keeps_the_finals_and_writes_them_once_there_is_room(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse to grow the file (EFBIG) like a full volume would (ENOSPC);
    # in a child process, so the limit touches nothing else.
    path = tmp_path / "standup.jsonl"
    script = textwrap.dedent(f"""
        import json, resource, signal, sys, time
        from pathlib import Path
        from livenexus_common.sinks import sink_record
        from livenexus_worker.room.sinks_file import FileSink, FileSinkOptions
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))  # inside the first line
        sink = FileSink(FileSinkOptions(Path({str(path)!r})))
        for i in range(10):
            sink.submit(sink_record(room="standup", stream_id="TR_a", segment_id=f"s-{{i}}", speaker="alice",
                                    start=i, end=i + 1, text="words " * 20, language="en", tier="t",
                                    emitted_at=1.0))
        deadline = time.monotonic() + 30
        while not sink.last_error and time.monotonic() < deadline:
            time.sleep(0.01)
        print("error:", sink.last_error, flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the volume has room again
        sys.exit(sink.close(30.0))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "too large" in proc.stdout
    good, torn = [], 0
    for line in path.read_text().splitlines():
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    assert torn <= 1  # at most the line the refused write cut off, ended by a newline before the next
    assert {r["segmentId"] for r in good} == {f"s-{i}" for i in range(10)}


@pytest.mark.parametrize("room", ["../../etc/passwd", "a/b", ".hidden", "", "x" * 300, "名前"])
def test_a_room_name_never_leaves_the_directory(room: str, tmp_path: Path) -> None:
    name = transcript_file_name(room)
    assert "/" not in name and not name.startswith(".") and len(name) < 130
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert transcript_file_name(room) != transcript_file_name(room + "x")
    assert transcript_file_name("standup-1") == "standup-1.jsonl"
    assert os.path.basename(name) == name
