"""End-to-end latency through a real livekit-server: publisher's end of speech → listener receives the final.

    python benchmarks/livekit_latency.py [--utterances 8]

Starts livekit-server on 127.0.0.1, the worker as a separate process (`livenexus-worker run`), a speaker bot
and a listener. Prints per-sentence latency (to its last final) and p50/p95; also the worker-side latency (VAD
end of speech → final emitted) carried in each message, so transport cost is the difference; and, as the
listener saw them, how long after the publisher began a sentence its first words arrived (partial or final)
and the gaps between a segment's partials. Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from livenexus_dev.demo.bots import Heard, Listener, SpeakerBot
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


def partial_gaps(seen: list[Heard]) -> list[float]:
    """Milliseconds between consecutive partials of one segment, as ``seen`` (in arrival order) holds them."""
    last: dict[str, float] = {}
    out: list[float] = []
    for h in seen:
        if h.final:
            last.pop(h.segment_id, None)
            continue
        if h.segment_id in last:
            out.append((h.at - last[h.segment_id]) * 1000)
        last[h.segment_id] = h.at
    return out


async def run(n: int) -> int:
    server = LiveKitServer().start()
    worker = start_worker(server, "bench", server.workdir / "worker.log")
    try:
        await wait_worker_joined(server, "bench", worker, asyncio.Event())
        listener = await Listener.join(server.url, server.api_key, server.api_secret, "bench")
        bot = await SpeakerBot.join(server.url, server.api_key, server.api_secret, "bench", "speaker")
        await bot.silence(1.5)
        played: list[tuple[float, float]] = []  # (start, end) of each sentence, monotonic
        for i in range(n):
            text = SENTENCES[i % len(SENTENCES)]
            start = time.monotonic()
            played.append((start, await bot.play(trim(synthesize(text)))))
            tail = asyncio.create_task(bot.silence(1.5))
            await listener.wait_finals(len(listener.finals(speaker="speaker")) + 1, 15, speaker="speaker")
            await tail
        await asyncio.sleep(2.0)  # a late final of the last sentence
        # A sentence's finals are those that arrive after it starts and before the next one does: a sentence
        # the VAD split at a comma has two, and counting finals by index would shift every later row.
        rows = []
        firsts: list[float] = []
        gaps: list[float] = []
        heard = listener.finals(speaker="speaker")
        for i, (start, end) in enumerate(played):
            text = SENTENCES[i % len(SENTENCES)]
            until = played[i + 1][0] if i + 1 < len(played) else float("inf")
            mine = [f for f in heard if start <= f.at < until]
            seen = [h for h in listener.heard if h.via == "data" and h.speaker == "speaker" and start <= h.at < until]
            firsts.extend([(seen[0].at - start) * 1000] if seen else [])
            first = f"first {firsts[-1]:5.0f} ms {seen[0].text[:24]!r:27}" if seen else f"first {'-':>5}    {'':27}"
            gaps.extend(partial_gaps(seen))
            if not mine:
                print(f"{i + 1:2d}  no final")
                continue
            last = mine[-1]
            said = " ".join(f.text for f in mine)
            rows.append(((last.at - end) * 1000, float(last.attributes.get("latencyMs", 0.0)), wer(text, said),
                         len(mine)))
            e2e_ms, worker_ms, score, _ = rows[-1]
            split = f" ({len(mine)} finals)" if len(mine) > 1 else ""
            print(f"{i + 1:2d}  e2e {e2e_ms:6.0f} ms  worker {worker_ms:6.0f} ms  {first}  WER {score:.2f}  "
                  f"{said}{split}")
        await bot.close()
        await listener.close()
        if rows:
            e2e = np.array([r[0] for r in rows])
            wk = np.array([r[1] for r in rows])
            print(f"end-to-end final latency: p50 {np.percentile(e2e, 50):.0f} ms, "
                  f"p95 {np.percentile(e2e, 95):.0f} ms; "
                  f"max {e2e.max():.0f} ms; worker-side p50 {np.percentile(wk, 50):.0f} ms; "
                  f"{len(rows)}/{n} sentences finalised, {sum(r[3] > 1 for r in rows)} split; "
                  f"mean WER {np.mean([r[2] for r in rows]):.3f}")
        if firsts:
            print(f"first words (publisher's first frame → listener's first partial or final): "
                  f"p50 {np.percentile(firsts, 50):.0f} ms, max {max(firsts):.0f} ms; partial gap p50 "
                  f"{np.percentile(gaps, 50) if gaps else float('nan'):.0f} ms, p95 "
                  f"{np.percentile(gaps, 95) if gaps else float('nan'):.0f} ms ({len(gaps)} gaps)")
        return 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        if os.environ.get("LNX_VERBOSE"):  # the worker's debug log outlives the server's work dir
            kept = Path(__file__).parent / "out" / "livekit-latency-worker.log"
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(server.workdir / "worker.log", kept)
            print(f"worker log: {kept}")
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--utterances", type=int, default=8)
    return asyncio.run(run(ap.parse_args().utterances))


if __name__ == "__main__":
    sys.exit(main())
