"""End-to-end latency through a real livekit-server: publisher's end of speech → listener receives the final.

    python benchmarks/livekit_latency.py [--utterances 8]

Starts livekit-server on 127.0.0.1, the worker as a separate process (`livenexus-worker run`), a speaker bot
and a listener. Prints per-utterance latency and p50/p95; also the worker-side latency (VAD end of speech →
final emitted) carried in each message, so transport cost is the difference. Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import numpy as np

from livenexus_dev.demo.bots import Listener, SpeakerBot
from livenexus_dev.demo.run import start_worker, wait_worker_joined
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_dev.tts import synthesize
from livenexus_worker.inference.textnorm import wer

SENTENCES = [
    "The build finished without errors.",
    "Please review the pull request before lunch.",
    "We will deploy the new version on Thursday morning.",
    "The dashboard shows a small increase in latency.",
    "Let us schedule a short meeting with the design team.",
    "Thanks everyone, that is all for today.",
]


def trim(audio: np.ndarray) -> np.ndarray:
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return audio[loud[0] : loud[-1] + 1]


async def run(n: int) -> int:
    server = LiveKitServer().start()
    worker = start_worker(server, "bench", server.workdir / "worker.log")
    try:
        await wait_worker_joined(server, "bench", worker, asyncio.Event())
        listener = await Listener.join(server.url, server.api_key, server.api_secret, "bench")
        bot = await SpeakerBot.join(server.url, server.api_key, server.api_secret, "bench", "speaker")
        await bot.silence(1.5)
        rows = []
        for i in range(n):
            text = SENTENCES[i % len(SENTENCES)]
            end = await bot.play(trim(synthesize(text)))
            tail = asyncio.create_task(bot.silence(1.5))
            finals = await listener.wait_finals(i + 1, 15, speaker="speaker")
            await tail
            if len(finals) > i:
                f = finals[i]
                rows.append(((f.at - end) * 1000, float(f.attributes.get("latencyMs", 0.0)), wer(text, f.text)))
                e2e_ms, worker_ms, score = rows[-1]
                print(f"{i + 1:2d}  e2e {e2e_ms:6.0f} ms  worker {worker_ms:6.0f} ms  WER {score:.2f}  {f.text}")
        await bot.close()
        await listener.close()
        if rows:
            e2e = np.array([r[0] for r in rows])
            wk = np.array([r[1] for r in rows])
            print(f"end-to-end final latency: p50 {np.percentile(e2e, 50):.0f} ms, "
                  f"p95 {np.percentile(e2e, 95):.0f} ms; "
                  f"worker-side p50 {np.percentile(wk, 50):.0f} ms; {len(rows)}/{n} finals; "
                  f"mean WER {np.mean([r[2] for r in rows]):.3f}")
        return 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--utterances", type=int, default=8)
    return asyncio.run(run(ap.parse_args().utterances))


if __name__ == "__main__":
    sys.exit(main())
