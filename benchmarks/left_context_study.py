"""Offline study of a continuous run's final cuts: how much of the file path's WER gap to offline Whisper is the
cut places and how much the left context a final hears.

Takes a ``continuous.py`` run (its ``-raw.json``), cuts the meeting where our finals start, and decodes each cut
alone in stream order with beam 5, once per configuration: the left context (seconds of the audio before the
cut, its text forced as the decoder's start, as ``streaming.finals`` does), taken from the previous part only
(``prev``, the worker's rule) or from as many earlier parts as fit (``chain``); ``--reference-cuts`` cuts at the
script's sentence starts instead (300 ms early). Prints the WER of each configuration, deterministic for one
run's cuts: no timing, no threads.

    python benchmarks/left_context_study.py benchmarks/out/continuous-<stamp>-raw.json --configs 0,6,6chain,10chain,2+p1
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meeting import Layout, build
from livenexus_worker.core.audio import SAMPLE_RATE


@dataclass
class Part:
    """One decoded cut: its audio, its words and where each ends (s from the part's start)."""

    audio: np.ndarray
    words: list[str]
    ends: list[float]


def left_of(parts: list[Part], limit_s: float, chain: bool) -> tuple[np.ndarray, str] | None:
    """The left context of the next part: the last words of the previous part (or parts, ``chain``) whose audio
    fits in ``limit_s`` from where the word before them ended."""
    if limit_s <= 0 or not parts:
        return None
    use = parts if chain else parts[-1:]
    audio = np.concatenate([p.audio for p in use])
    words: list[str] = []
    ends: list[float] = []
    offset = 0.0
    for p in use:
        if len(p.ends) != len(p.words):
            return None
        words += p.words
        ends += [offset + e for e in p.ends]
        offset += p.audio.shape[0] / SAMPLE_RATE
    total = audio.shape[0] / SAMPLE_RATE
    if total <= limit_s:
        return (audio, " ".join(words)) if words else None
    for k in range(1, len(words)):
        if total - ends[k - 1] <= limit_s:
            return audio[int(ends[k - 1] * SAMPLE_RATE):], " ".join(words[k:])
    return None


def run(engine: object, audio: np.ndarray, cuts: list[int], limit_s: float, chain: bool, beam: int,
        prompt: int = 0, under_s: float = 0.0) -> tuple[str, float]:
    from livenexus_worker.streaming.finals import after_left
    from livenexus_worker.streaming.stream_state import LeftContext

    parts: list[Part] = []
    said: list[str] = []
    spent = 0.0
    bounds = [*cuts, audio.shape[0]]
    for a, b in itertools.pairwise(bounds):
        own = audio[a:b]
        if own.shape[0] < SAMPLE_RATE // 10:
            continue
        # under_s: only a part shorter than this hears its left context (a long one reads by its own words)
        left = left_of(parts, limit_s, chain) if not under_s or own.shape[0] < under_s * SAMPLE_RATE else None
        context = " ".join(said[-prompt:]) if prompt else ""  # Whisper's previous-text slot: no decoder steps
        text, ends = "", ()
        if left is not None:
            hyp = engine.transcribe(np.concatenate([left[0], own]), beam_size=beam, language="en",  # type: ignore[attr-defined]
                                    prefix=left[1], word_times=True, context=context)
            spent += hyp.encode_s + hyp.decode_s
            got = after_left(hyp, LeftContext(left[0], left[1]), "study")
            if got is not None:
                text, ends, _p = got
        if left is None or got is None:
            hyp = engine.transcribe(own, beam_size=beam, language="en", word_times=True,  # type: ignore[attr-defined]
                                    context=context)
            spent += hyp.encode_s + hyp.decode_s
            text, ends = hyp.text, hyp.word_ends
        parts.append(Part(own, text.split(), list(ends)))
        parts = parts[-8:]
        said.append(text)
    return " ".join(said), spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", help="a continuous.py run's -raw.json (its file path's capture of our worker)")
    ap.add_argument("--configs", default="0,6,6chain,10chain",
                    help="left context seconds, 'chain' for several previous parts, '+pN' for the N previous "
                         "parts' text as Whisper's previous-text prompt, '@N' for beam N (default 5), '<N' for a "
                         "left context only before parts shorter than N s; comma separated")
    ap.add_argument("--reference-cuts", action="store_true", help="cut at the script's sentence starts instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", metavar="JSONL", help="append each configuration's transcript to this file")
    args = ap.parse_args()

    from livenexus_worker.inference.engine import WhisperEngine
    from livenexus_worker.inference.models import resolve
    from livenexus_worker.inference.textnorm import wer

    raw = json.loads(Path(args.raw).read_text())
    meeting = build(Layout(**{k: raw["run"][k] for k in ("minutes", "noise_dbfs", "seed")}),
                    quick=raw["run"]["quick"], log=False)
    if args.reference_cuts:
        cuts = [max(0, s.start - int(0.3 * SAMPLE_RATE)) for s in meeting.sentences]
    else:
        ours = next(c for c in raw["captures"]["file"] if not c["system"].lower().startswith("whisperlive"))
        cuts = sorted({max(0, int(e["start"] * SAMPLE_RATE)) for e in ours["emissions"] if e["final"]})
    engine = WhisperEngine(resolve("base").path, threads=args.threads)
    print(f"{len(cuts)} cuts ({'reference' if args.reference_cuts else 'ours'}), meeting {meeting.duration_s:.1f} s")
    for cfg in args.configs.split(","):
        left, _, beam = cfg.partition("@")
        left, _, prompted = left.partition("+p")
        left, _, under = left.partition("<")
        chain = left.endswith("chain")
        limit = float(left.removesuffix("chain") or 0)
        t = time.monotonic()
        text, spent = run(engine, meeting.audio, cuts, limit, chain, int(beam or 5), int(prompted or 0),
                          float(under or 0))
        if args.texts:
            with open(args.texts, "a") as f:
                f.write(json.dumps({"config": cfg, "text": text}) + "\n")
        print(f"  left {limit:>4.1f} s {'chain' if chain else 'prev ':5} under {under or '-':>3} s "
              f"prompt {int(prompted or 0)} "
              f"beam {int(beam or 5)}: "
              f"WER {wer(meeting.reference, text) * 100:5.1f} %"
              f"  decode {spent:6.1f} s ({time.monotonic() - t:.0f} s wall)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
