"""`livenexus-worker bench`: the numbers the latency goals are judged by, measured in one run.

Right-sized windows and the classic 30 s padding are run back to back on the same audio so the ratio is
meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil

from livenexus_worker.core.audio import SAMPLE_RATE, load
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.files.feed import feed
from livenexus_worker.inference.engine import EngineOptions
from livenexus_worker.inference.textnorm import wer
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions


@dataclass
class BenchResult:
    """One mode's figures."""

    mode: str
    """'right-sized' or 'padded-30s'."""
    finals: list[TranscriptEvent] = field(default_factory=list)
    """Final events in order."""
    partial_gaps_ms: list[float] = field(default_factory=list)
    """Time between consecutive partials of the same utterance."""
    latencies_ms: list[float] = field(default_factory=list)
    """End of speech → final."""
    wer: float = 0.0
    """Word error rate of the joined finals against the reference."""
    rtf: float = 0.0
    """Inference seconds per audio second decoded."""
    cpu_s: float = 0.0
    """Process CPU seconds for the whole pass."""
    wall_s: float = 0.0
    """Wall time of the pass."""
    audio_s: float = 0.0
    """Duration of the input."""
    rss_mib: float = 0.0
    """Resident set size after the pass."""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def run_mode(signal: np.ndarray, reference: str, tier: TierSpec, padded: bool, realtime: bool,
             language: str | None, threads: int) -> BenchResult:
    opts = RuntimeOptions(tiers=(tier,), engine=EngineOptions(padded_30s=padded), threads=threads)
    rt = Runtime.create(opts)
    res = BenchResult("padded-30s" if padded else "right-sized", audio_s=signal.shape[0] / SAMPLE_RATE)
    last_partial: dict[str, float] = {}

    def on_event(ev: TranscriptEvent) -> None:
        now = time.monotonic()
        if ev.is_final:
            res.finals.append(ev)
            res.latencies_ms.append(ev.latency_ms)
        else:
            if ev.segment_id in last_partial:
                res.partial_gaps_ms.append((now - last_partial[ev.segment_id]) * 1000)
            last_partial[ev.segment_id] = now

    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    pipe = rt.open_stream("bench", "bench", on_event, replace(opts.pipeline, language=language))
    feed(pipe, signal, realtime=realtime)
    rt.wait_idle(600)
    res.wall_s = time.monotonic() - t0
    res.cpu_s = sum(proc.cpu_times()[:2]) - cpu0
    res.rtf = rt.stats.inference_s / max(1e-9, res.audio_s)
    res.wer = wer(reference, " ".join(f.text for f in res.finals))
    res.rss_mib = proc.memory_info().rss / 2**20
    rt.close()
    return res


def idle_cpu(seconds: float, threads: int) -> float:
    """CPU share of one core while a loaded runtime receives pure silence in real time."""
    rt = Runtime.create(RuntimeOptions(threads=threads))
    pipe = rt.open_stream("idle", "idle", lambda e: None)
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    feed(pipe, np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16), realtime=True, trailing_silence_ms=0)
    share = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    rt.close()
    return share


def offline_wer(signal: np.ndarray, reference: str, tier: TierSpec, language: str | None) -> tuple[float, float]:
    """WER and wall time of plain faster-whisper on the whole file (the accuracy baseline)."""
    from faster_whisper import WhisperModel

    from livenexus_worker.inference.models import resolve

    model = WhisperModel(str(resolve(tier.model).path), device="cpu", compute_type=tier.compute_type)
    t0 = time.monotonic()
    segments, _ = model.transcribe(signal.astype(np.float32) / 32768.0, beam_size=tier.beam_size,
                                   language=language, condition_on_previous_text=False)
    text = " ".join(s.text for s in segments)
    return wer(reference, text), time.monotonic() - t0


def report(results: list[BenchResult], offline: tuple[float, float] | None, idle: float | None) -> str:
    lines = [f"{'mode':<12} {'p50 ms':>7} {'p95 ms':>7} {'partial gap ms':>15} {'WER %':>6} {'RTF':>6} "
             f"{'CPU s':>6} {'RSS MiB':>8} {'finals':>6}"]
    for r in results:
        gap = statistics.median(r.partial_gaps_ms) if r.partial_gaps_ms else float("nan")
        lines.append(f"{r.mode:<12} {pct(r.latencies_ms, 50):7.0f} {pct(r.latencies_ms, 95):7.0f} "
                     f"{gap:15.0f} {100 * r.wer:6.1f} {r.rtf:6.3f} {r.cpu_s:6.1f} {r.rss_mib:8.0f} {len(r.finals):6d}")
    if len(results) == 2 and results[0].latencies_ms and results[1].latencies_ms:
        a, b = results
        lines.append(f"ratio padded/right-sized: p50 latency x{pct(b.latencies_ms, 50) / pct(a.latencies_ms, 50):.2f}, "
                     f"RTF x{b.rtf / max(a.rtf, 1e-9):.2f}, CPU x{b.cpu_s / max(a.cpu_s, 1e-9):.2f}")
    if offline is not None:
        lines.append(f"offline faster-whisper (same model, beam as final): WER {100 * offline[0]:.1f} % "
                     f"in {offline[1]:.1f} s")
    if idle is not None:
        lines.append(f"idle CPU on silence: {100 * idle:.2f} % of one core")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"peak RSS of this process: {peak:.0f} MiB")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    signal = load(args.file)
    reference = Path(args.ref[1:]).read_text() if args.ref.startswith("@") else args.ref
    tier = TierSpec(args.model, args.compute_type, args.beam_size, args.partial_ms, args.partial_model)
    language = None if args.language == "auto" else args.language
    results = [run_mode(signal, reference, tier, False, not args.fast, language, args.threads)]
    if args.compare_padded:
        results.append(run_mode(signal, reference, tier, True, not args.fast, language, args.threads))
    offline = offline_wer(signal, reference, tier, language)
    idle = idle_cpu(10.0, args.threads)
    print(report(results, offline, idle))
    for f in results[0].finals:
        print(f"  [{f.start:6.2f}-{f.end:6.2f}] {f.latency_ms:5.0f} ms  {f.text}")
    return 0
