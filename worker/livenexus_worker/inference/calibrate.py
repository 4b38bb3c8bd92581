"""Does a second intra-op thread pay for itself on this host? Measured once when the worker starts.

A decode's second CTranslate2 thread is worth what it saves in time against what it costs in CPU. Measured on
the meeting benchmark (base int8, file path, same hour), it is a property of the host, not of the code:
- on the hosts of sessions 26-34 (AVX2), two threads decoded 1.5-6 s windows 1.75-1.85x faster than one: the
  finals came at p50 0.77 s instead of 1.33 s for +0.13 CPU-s per audio-s;
- on an Intel Xeon with AVX-512 VNNI / AMX (session 37), the decoder's small per-step products are already
  fast on one core, and a second thread made a real partial 1.26x faster and a final 1.11x while raising the
  CPU from 0.498 to 0.582 CPU-s per audio-s (one thread: final p50 / p95 0.73 / 1.27 s against 0.61 / 1.14).

So the worker times a fixed decode at one and at two threads when it starts and keeps two only when two are at
least :data:`MIN_SPEEDUP` times faster: the CPU a second thread spends (2 / speedup of a core-second per
decode-second) then buys a decode that much sooner. The timing runs in a child process (``python -m
livenexus_worker.inference.calibrate MODEL_DIR``): its two models and their buffers leave with it. In-process
(base int8), the two loaded together peaked at 469 MiB, and loaded one after the other they still left the
worker's peak at 400 MiB against 329 MiB for its one model alone: glibc kept the freed memory.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livenexus_common.contract import Env
from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.inference import mkl_hook
from livenexus_worker.inference.engine import WhisperEngine

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.5
"""Two threads are kept when they decode at least this much faster than one (the CPU price: 2/1.5 = 1.33x)."""

CLEAR_BY = 1.25
"""A speedup this many times under :data:`MIN_SPEEDUP` or over it decides without more rounds of timing. The
hosts measured so far read 0.73-0.88x (AMD EPYC, Zen 4), 1.01-1.26x (Intel with AMX) and 1.75-1.85x (AVX2): a
round is ~0.9 s of two busy cores on base, and three more rounds took a worker's start from 4.4 s to 7.2 s on
the first host, to confirm what its first round said."""

_PREFIX = "so the design review moved to Thursday because the vendor needs one more week to finish the"
"""Forced words: a decode's steps are the decoder's work whatever the audio says, so their number is fixed."""


@dataclass(frozen=True)
class ThreadTiming:
    """One calibration: the same decodes timed at one and at two intra-op threads."""

    one_s: float
    """Fastest of the repetitions at one thread (s): a partial-like and a final-like decode together."""
    two_s: float
    """The same at two threads (s)."""
    rounds: int = 0
    """Rounds of timing it took (:func:`time_threads`; 0: not said)."""

    @property
    def speedup(self) -> float:
        return self.one_s / self.two_s if self.two_s > 0 else 0.0

    @property
    def threads(self) -> int:
        """The intra-op threads this timing chooses."""
        return 2 if self.speedup >= MIN_SPEEDUP else 1

    @property
    def clear(self) -> bool:
        """Far enough from :data:`MIN_SPEEDUP`, on either side, that more rounds would not change the choice
        (:data:`CLEAR_BY`)."""
        return self.speedup * CLEAR_BY <= MIN_SPEEDUP or self.speedup >= MIN_SPEEDUP * CLEAR_BY


def _workload(engine: WhisperEngine, audio: np.ndarray) -> float:
    """One partial-like decode (2.5 s, beam 1) and one final-like (5 s, beam 5), both forced through the
    same words; the wall time of the pair."""
    t0 = time.perf_counter()
    engine.transcribe(audio[: int(2.5 * SAMPLE_RATE)], beam_size=1, prefix=" ".join(_PREFIX.split()[:8]),
                      max_new_tokens=1)
    engine.transcribe(audio, beam_size=5, prefix=_PREFIX, max_new_tokens=1)
    return time.perf_counter() - t0


def time_threads(model_dir: Path, compute_type: str = "int8", repeats: int = 4) -> ThreadTiming:
    """Load ``model_dir`` at one and at two threads and time the same decodes on each, interleaved so that
    other load on the host falls on both alike; the fastest repetition of each counts. Up to ``repeats``
    rounds: fewer once the timing is :attr:`ThreadTiming.clear`. Both engines are dropped before this
    returns."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(5 * SAMPLE_RATE) * 0.03).astype(np.float32)
    engines = {n: WhisperEngine(model_dir, compute_type, threads=n) for n in (1, 2)}
    try:
        for engine in engines.values():
            _workload(engine, audio)  # first-call allocations out of the timing
        return rounds_until_clear(lambda n: _workload(engines[n], audio), repeats)
    finally:
        engines.clear()
        gc.collect()


