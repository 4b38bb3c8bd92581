"""glibc's heap arenas and the worker's memory: RSS after a speaker's decodes, per allocator setting.

    .venv/bin/python benchmarks/arenas.py [--rounds 3] [--model base]

Each setting runs in its own child process: the model loaded as the runtime loads it (two replicas, one thread
each), then one thread decodes 60 partials of 1.5-3 s at beam 1 while another decodes 8 finals of 2-14 s at
beam 5, both with word times, as a speaker's partial and final run side by side. Speech is espeak-ng's (the
dev kit's TTS). Prints RSS after the decodes (MiB) and the child's CPU seconds, per setting and round:
``default`` (glibc's own), ``cap`` (the worker's ``limit_arenas``, one arena per replica), and the environment
variables compared when it was chosen. Not a test: the numbers move with the host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, threading, time
import numpy as np
from livenexus_dev.tts import synthesize
from livenexus_worker.core import memory
from livenexus_worker.inference.engine import WhisperEngine
from livenexus_worker.inference.models import resolve
if sys.argv[1] == "cap":
    memory.limit_arenas(2)
text = ("We shipped the new onboarding flow on Tuesday and the feedback has been mostly positive. "
        "There were a couple of complaints about the email confirmation step taking too long.")
speech = synthesize(text)
audio = np.tile(speech, 1 + int(14 * 16000 // max(1, speech.shape[0])))[: 14 * 16000]
engine = WhisperEngine(resolve(sys.argv[2]).path, threads=1, workers=2)
t0 = time.process_time()

def partials():
    for i in range(60):
        engine.transcribe(audio[: int(16000 * (1.5 + (i % 6) * 0.3))], beam_size=1, word_times=True)

def finals():
    for s in (2.5, 3.0, 14.0, 4.0, 12.0, 2.0, 10.0, 3.0):
        engine.transcribe(audio[: int(16000 * s)], beam_size=5, word_times=True)

threads = [threading.Thread(target=partials), threading.Thread(target=finals)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"rss_mib": memory.rss_mib(), "cpu_s": time.process_time() - t0}))
"""

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "cap": {},
    "MALLOC_ARENA_MAX=1": {"MALLOC_ARENA_MAX": "1"},
    "MALLOC_MMAP_THRESHOLD_=1048576": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="base")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    print(f"{'setting':34s} {'round':>5s} {'RSS after (MiB)':>16s} {'CPU s':>7s}")
    for r in range(args.rounds):
        for name, env in SETTINGS.items():
            mode = "cap" if name == "cap" else "none"
            out = subprocess.run([sys.executable, "-c", CHILD, mode, args.model], env={**base, **env},
                                 capture_output=True, text=True, check=True, timeout=900).stdout
            got = json.loads(out.strip().splitlines()[-1])
            print(f"{name:34s} {r + 1:5d} {got['rss_mib']:16.0f} {got['cpu_s']:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
