"""A process of light noise bots: ``python -m tests.agent.noisebots ROOM PREFIX N SECONDS``.

LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET come from the environment (never argv). Each bot joins
without subscribing to anything (fifty subscribing bots in one process would decode each other's audio,
O(n²)), publishes a microphone track and sends white noise in real time, which webrtcvad calls speech.
Prints ``joined N`` once all are in; leaves on SIGTERM or after SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import numpy as np
from livekit import rtc

from livenexus_dev.demo.bots import participant_token

RATE = 16000
FRAME = RATE // 50  # 20 ms


async def main(room_name: str, prefix: str, n: int, seconds: float) -> int:
    url, key, secret = os.environ["LIVEKIT_URL"], os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    rooms: list[rtc.Room] = []
    sources: list[rtc.AudioSource] = []
    try:
        for i in range(n):
            r = rtc.Room()
            rooms.append(r)
            await r.connect(url, participant_token(key, secret, room_name, f"{prefix}-{i}"),
                            rtc.RoomOptions(auto_subscribe=False))
            src = rtc.AudioSource(RATE, 1, queue_size_ms=200)
            track = rtc.LocalAudioTrack.create_audio_track("mic", src)
            await r.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            sources.append(src)
        print(f"joined {n}", flush=True)
        rng = np.random.default_rng(hash(prefix) % 2**32)
        buf = np.clip(rng.standard_normal(RATE * 2) * 3000, -32000, 32000).astype(np.int16)
        t0 = time.monotonic()
        k = 0
        while not stop.is_set() and time.monotonic() - t0 < seconds:
            frames = [rtc.AudioFrame(buf[o : o + FRAME].tobytes(), RATE, 1, FRAME)
                      for o in (((k + 37 * i) * FRAME) % (buf.shape[0] - FRAME) for i in range(len(sources)))]
            await asyncio.gather(*(s.capture_frame(f) for s, f in zip(sources, frames, strict=True)))
            k += 1
            delay = t0 + k * FRAME / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await asyncio.gather(*(r.disconnect() for r in rooms), return_exceptions=True)
    return 0


if __name__ == "__main__":
    room, prefix, count, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    code = asyncio.run(main(room, prefix, count, secs))
    sys.stdout.flush()
    os._exit(code)  # the LiveKit FFI can abort during interpreter teardown (see tests/conftest.py)
