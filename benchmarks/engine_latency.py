"""Streaming engine benchmark: right-sized windows vs classic 30 s padding, same audio, same run.

    python benchmarks/engine_latency.py [--fast]

Prints final-latency p50/p95, partial cadence, WER (vs offline faster-whisper), RTF, CPU, RSS, idle CPU.
Numbers are printed, not asserted: this machine is shared and noisy; compare the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from livenexus_dev.tts import conversation, write_wav
from livenexus_worker.files import bench

SCRIPT = [
    "Good morning everyone, thanks for joining the call.",
    "The first item on the agenda is the release schedule for next month.",
    "We moved the launch to the twelfth because the security review is not finished.",
    "Can someone from the platform team confirm the database migration is ready?",
    "Yes, the migration ran in staging last night without any errors.",
    "Great, then let us talk about hiring.",
    "We have three open positions and about forty candidates in the pipeline.",
    "Please send me your interview feedback by Friday afternoon.",
    "The last topic is the budget, which is still waiting for approval.",
    "That is all for today, thank you and see you next week.",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fast", action="store_true", help="do not pace in real time")
    ap.add_argument("--beam-size", type=int, default=5)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "meeting.wav", conversation(SCRIPT, gap_s=1.2))
        args = argparse.Namespace(
            file=str(wav), ref=" ".join(SCRIPT), compare_padded=True, fast=ns.fast, model="base",
            compute_type="int8", beam_size=ns.beam_size, partial_ms=250, language="en", threads=0,
        )
        return bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
