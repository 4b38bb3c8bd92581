"""Autoscaling on vs off on the real local node: one speaker, then four more join.

    .venv/bin/python benchmarks/autoscale_compare.py [--modes on,off] [--solo 30] [--load 120]
                                                     [--start-cpu 500m] [--max-cpu 2] [--recover-s 2.0]

Starts this machine's test node (tests/servers/node.py, root, /run/livenexus-node.lock), imports this checkout's
images and installs the chart exactly as tests/e2e does (tests/e2e/conftest.py: local_target, install). Per mode
a TranscriptionRoom starts at --start-cpu (its CFS quota); with ``on`` it autoscales up to --max-cpu with the
chart's default steps and windows, with ``off`` it keeps its start CPU and only its tier ladder can react.
Speaker s0 talks alone for --solo seconds, then s1..s4 join and all five talk for --load seconds: slices of the
synthetic meeting (benchmarks/_meeting.py, noise at -40 dBFS so pauses exist), each bot its own slice, cut at
sentence boundaries. A listener stamps every final; the worker's /metrics, the pod's CPU limit and the room's
status.autoscaling are sampled every second.

Per mode (times in seconds from the moment the four joined): final lag per sentence (its audio end → all of
its words in finals, as _meeting.score defines it) p50/p95 over the sentences that end during the load,
sentences never finalised, WER of each speaker's finals against its slice of the script (pooled by words),
the recovery time, the tier timeline and the resize timeline. Recovery: the rolling p50 of final lag (the
sentences that ended in the last --window seconds; an unfinalised one counts as infinite) is under
--recover-s from that sentence on until the load ends; 0 when it never went over, None when it never
came back. Numbers, not assertions; JSON to benchmarks/out/autoscale-compare-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _meeting import Layout, Meeting, build, slice_meeting  # noqa: E402
from _score import Capture, Emission, pct, rolling_recovery, score  # noqa: E402
from livenexus_worker.core.audio import SAMPLE_RATE  # noqa: E402

SPEAKERS = 5
FRAME = SAMPLE_RATE // 50
POLL_S = 2.0


@dataclass
class Options:
    """One comparison run."""

    solo_s: float = 20.0
    """Seconds s0 speaks alone before the four others join."""
    load_s: float = 90.0
    """Seconds all five speak."""
    start_cpu: str = "500m"
    """CPU request = limit the room's pod starts with (the autoscaler's minCpu)."""
    max_cpu: str = "2"
    """The autoscaler's maxCpu."""
    recover_s: float = 2.0
    """Final-lag p50 under which latency counts as recovered."""
    window_s: float = 15.0
    """Width of the rolling window of sentence ends for the recovery p50."""


@dataclass
class ModeResult:
    """What one mode produced; times are seconds from the four speakers' join."""

    mode: str
    final_p50: float
    final_p95: float
    unfinalised: int
    sentences: int
    wer: float
    recovered_at: float | None
    peak_rolling_p50: float
    tiers: list[tuple[float, str]]
    """(t, tier name) at the start and at every change."""
    resizes: list[tuple[float, str, str | None]]
    """(t, pod CPU limit, status.autoscaling.cpu) at the start and at every change of either."""
    per_speaker: dict[str, dict[str, float]]
    lags: list[tuple[float, float | None]] = field(default_factory=list)
    """(sentence end, final lag) of every sentence, for the JSON."""
    load_avg: tuple[float, float] = (0.0, 0.0)
    """1-minute load average of the host at the join and at the end of the load."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Every sample of the sampler, ``at`` relative to the join."""


def slices(m: Meeting, opts: Options) -> list[Meeting]:
    """s0: from the start for solo + load; s1..s4: load-long slices spread over the rest of the meeting."""
    spare = max(0.0, m.duration_s - opts.load_s)
    return [slice_meeting(m, 0.0, opts.solo_s + opts.load_s),
            *(slice_meeting(m, spare * k / SPEAKERS, opts.load_s) for k in range(1, SPEAKERS))]


