"""How a track's frames travel from the event loop to the frames thread, and (while tracing) when they did."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


class FrameFeed(Generic[_T]):
    """A track's frames on their way to the frames thread: never awaited one by one (a thread hop per frame
    is latency-bound: two tracks on a loaded machine fell behind and lost audio), drained in batches, and
    bounded: past ``limit`` the oldest frame is dropped and counted."""

    def __init__(self, handle: Callable[[_T], None], executor: Executor, limit: int) -> None:
        self._handle, self._executor, self._limit = handle, executor, limit
        self._pending: deque[_T] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.dropped = 0

    def put(self, pcm: _T) -> bool:
        """Event loop. Returns False when a frame had to be dropped."""
        with self._lock:
            kept = len(self._pending) < self._limit
            if not kept:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(pcm)
            if self._scheduled:
                return kept
            self._scheduled = True
        self._executor.submit(self.drain)
        return kept

    def drain(self) -> None:
        """Frames thread."""
        while True:
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
                pcm = self._pending.popleft()
            self._handle(pcm)


class FrameStamps:
    """While tracing: when each recent frame of a track reached the event loop and was pushed, by stream
    position, so an event's last voiced sample finds the frame that carried it. Bounded to ``keep`` frames."""

    def __init__(self, keep: int) -> None:
        self._frames: deque[tuple[int, int, float, float]] = deque(maxlen=keep)  # (start, end, recv, push)
        self._pos = 0
        self._lock = threading.Lock()  # appended on the frames thread, read on the inference thread

    def pushed(self, samples: int, recv: float, push: float) -> None:
        with self._lock:
            self._frames.append((self._pos, self._pos + samples, recv, push))
            self._pos += samples

    def find(self, sample: int) -> tuple[float, float] | None:
        """(recv, push) of the frame holding stream position ``sample`` (the sample just before it: positions
        count samples pushed); None if that frame is no longer kept or was never pushed."""
        with self._lock:
            frames = tuple(self._frames)
        for start, end, recv, push in frames:
            if start < sample <= end:
                return recv, push
        return None


async def log_jitter_buffer(track: Any, sid: str, every_s: float = 2.0) -> None:
    """While tracing: every ``every_s`` log the track's WebRTC receive jitter buffer (cumulative delay and frames
    emitted, as inbound-rtp stats count them), so a benchmark can tell how much of the speaker → worker time
    the buffer holds. Runs until cancelled; a failed stats call is skipped."""
    log = logging.getLogger("livenexus_worker.stages")
    while True:
        await asyncio.sleep(every_s)
        try:
            stats = await track.get_stats()
        except Exception as exc:  # the track is going away
            log.debug("jitter buffer stats of %s unavailable: %s", sid, exc)
            continue
        for st in stats:
            if st.HasField("inbound_rtp"):
                ib = st.inbound_rtp.inbound
                log.info("stage jitter %s", json.dumps({
                    "track": sid, "at": round(time.monotonic(), 6), "delay_s": ib.jitter_buffer_delay,
                    "target_s": ib.jitter_buffer_target_delay, "emitted": ib.jitter_buffer_emitted_count,
                    "concealed": ib.concealed_samples}))
