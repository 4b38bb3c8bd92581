"""What Whisper reads in audio with no speech in it, and which of those readings the worker's guards let through.

Windows of pink noise, of babble (the benchmark meeting's speech played backwards, two voices) and of both, at
several levels and lengths, each decoded as a partial (beam 1) and as a final (beam 5), as the worker's engine
does. Prints, per rule of ``inference.guards.check``, how many readings it drops and the readings that pass,
and how confident the most confident reading was: the evidence behind ``GuardOptions`` (no timing, no threads).

    python benchmarks/noise_probe.py [--windows 4] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meeting import Layout, build
from livenexus_worker.core.audio import SAMPLE_RATE


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS pink (1/f) noise."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    x = np.fft.irfft(spectrum / np.sqrt(np.arange(1, spectrum.size + 1)), n)
    return x / np.sqrt(np.mean(x**2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=4, help="windows per kind, level and length")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from livenexus_worker.inference.engine import WhisperEngine
    from livenexus_worker.inference.guards import GuardOptions, check
    from livenexus_worker.inference.models import resolve

    speech = build(Layout(), log=False).audio.astype(np.float64) / 32768
    level = float(np.sqrt(np.mean(speech**2)))
    engine = WhisperEngine(resolve("base").path, threads=2)
    rng = np.random.default_rng(args.seed)
    second = np.roll(speech[::-1], 12345)  # the babble's other voice
    readings: list[tuple[str, int, float, int, float, float, str]] = []
    for kind in ("pink", "babble", "babble+pink"):
        for db in (-40, -30, -20, -12):
            for secs in (1.0, 2.0, 4.0):
                for _ in range(args.windows):
                    n = int(secs * SAMPLE_RATE)
                    at = int(rng.integers(0, speech.size - n))
                    babble = speech[at : at + n][::-1] + second[at : at + n]
                    babble /= np.sqrt(np.mean(babble**2)) + 1e-12
                    x = {"pink": pink(rng, n), "babble": babble, "babble+pink": babble + 0.5 * pink(rng, n)}[kind]
                    x = x / np.sqrt(np.mean(x**2)) * level * 10 ** (db / 20)
                    pcm = np.clip(x * 32767, -32768, 32767).astype(np.int16)
                    for beam in (1, 5):
                        h = engine.transcribe(pcm, beam_size=beam, max_new_tokens=64 if beam == 1 else None)
                        readings.append((kind, db, secs, beam, h.no_speech_prob, h.avg_logprob, h.text.strip()))
    opts = GuardOptions()
    said = [r for r in readings if r[6]]
    print(f"{len(readings)} noise-only decodes, {len(said)} with text "
          f"(levels in dB under the meeting's speech, pink noise in dB under it as well)")
    reasons: dict[str, int] = {}
    passed = []
    for r in said:
        text, why = check(r[6], r[4], r[5], r[2], opts)
        reasons[why] = reasons.get(why, 0) + 1
        if text is not None:
            passed.append(r)
    print("  guard verdicts:", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    best = max(said, key=lambda r: r[5]) if said else None
    if best is not None:
        print(f"  most confident reading: log-prob {best[5]:.2f}, no-speech {best[4]:.2f}: {best[6][:60]!r}")
    for kind, db, secs, beam, ns, lp, text in passed:
        print(f"  passed: {kind} {db} dB {secs:.0f} s beam {beam}: no-speech {ns:.2f} log-prob {lp:.2f} {text[:60]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