def rounds_until_clear(run: Callable[[int], float], repeats: int = 4) -> ThreadTiming:
    """Time ``run`` (the workload at 1 and at 2 threads: its wall time) in rounds, one then two, until the
    fastest of each is :attr:`ThreadTiming.clear` or ``repeats`` rounds are done."""
    best = {1: float("inf"), 2: float("inf")}
    for done in range(1, max(1, repeats) + 1):
        for n in best:
            best[n] = min(best[n], run(n))
        timing = ThreadTiming(best[1], best[2], done)
        if timing.clear:
            break
    return timing


CHILD_TIMEOUT_S = 120.0
"""The child's import, two model loads and four to ten decodes take 3-6 s on two cores; a hung one is given up
on."""


@functools.lru_cache(maxsize=8)
def measured_threads(model_dir: Path, compute_type: str = "int8") -> int:
    """Intra-op threads per decode for a host with two or more usable cores: 2 when a second thread pays
    (:func:`time_threads`, in a child process), else 1; 2 when the model cannot be timed (the rule of the
    hosts measured before). Once per process and model."""
    cmd = [sys.executable, "-m", __name__, str(model_dir), compute_type]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
        timing = _parse(done.stdout) if done.returncode == 0 else None
        why = f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}" if timing is None else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        timing, why = None, f"{type(exc).__name__}: {exc}"
    if timing is not None and _hook_unasked(done.stdout):
        # The child's MKL never asked the vendor hook: it ran MKL's generic code. This process, which has not
        # loaded a model yet, keeps oneDNN (its own timing above is of the slow kernels, so it is not used).
        log.warning("the decode-timing child's MKL never asked the vendor hook; decoding with oneDNN (%s=off)",
                    Env.MKL_ON_AMD)
        os.environ[Env.MKL_ON_AMD] = "off"
        timing, why = None, "MKL vendor hook not consulted"
    if timing is None:
        log.warning("could not time decode threads on %s (%s); two threads per decode", model_dir, why)
        return 2
    log.info("decode threads: %d (one %.0f ms, two %.0f ms: %.2fx; two are kept from %.1fx; %d round(s))",
             timing.threads, timing.one_s * 1000, timing.two_s * 1000, timing.speedup, MIN_SPEEDUP, timing.rounds)
    return timing.threads


def _hook_unasked(out: str) -> bool:
    """The child installed the MKL hook (:mod:`mkl_hook`) and its MKL never asked it."""
    try:
        d = json.loads(out.strip().splitlines()[-1])
        return bool(d["mkl_hook"]) and int(d["mkl_hook_calls"]) == 0
    except (IndexError, ValueError, KeyError, TypeError):
        return False


def _parse(out: str) -> ThreadTiming | None:
    """The child's last stdout line, when it is two finite positive times."""
    try:
        d = json.loads(out.strip().splitlines()[-1])
        one, two, rounds = float(d["one_s"]), float(d["two_s"]), int(d.get("rounds", 0))
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    if not all(math.isfinite(x) and 0 < x < CHILD_TIMEOUT_S for x in (one, two)):
        return None
    return ThreadTiming(one, two, max(0, rounds))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m livenexus_worker.inference.calibrate MODEL_DIR [COMPUTE_TYPE]", file=sys.stderr)
        return 2
    timing = time_threads(Path(args[0]), args[1] if len(args) == 2 else "int8")
    print(json.dumps({"one_s": timing.one_s, "two_s": timing.two_s, "rounds": timing.rounds,
                      "mkl_hook": mkl_hook.install().installed, "mkl_hook_calls": mkl_hook.consulted()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
