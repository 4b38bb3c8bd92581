"""How many simultaneous speakers one worker carries: N real-time streams through one Runtime.

    python benchmarks/concurrency.py [--streams 1,2,4,8,12] [--seconds 30] [--no-tiers] [--plot out.png]

Every N runs in a fresh process, so RSS and allocator state do not carry over between runs.
Each stream speaks a different ordering of the same synthesised sentences (espeak-ng), offset in time
so utterances do not end together, paced in real time. The tier controller runs with the settings from
the environment (LIVENEXUS_TIER_*), so "tier" shows what the policy chose under that load. Prints p50/p95
end-of-speech→final latency, the p50 gap between partials of one utterance, the realtime factor
(inference s per speech s), process CPU as a share of
the usable cores, peak RSS and the tiers used; saves a plot. Numbers are measured, never asserted: this
machine is shared, compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil

from livenexus_dev.tts import synthesize
from livenexus_worker.cli import cap_arenas
from livenexus_worker.core import stages
from livenexus_worker.core.audio import SAMPLE_RATE
from livenexus_worker.core.events import TranscriptEvent
from livenexus_worker.ops.metrics import WorkerMetrics
from livenexus_worker.ops.tier_control import TierController, TierManager
from livenexus_worker.room.service import tier_signals
from livenexus_worker.room.settings import WorkerSettings
from livenexus_worker.streaming.runtime import Runtime
from livenexus_worker.streaming.stream_state import speakers_contend

SENTENCES = [
    "Good morning everyone, thanks for joining the call.",
    "The first item on the agenda is the release schedule for next month.",
    "We moved the launch to the twelfth because the security review is not finished.",
    "Can someone from the platform team confirm the database migration is ready?",
    "Yes, the migration ran in staging last night without any errors.",
    "We have three open positions and about forty candidates in the pipeline.",
    "Please send me your interview feedback by Friday afternoon.",
    "The last topic is the budget, which is still waiting for approval.",
]


@dataclass
class RunResult:
    """Figures of one N."""

    streams: int
    """Simultaneous speaking streams."""
    latencies_ms: list[float] = field(default_factory=list)
    """End of speech → final, every final of every stream."""
    partials: int = 0
    """Partial events delivered."""
    stale_partials: int = 0
    """Partial jobs the scheduler dropped as too old (load shedding)."""
    batched: int = 0
    """Jobs that ran in a batch with other streams' jobs."""
    overlapped: int = 0
    """Jobs that started while another inference thread ran one."""
    first_partial_ms: list[float] = field(default_factory=list)
    """Start of a sentence's voice (its first sample above -36 dBFS) → the first partial after it."""
    partial_gaps_ms: list[float] = field(default_factory=list)
    """Time between consecutive partials of one utterance (does text still flow while finals keep up?)."""
    rtf: float = 0.0
    stages_ms: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Per final (with ``--stages``): speech end -> job queued, queued -> started, decode, decoded -> emitted."""
    """Inference seconds per second of speech."""
    cpu_share: float = 0.0
    """Process CPU seconds / (wall seconds × usable cores)."""
    pressure_mean: float = 0.0
    """Mean of the CPU pressure signal the tier policy saw."""
    busy_mean: float = 0.0
    """Mean busy share of our cores (any process), one of the inputs of pressure."""
    stall_mean: float = 0.0
    """Mean PSI stall share (time some task waited for a CPU), another input of pressure."""
    rss_peak_mib: float = 0.0
    """Highest RSS sampled during the run."""
    tier_seconds: dict[int, float] = field(default_factory=dict)
    """Seconds spent on each tier index."""
    tier_end: int = 0
    """Tier in force at the end of the run."""
    max_lag_s: float = 0.0
    """Highest inference queue lag sampled."""
    contended: float = 0.0
    """Share of tier ticks with more speakers than decode lanes (only then does CPU count for the tiers)."""


def stream_signal(clips: list[np.ndarray], k: int, seconds: float) -> tuple[np.ndarray, list[float]]:
    """Stream k: the sentences rotated by k, a k-dependent lead-in and gaps, looped to ``seconds``; and the
    times (s) each sentence starts at."""
    rng = np.random.default_rng(k)
    parts = [np.zeros(int((0.2 + 0.37 * k % 2.5) * SAMPLE_RATE), dtype=np.int16)]
    total = parts[0].shape[0]
    order = [clips[(i + k) % len(clips)] for i in range(len(clips))]
    i = 0
    onsets: list[float] = []
    while total < seconds * SAMPLE_RATE:
        clip = order[i % len(order)]
        loud = np.flatnonzero(np.abs(clip.astype(np.int32)) > 512)  # -36 dBFS: the synthesiser's lead-in skipped
        onsets.append((total + (int(loud[0]) if loud.size else 0)) / SAMPLE_RATE)
        gap = np.zeros(int(rng.uniform(0.5, 1.5) * SAMPLE_RATE), dtype=np.int16)
        parts += [clip, gap]
        total += clip.shape[0] + gap.shape[0]
        i += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)], onsets


def run(n: int, clips: list[np.ndarray], seconds: float, settings: WorkerSettings, tiers: bool,
        max_batch: int | None = None, batch_partials: bool = False, workers: int = 0) -> RunResult:
    metrics = WorkerMetrics()
    options = settings.runtime_options()
    options = replace(options, max_batch=options.max_batch if max_batch is None else max_batch,
                      batch_partials=batch_partials, workers=workers or options.workers,
                      # LNX_PIPELINE: JSON of PipelineOptions to change, as continuous.py takes it
                      pipeline=replace(options.pipeline, **json.loads(os.environ.get("LNX_PIPELINE") or "{}")))
    rt = Runtime.create(options, observer=metrics)
    res = RunResult(n)
    lock = threading.Lock()
    count = len(settings.tiers)
    manager = TierManager(settings.tiers, settings.tier_options(),
                          unavailable={i for i in range(count) if not rt.is_available(i)})
    sampler = metrics.sampler
    pressures: list[float] = []
    busy: list[float] = []
    stall: list[float] = []
    lags: list[float] = []

    def signals() -> tuple[float, float]:
        s, lag = tier_signals(rt, metrics)  # the worker's own, recorded
        pressures.append(s.pressure)
        busy.extend([s.busy] if s.busy is not None else [])
        stall.extend([s.stall] if s.stall is not None else [])
        lags.append(lag)
        return s.pressure, lag

    contention: list[bool] = []

    def contended() -> bool:
        contention.append(speakers_contend(rt))
        return contention[-1]

    controller = TierController(manager, signals, rt.set_tier if tiers else (lambda i: None), interval_s=0.5,
                                contended=contended)

    last_partial: dict[str, float] = {}
    first_seen: list[set[float]] = [set() for _ in range(n)]

    def on_event(ev: TranscriptEvent) -> None:
        with lock:
            if ev.is_final:
                res.latencies_ms.append(ev.latency_ms)
                if os.environ.get("LNX_VERBOSE"):  # each final as it comes, to read a slow one's story
                    print(f"final {ev.stream_id} {time.monotonic() - t0:7.2f} s lag {ev.latency_ms:5.0f} ms "
                          f"{ev.text!r}", file=sys.stderr, flush=True)
                t = ev.trace
                if t and {"queued", "start", "decoded", "emit"} <= t.keys():
                    spoke = t["emit"] - ev.latency_ms / 1000
                    res.stages_ms.append(tuple(1000 * d for d in (  # type: ignore[arg-type]
                        t["queued"] - spoke, t["start"] - t["queued"], t["decoded"] - t["start"],
                        t["emit"] - t["decoded"])))
                last_partial.pop(ev.segment_id, None)
            else:
                res.partials += 1
                now = time.monotonic()
                k = int(ev.stream_id[1:])
                spoken = [t for t in onsets[k] if t0 + t <= now]
                if spoken and spoken[-1] not in first_seen[k]:
                    first_seen[k].add(spoken[-1])
                    res.first_partial_ms.append((now - t0 - spoken[-1]) * 1000)
                if ev.segment_id in last_partial:
                    res.partial_gaps_ms.append((now - last_partial[ev.segment_id]) * 1000)
                last_partial[ev.segment_id] = now

    signals_by_stream, onsets = zip(*(stream_signal(clips, k, seconds) for k in range(n)), strict=True)
    pipes = [rt.open_stream(f"s{k}", f"speaker-{k}", on_event) for k in range(n)]
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    chunk = SAMPLE_RATE // 50

    def feed(k: int) -> None:
        sig, pipe = signals_by_stream[k], pipes[k]
        for i in range(0, sig.shape[0], chunk):
            delay = t0 + (i + chunk) / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pipe.push(sig[i : i + chunk])
        pipe.push(np.zeros(SAMPLE_RATE, dtype=np.int16))  # let the VAD end the last utterance
        pipe.flush()

    feeders = [threading.Thread(target=feed, args=(k,), daemon=True) for k in range(n)]
    controller.start()
    for f in feeders:
        f.start()
    rss_peak = 0
    last_tick, tier = t0, manager.active
    while any(f.is_alive() for f in feeders):
        time.sleep(0.5)
        rss_peak = max(rss_peak, sampler.rss_bytes())
        now = time.monotonic()
        res.tier_seconds[tier] = res.tier_seconds.get(tier, 0.0) + now - last_tick
        last_tick, tier = now, manager.active
    rt.wait_idle(180)
    controller.stop()
    wall = time.monotonic() - t0
    res.cpu_share = (sum(proc.cpu_times()[:2]) - cpu0) / (wall * sampler.usable_cores)
    res.rtf = rt.stats.inference_s / max(rt.stats.speech_s, 1e-9)
    res.stale_partials = rt.scheduler.stats.partials_stale
    res.batched = rt.scheduler.stats.batched_jobs
    res.overlapped = rt.scheduler.stats.overlapped
    res.rss_peak_mib = max(rss_peak, sampler.rss_bytes()) / 2**20
    res.pressure_mean = statistics.fmean(pressures) if pressures else float("nan")
    res.busy_mean = statistics.fmean(busy) if busy else float("nan")
    res.stall_mean = statistics.fmean(stall) if stall else float("nan")
    res.max_lag_s = max(lags, default=0.0)
    res.contended = statistics.fmean(contention) if contention else 0.0
    res.tier_end = manager.active
    rt.close()
    return res


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(results: list[RunResult], settings: WorkerSettings) -> str:
    head = (f"{'N':>3} {'finals':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'1st p50':>7} {'gap p50':>7} "
            f"{'RTF':>6} {'CPU %':>6} "
            f"{'press.':>6} {'busy':>5} {'stall':>5} {'lag max s':>9} {'RSS MiB':>8} {'stale':>5} {'batched':>7} "
            f"{'overlap':>7} {'contend':>7}  "
            "tiers (s on each; end)")
    lines = [head, "-" * len(head)]
    for r in results:
        used = ", ".join(f"{settings.tiers[i].name}:{s:.0f}" for i, s in sorted(r.tier_seconds.items()) if s >= 1)
        lines.append(
            f"{r.streams:3d} {len(r.latencies_ms):6d} {pct(r.latencies_ms, 50):7.0f} {pct(r.latencies_ms, 95):7.0f} "
            f"{max(r.latencies_ms, default=float('nan')):7.0f} {pct(r.first_partial_ms, 50):7.0f} "
            f"{pct(r.partial_gaps_ms, 50):7.0f} {r.rtf:6.3f} "
            f"{100 * r.cpu_share:6.1f} "
            f"{r.pressure_mean:6.2f} {r.busy_mean:5.2f} {r.stall_mean:5.2f} {r.max_lag_s:9.2f} "
            f"{r.rss_peak_mib:8.0f} {r.stale_partials:5d} {r.batched:7d} {r.overlapped:7d} {r.contended:7.2f}  "
            f"{used}; end {r.tier_end}")
    for r in results:
        if r.stages_ms:
            slow = sorted(r.stages_ms, key=sum)[-max(1, len(r.stages_ms) // 10):]
            cols = zip(*r.stages_ms, strict=True)
            lines.append(f"N={r.streams} finals, ms, p50/p95 of: speech end->queued, waiting, decode, decoded->emit: "
                         + ", ".join(f"{pct(list(c), 50):.0f}/{pct(list(c), 95):.0f}" for c in cols)
                         + "; slowest tenth, mean of each: "
                         + ", ".join(f"{statistics.fmean(c):.0f}" for c in zip(*slow, strict=True)))
    return "\n".join(lines)


def plot(results: list[RunResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r.streams for r in results]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    ax.plot(ns, [pct(r.latencies_ms, 50) / 1000 for r in results], "o-", label="p50")
    ax.plot(ns, [pct(r.latencies_ms, 95) / 1000 for r in results], "s-", label="p95")
    ax.axhline(1.5, color="red", linestyle=":", label="alert (p95 1.5 s)")
    ax.set(title="Final latency (end of speech → final)", xlabel="streams", ylabel="seconds")
    ax.legend()
    ax = axes[0][1]
    ax.plot(ns, [r.rtf for r in results], "o-")
    ax.set(title="Realtime factor (inference s / speech s)", xlabel="streams")
    ax = axes[1][0]
    ax.plot(ns, [100 * r.cpu_share for r in results], "o-", label="process CPU % of usable cores")
    ax.plot(ns, [100 * r.pressure_mean for r in results], "s--", label="mean pressure %")
    ax.set(title="CPU", xlabel="streams", ylim=(0, 110))
    ax.legend()
    ax = axes[1][1]
    mean_tier = [sum(i * s for i, s in r.tier_seconds.items()) / max(sum(r.tier_seconds.values()), 1e-9)
                 for r in results]
    ax.plot(ns, mean_tier, "o-", label="time-weighted mean tier")
    ax.plot(ns, [r.tier_end for r in results], "s--", label="tier at end")
    ax.set(title="Tier chosen (0 = preferred)", xlabel="streams")
    ax.legend()
    for a in axes.flat:
        a.grid(alpha=0.3)
        a.set_xticks(ns)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,2,4,8,12", help="comma-separated stream counts")
    ap.add_argument("--seconds", type=float, default=30.0, help="audio per stream and run")
    ap.add_argument("--no-tiers", action="store_true", help="stay on tier 0 (the controller only observes)")
    ap.add_argument("--plot", type=Path, default=Path("artifacts/concurrency.png"))
    ap.add_argument("--max-batch", type=int, help="finals decoded in one batch at most (1: never; default: the "
                    "runtime's)")
    ap.add_argument("--batch-partials", action="store_true", help="batch partials of different streams too")
    ap.add_argument("--workers", type=int, default=0, help="inference threads (0: the runtime's default)")
    ap.add_argument("--stages", action="store_true", help="stamp each final's stages and print where time goes")
    ap.add_argument("--single", type=int, help=argparse.SUPPRESS)  # child mode: one N, JSON on stdout
    ns = ap.parse_args()
    settings = WorkerSettings.from_env()
    if ns.single is not None:
        cap_arenas()  # as `livenexus-worker run` does before its threads start
        clips = [synthesize(s) for s in SENTENCES]
        stages.enable(ns.stages)
        print(json.dumps(asdict(run(ns.single, clips, ns.seconds, settings, not ns.no_tiers, ns.max_batch,
                                    ns.batch_partials, ns.workers))))
        return 0
    results = []
    for n in (int(x) for x in ns.streams.split(",")):
        print(f"running {n} stream(s) for {ns.seconds:.0f} s ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--single", str(n), "--seconds", str(ns.seconds)]
        cmd += ["--no-tiers"] if ns.no_tiers else []
        cmd += ["--max-batch", str(ns.max_batch)] if ns.max_batch is not None else []
        cmd += ["--batch-partials"] if ns.batch_partials else []
        cmd += ["--workers", str(ns.workers)] if ns.workers else []
        cmd += ["--stages"] if ns.stages else []
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                             text=True, timeout=4 * ns.seconds + 600).stdout
        data = json.loads(out.strip().splitlines()[-1])
        data["tier_seconds"] = {int(k): v for k, v in data["tier_seconds"].items()}
        results.append(RunResult(**data))
    cores = WorkerMetrics().sampler.usable_cores
    print(f"{cores:g} usable cores; ladder: " + ", ".join(f"{i}={t.name}" for i, t in enumerate(settings.tiers)))
    print(table(results, settings))
    ns.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(results, ns.plot, f"LiveNexus concurrency, {cores:g} cores, {ns.seconds:.0f} s per run"
         + (" (tiers fixed)" if ns.no_tiers else ""))
    print(f"plot: {ns.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