def manifest(name: str, ns: str, secret: str, lk_url: str, mode: str, opts: Options) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "room": name,
        "livekit": {"url": lk_url, "credentialsSecretRef": {"name": secret}},
        "resources": {"requests": {"cpu": opts.start_cpu, "memory": "512Mi"},
                      "limits": {"cpu": opts.start_cpu, "memory": "2Gi"}},
        # The chart's default steps and windows: what a platform team gets with enabled: true.
        "autoscaling": {"enabled": mode == "on", "minCpu": opts.start_cpu, "maxCpu": opts.max_cpu},
    }
    return {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionRoom",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


class Sampler(threading.Thread):
    """Every second: the worker's tier, the pod's CPU limit and status.autoscaling.cpu, stamped."""

    def __init__(self, inst: Any, name: str, pod: str, base: str) -> None:
        super().__init__(daemon=True, name="sampler")
        self.inst, self.name, self.pod, self.base = inst, name, pod, base
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from livenexus_operator.scrape import parse_worker_metrics

        t, ns = self.inst.target, self.inst.namespace
        while not self.halt.is_set():
            row: dict[str, Any] = {"at": time.monotonic(), "load1": os.getloadavg()[0]}
            # A failed read is a gap in its own timeline, not in the other one nor the end of the run.
            try:
                with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as r:
                    st = parse_worker_metrics(r.read().decode())
                row.update(tier=st.tier_name, speakers=st.active_speakers, lag_s=st.lag_seconds,
                           cpu_ratio=st.cpu_ratio)
            except Exception as e:
                row["metrics_error"] = repr(e)[:200]
            try:
                # One kubectl a sample: on a 2-core machine each one costs a visible slice of a core.
                pod, room = t.get("-n", ns, f"pod/{self.pod}", f"troom/{self.name}")["items"]
                row["limit"] = pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]
                row["applied"] = ((room.get("status") or {}).get("autoscaling") or {}).get("cpu")
            except Exception as e:
                row["kube_error"] = repr(e)[:200]
            self.samples.append(row)
            self.halt.wait(POLL_S)


def load_at(samples: list[dict[str, Any]], at: float) -> float:
    """The host's 1-minute load average in the sample nearest ``at``."""
    return round(min(samples, key=lambda s: abs(s["at"] - at))["load1"], 1) if samples else math.nan


def changes(samples: list[dict[str, Any]], keys: tuple[str, ...], t_join: float) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for s in samples:
        if any(k not in s for k in keys):
            continue
        cur = tuple(s.get(k) for k in keys)
        if not out or out[-1][1:] != cur:
            out.append((round(s["at"] - t_join, 1), *cur))
    return out


async def play_logged(bot: Any, audio: np.ndarray) -> np.ndarray:
    """Like SpeakerBot.play, in 20 ms frames, returning when each frame went out: a starved benchmark process
    sends late, and a sentence's lag must start when its last frame was sent, not when it was due."""
    from livekit import rtc

    sent = np.zeros(audio.shape[0] // FRAME + 1)
    t0 = time.monotonic()
    for k, i in enumerate(range(0, audio.shape[0], FRAME)):
        chunk = np.zeros(FRAME, dtype=np.int16)
        piece = audio[i : i + FRAME]
        chunk[: piece.shape[0]] = piece
        await bot.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME))
        sent[k] = time.monotonic()
        delay = t0 + (i + FRAME) / SAMPLE_RATE - sent[k]
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def talk(lk: Any, room: str, parts: list[Meeting], opts: Options
               ) -> tuple[list[Any], list[np.ndarray], float]:
    """Plays the slices; returns every transcript heard, when each bot sent each frame and the join time."""
    from livenexus_dev.demo.bots import Listener, SpeakerBot

    listener = await Listener.join(lk.url, lk.api_key, lk.api_secret, room, identity="cmp-listener")
    bots = [await SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, room, identity="s0")]
    sent: list[np.ndarray] = [np.zeros(0)] * SPEAKERS
    try:
        await bots[0].silence(2.0)  # the worker subscribes before the speech starts

        async def play(i: int) -> None:
            sent[i] = await play_logged(bots[i], parts[i].audio)
            await bots[i].silence(3.0)

        first = asyncio.create_task(play(0))
        await asyncio.sleep(opts.solo_s)
        t_join = time.monotonic()
        bots += await asyncio.gather(*(SpeakerBot.join(lk.url, lk.api_key, lk.api_secret, room, identity=f"s{k}")
                                       for k in range(1, SPEAKERS)))
        await asyncio.gather(first, *(play(k) for k in range(1, SPEAKERS)))
        # Settle: the backlog drains until no new final came for 15 s (at most 120 s).
        last, n, deadline = time.monotonic(), 0, time.monotonic() + 120
        while time.monotonic() < deadline and time.monotonic() - last < 15:
            await asyncio.sleep(1.0)
            if len(listener.finals()) != n:
                n, last = len(listener.finals()), time.monotonic()
        return list(listener.heard), sent, t_join
    finally:
        for b in bots:
            await b.close()
        await listener.close()


def run_mode(inst: Any, mode: str, parts: list[Meeting], opts: Options) -> ModeResult:
    from tests.e2e.conftest import SECRET, wait_ready_pods


    t, ns, lk = inst.target, inst.namespace, inst.livekit
    name = f"cmp-{mode}"
    selector = f"app.kubernetes.io/name=livenexus-worker,app.kubernetes.io/instance={name}"
    t.apply(manifest(name, ns, SECRET, lk.url, mode, opts))
    try:
        (pod,) = wait_ready_pods(inst, selector, timeout=300)
        (svc,) = t.get("service", "-n", ns, "-l", selector)["items"]
        with t.service_url(ns, svc["metadata"]["name"], 9300) as base:
            sampler = Sampler(inst, name, pod["metadata"]["name"], base)
            sampler.start()
            try:
                heard, sent, t_asked = asyncio.run(talk(lk, name, parts, opts))
            finally:
                sampler.halt.set()
                sampler.join(10)
    finally:
        t.kubectl("delete", "troom", "-n", ns, name, "--wait=true", "--timeout=120s", check=False, timeout=180)
    # The load starts when the four start sending, not when they were asked to join: on a starved machine
    # their joins took minutes (the first run here: 400 s), and everything is timed from this moment.
    t_join = min(float(sent[k][0]) for k in range(1, SPEAKERS)) - FRAME / SAMPLE_RATE
    print(f"[{mode}] the four joined and started sending {t_join - t_asked:.1f} s after being asked", flush=True)
    lags: list[tuple[float, float | None]] = []
    per: dict[str, dict[str, float]] = {}
    ref_words = 0
    wer_words = 0.0
    for k, part in enumerate(parts):
        who = f"s{k}"
        hs = [h for h in heard if h.via == "data" and h.speaker == who]
        t0 = float(sent[k][0]) - FRAME / SAMPLE_RATE
        cap = Capture(who, t0, [Emission(h.at, h.segment_id, h.text, h.final,
                                         float(h.attributes.get("start", 0.0))) for h in hs])
        rows, w = score(part, cap)  # its lags start when a sentence's end was due (t0 + offset) ...
        ends = [float(sent[k][s.end // FRAME]) for s in part.sentences]  # ... ours when it was sent
        rows = [replace(r, final_lag_s=None if r.final_lag_s is None
                        else r.final_lag_s - (e - t0 - s.end / SAMPLE_RATE))
                for r, e, s in zip(rows, ends, part.sentences, strict=True)]
        n = len(part.reference.split())
        ref_words, wer_words = ref_words + n, wer_words + w * n
        lags += [(e - t_join, r.final_lag_s) for e, r in zip(ends, rows, strict=True)]
        fin = [r.final_lag_s for r in rows if r.final_lag_s is not None]
        due = t0 + (np.arange(sent[k].shape[0]) + 1) * FRAME / SAMPLE_RATE
        per[who] = {"wer": round(w, 3), "final_p50": round(pct(fin, 50), 2), "sentences": len(rows),
                    "unfinalised": sum(r.final_lag_s is None for r in rows),
                    "sent_late_max_s": round(float(np.max(sent[k] - due)), 2)}
    # The load lasts until the last of the four sent its last frame (later than --load if the bots ran late).
    load_end = max(float(np.max(sent[k])) for k in range(1, SPEAKERS)) - t_join
    during = [lag for e, lag in lags if 0.0 <= e <= load_end]
    fin = [lag for lag in during if lag is not None]
    rec, peak = rolling_recovery(lags, 0.0, load_end, opts.recover_s, opts.window_s)
    samples = sampler.samples
    return ModeResult(
        mode, round(pct(fin, 50), 2), round(pct(fin, 95), 2), len(during) - len(fin), len(during),
        round(wer_words / max(1, ref_words), 3), None if rec is None else round(rec, 1), round(peak, 2),
        [(a, b) for a, b in changes(samples, ("tier",), t_join)],
        [(a, b, c) for a, b, c in changes(samples, ("limit", "applied"), t_join)],
        per, sorted((round(e, 2), None if lag is None else round(lag, 2)) for e, lag in lags),
        (load_at(samples, t_join), load_at(samples, t_join + load_end)),
        [{**s, "at": round(s["at"] - t_join, 1)} for s in samples])


def report(results: list[ModeResult], opts: Options) -> str:
    lines = [f"autoscale comparison: s0 alone {opts.solo_s:g} s, then {SPEAKERS} speakers for {opts.load_s:g} s; "
             f"start CPU {opts.start_cpu}, maxCpu {opts.max_cpu}; times from the join",
             f"{'':44}" + "".join(f"{r.mode:>16}" for r in results)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label:44}" + "".join(f"{c:>16}" for c in cells))

    row("final lag p50 during the load (s)", [f"{r.final_p50:.2f}" for r in results])
    row("final lag p95 during the load (s)", [f"{r.final_p95:.2f}" for r in results])
    row("unfinalised sentences (of those in the load)", [f"{r.unfinalised}/{r.sentences}" for r in results])
    row(f"recovered: rolling p50 < {opts.recover_s:g} s from (s)",
        ["never" if r.recovered_at is None else f"{r.recovered_at:.1f}" for r in results])
    row(f"peak rolling p50 ({opts.window_s:g} s window)", [f"{r.peak_rolling_p50:.2f}" for r in results])
    row("WER of finals vs script (%)", [f"{100 * r.wer:.1f}" for r in results])
    row("host load average at join / end", [f"{a:.1f}/{b:.1f}" for a, b in (r.load_avg for r in results)])
    for r in results:
        lines.append(f"[{r.mode}] tiers: " + ", ".join(f"{t:+.0f}s {n}" for t, n in r.tiers))
        lines.append(f"[{r.mode}] CPU limit / applied: " + ", ".join(f"{t:+.0f}s {a}/{b}" for t, a, b in r.resizes))
        lines.append(f"[{r.mode}] per speaker: " + "; ".join(
            f"{k} WER {v['wer']:.2f} p50 {v['final_p50']:.1f} s unfinalised {v['unfinalised']:.0f}/{v['sentences']:.0f}"
            f" sent late <= {v['sent_late_max_s']:.1f} s"
            for k, v in r.per_speaker.items()))
    return "\n".join(lines)


def newest_images() -> Any:
    """The last worker and operator archives hack/build-images.sh wrote (a rebuild takes many minutes here)."""
    from tests.servers.images import CACHE, Images

    def newest(kind: str) -> Path:
        found = sorted(CACHE.glob(f"{kind}-*.tar"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SystemExit(f"no {kind} image archive in {CACHE}: run without --reuse-images once")
        return found[-1]

    w, o = newest("worker"), newest("operator")
    return Images(f"localhost/livenexus-worker:{w.stem.rpartition('-')[2]}", w,
                  f"localhost/livenexus-operator:{o.stem.rpartition('-')[2]}", o, False, 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="on,off", help="comma-separated, in order: on, off")
    d = Options()
    ap.add_argument("--solo", type=float, default=d.solo_s)
    ap.add_argument("--load", type=float, default=d.load_s)
    ap.add_argument("--start-cpu", default=d.start_cpu)
    ap.add_argument("--max-cpu", default=d.max_cpu)
    ap.add_argument("--recover-s", type=float, default=d.recover_s)
    ap.add_argument("--window", type=float, default=d.window_s)
    ap.add_argument("--reuse-images", action="store_true",
                    help="the newest image archives already built, even if the checkout changed since")
    a = ap.parse_args()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        ap.error("--modes takes on and/or off")
    if not (5 <= a.solo <= 120 and 20 <= a.load <= 170):
        ap.error("--solo must be 5..120 s and --load 20..170 s (the meeting is about 190 s long)")
    opts = Options(a.solo, a.load, a.start_cpu, a.max_cpu, a.recover_s, a.window)
    meeting = build(Layout(noise_dbfs=-40.0))
    parts = slices(meeting, opts)

    from tests.e2e.conftest import install, local_target
    from tests.servers.node import KubeNode

    # SIGTERM (and SIGINT, which a background job ignores) unwind through the finally: the node is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node = KubeNode()
    results: list[ModeResult] = []
    try:
        node.start()
        with install(local_target(node, newest_images() if a.reuse_images else None)) as inst:
            for mode in modes:
                print(f"mode {mode} ...", flush=True)
                results.append(run_mode(inst, mode, parts, opts))
                print(report(results[-1:], opts), flush=True)
    finally:
        node.stop()
    text = report(results, opts)
    print(text)
    out = ROOT / "benchmarks" / "out" / f"autoscale-compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"options": asdict(opts), "results": [asdict(r) for r in results],
                               "report": text}, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
