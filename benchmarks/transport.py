"""Transport breakdown: where the time goes between the speaker's last voiced frame and the listener's final.

    .venv/bin/python benchmarks/transport.py                          # 30 ms frames, 6 sentences + a stretch
    .venv/bin/python benchmarks/transport.py --frame-ms 10 20 30      # one worker per frame size, same server
    .venv/bin/python benchmarks/transport.py --worker-src HEAD~3      # beside the code of another commit

Starts livekit-server on 127.0.0.1 and, per variant, a real worker (`livenexus-worker run`, with
LIVENEXUS_TRACE_STAGES=1 and LIVENEXUS_FRAME_MS), a speaker bot and a listener. The bot says separated
sentences (2.5 s of silence after each) and one continuous stretch (sentences 150 ms apart). Every frame's
send time is recorded; the worker stamps each transcript's stages (CLOCK_MONOTONIC, shared by the processes of
this machine: data message ``trace`` and its "stage trace" log lines); the listener stamps arrival.

Per final, in ms (p50 / p95 over the finals of the variant):
  send→ref       bot sends the frame with the last voiced audio → a receiver doing nothing else (the listener's
                 own AudioStream of the speaker) gets it: LiveKit's and the machine's share of send→recv
  ref→recv       the reference receiver got it → the worker got it (the worker's own share of send→recv)
  send→recv      bot sends the frame with the last voiced audio → the worker's AudioStream yields it
  recv→push      event loop → the frames thread pushes it into the pipeline
  push→end       VAD hangover: silence until the end is decided (design, 250 ms by default)
  queue          decode job queued → started (behind partials or other finals)
  decode         decode started → finished (speculative finals start inside the hangover)
  ready→emit     max(end decided, decode finished) → emitted by the pipeline
  emit→pub       emitted (inference or frames thread) → the publisher starts publishing (event loop)
  pub→data       publish started → the data message's publish returned (also text stream, transcription)
  data→heard     data message publish returned → listener got it (negative: it arrived before the SDK returned)
  total          send → heard
  overhead       total − hangover − decode on the critical path (decode that ended after the end was decided)
  worker         the same from recv to the data message's publish returned: the worker's own share
The worker's WebRTC receive jitter buffer (inbound-rtp stats it logs while tracing) is printed per variant.
Finals inside the stretch (commits) have no bot frame to join, their rows start at recv. Numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from livekit import rtc

from _ours import start_room_worker, worker_source
from livenexus_dev.demo.bots import FRAME, Heard, Listener, SpeakerBot
from livenexus_dev.demo.run import wait_worker_joined
from livenexus_dev.livekit_server import LiveKitServer
from livenexus_dev.tts import synthesize
from livenexus_worker.core.audio import SAMPLE_RATE

SENTENCES = [
    "The build finished without errors.",
    "Please review the pull request before lunch.",
    "We will deploy the new version on Thursday morning.",
    "The dashboard shows a small increase in latency.",
    "Let us schedule a short meeting with the design team.",
    "Thanks everyone, that is all for today.",
]
TIERS = '[{"model":"base","computeType":"int8","beamSize":5,"partialIntervalMs":250}]'
"""One pinned tier: the default ladder steps down under the machine's load, which would change decode times."""
TRACE_LINE = re.compile(r"stage trace (\{.*\})\s*$")
JITTER_LINE = re.compile(r"stage jitter (\{.*\})\s*$")


def trim(audio: np.ndarray) -> np.ndarray:
    """The sentence from its first to its last loud sample, padded with zeros to whole 10 ms frames."""
    loud = np.nonzero(np.abs(audio) > 300)[0]
    cut = audio[loud[0] : loud[-1] + 1]
    return np.concatenate([cut, np.zeros(-cut.shape[0] % FRAME, dtype=np.int16)])


@dataclass
class Spoken:
    """One thing the bot said: when its first and its last voiced frame were sent."""

    kind: str
    """'separated' or 'stretch'."""
    began: float
    """Monotonic time its first frame was handed to the SDK."""
    sent: float
    """Monotonic time the frame with its last voiced audio was handed to the SDK."""


@dataclass
class Variant:
    name: str
    env: dict[str, str]
    rows: list[dict[str, float]] = field(default_factory=list)
    partials: list[dict[str, float]] = field(default_factory=list)
    jitter: dict[str, float] = field(default_factory=dict)
    """The worker's receive jitter buffer over the run: mean delay and last target (ms)."""
    ref_jitter: dict[str, float] = field(default_factory=dict)
    """The same of the reference receiver (over its whole subscription)."""


class Reference:
    """The listener's own subscription to the speaker's audio, a receiver that does nothing else: when each
    10 ms frame arrived and how loud it was. Its delay is LiveKit's and the machine's, not the worker's."""

    def __init__(self, room: rtc.Room) -> None:
        self.frames: list[tuple[float, int]] = []
        self.tracks: list[rtc.Track] = []
        room.on("track_subscribed", self._on_track)

    def _on_track(self, track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.tracks.append(track)
            asyncio.get_running_loop().create_task(self._consume(track))

    async def jitter(self) -> dict[str, float]:
        """This receiver's jitter buffer over the run: mean delay and mean target (ms)."""
        for st in await self.tracks[0].get_stats() if self.tracks else []:
            if st.HasField("inbound_rtp"):
                ib = st.inbound_rtp.inbound
                n = max(1, ib.jitter_buffer_emitted_count)
                return {"mean": 1000 * ib.jitter_buffer_delay / n, "target": 1000 * ib.jitter_buffer_target_delay / n}
        return {}

    async def _consume(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=10):
            self.frames.append((time.monotonic(), int(np.abs(np.frombuffer(ev.frame.data, np.int16)).max())))

    def last_loud(self, began: float, sent: float) -> float | None:
        """Arrival of the last loud frame of what was sent between ``began`` and ``sent`` (the next utterance
        starts at least a pause later)."""
        loud = [at for at, peak in self.frames if peak > 300 and began < at < sent + 2.0]
        return loud[-1] if loud else None


async def say(bot: SpeakerBot, audio: np.ndarray) -> float:
    """Send ``audio`` in real time, 10 ms frames; returns when its last frame was handed over."""
    t0, last = time.monotonic(), 0.0
    for i in range(0, audio.shape[0], FRAME):
        frame = rtc.AudioFrame(np.ascontiguousarray(audio[i : i + FRAME]).tobytes(), SAMPLE_RATE, 1, FRAME)
        await bot.source.capture_frame(frame)
        last = time.monotonic()
        delay = t0 + (i + FRAME) / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return last


def read_traces(log: Path) -> dict[tuple[str, float], dict[str, float]]:
    """The worker's stage-trace log lines, by (segment id, emit stamp)."""
    out: dict[tuple[str, float], dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = TRACE_LINE.search(line)
        if m:
            rec = json.loads(m.group(1))
            trace = rec["trace"]
            out[(rec["segmentId"], round(trace.get("emit", 0.0), 6))] = trace
    return out


def read_jitter(log: Path) -> dict[str, float]:
    """Mean jitter-buffer delay between the worker's first and last sample, and its last target (ms)."""
    samples = [json.loads(m.group(1)) for line in log.read_text(errors="replace").splitlines()
               if (m := JITTER_LINE.search(line))]
    if len(samples) < 2 or samples[-1]["emitted"] <= samples[0]["emitted"]:
        return {}
    a, b = samples[0], samples[-1]
    return {"mean": 1000 * (b["delay_s"] - a["delay_s"]) / (b["emitted"] - a["emitted"]),
            "target": 1000 * (b["target_s"] - a["target_s"]) / (b["emitted"] - a["emitted"]),
            "concealed_s": (b["concealed"] - a["concealed"]) / 48000}


def stages_of(t: dict[str, float], heard: float, sent: float | None) -> dict[str, float]:
    ms = {k: v * 1000 for k, v in t.items()}
    row: dict[str, float] = {}
    if "recv" in ms:
        row["recv→push"] = ms["push"] - ms["recv"]
        if sent is not None:
            row["send→recv"] = ms["recv"] - sent * 1000
    if "end" in ms and "push" in ms:
        row["push→end"] = ms["end"] - ms["push"]
    row["queue"] = ms["start"] - ms["queued"]
    row["decode"] = ms["decoded"] - ms["start"]
    ready = max(ms["decoded"], ms.get("end", ms["decoded"]))
    row["ready→emit"] = ms["emit"] - ready
    row["emit→pub"] = ms["pub"] - ms["emit"]
    for ch in ("data", "text", "transcription"):
        if ch in ms:
            row[f"pub→{ch}"] = ms[ch] - ms["pub"]
    if "data" in ms:
        row["data→heard"] = heard * 1000 - ms["data"]
    start = sent * 1000 if sent is not None else ms.get("recv")
    if start is not None:
        row["total"] = heard * 1000 - start
        critical_decode = max(0.0, ms["decoded"] - max(ms.get("end", ms["start"]), ms["start"]))
        row["overhead"] = row["total"] - row.get("push→end", 0.0) - critical_decode
        if "data" in ms and "recv" in ms:
            row["worker"] = ms["data"] - ms["recv"] - row.get("push→end", 0.0) - critical_decode
    return row


async def run_variant(server: LiveKitServer, v: Variant, room: str, sentences: int, stretch: int,
                      threads: int, verbose: bool = False, pause_s: float = 2.5) -> None:
    log = server.workdir / f"worker-{room}.log"
    env = {"LIVENEXUS_TRACE_STAGES": "1", "LIVENEXUS_TIERS": TIERS, **v.env}
    worker = start_room_worker(env, server.url, server.api_key, server.api_secret, room, threads, log)
    spoken: list[Spoken] = []
    try:
        await wait_worker_joined(server, room, worker, asyncio.Event())
        listener = await Listener.join(server.url, server.api_key, server.api_secret, room)
        reference = Reference(listener.room)
        bot = await SpeakerBot.join(server.url, server.api_key, server.api_secret, room, "speaker")
        await say(bot, np.zeros(SAMPLE_RATE * 3 // 2, dtype=np.int16))
        audio = [trim(synthesize(s)) for s in SENTENCES]
        gap = np.zeros(SAMPLE_RATE * 3 // 20, dtype=np.int16)  # 150 ms inside the stretch
        pause = np.zeros(int(SAMPLE_RATE * pause_s), dtype=np.int16)
        for i in range(sentences):
            began = time.monotonic()
            spoken.append(Spoken("separated", began, await say(bot, audio[i % len(audio)])))
            await say(bot, pause)
        if stretch:
            began = time.monotonic()
            for i in range(stretch - 1):
                await say(bot, np.concatenate([audio[i % len(audio)], gap]))
            spoken.append(Spoken("stretch", began, await say(bot, audio[(stretch - 1) % len(audio)])))
            await say(bot, pause)
        await asyncio.sleep(1.0)
        v.ref_jitter = await reference.jitter()
        await bot.close()
        await listener.close()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    traces = read_traces(log)
    v.jitter = read_jitter(log)
    finals = [(h, traces.get((h.segment_id, round((h.attributes.get("trace") or {}).get("emit", 0.0), 6)),
                             h.attributes.get("trace") or {})) for h in listener.heard if h.via == "data" and h.final]
    owned: dict[int, list[tuple[Heard, dict[str, float], float]]] = {}
    for h, full in finals:
        # Which utterance: by when its last voiced frame reached the worker (traced) or when it was heard.
        at = full.get("recv", h.at)
        owner = max((k for k, sp in enumerate(spoken) if sp.began - 0.2 <= at), default=None)
        if owner is not None:
            owned.setdefault(owner, []).append((h, full, at))
    for k, got in owned.items():
        sp = spoken[k]
        last_at = max(at for _h, _f, at in got)
        for h, full, at in got:
            # The final holding the utterance's end: the latest one, from audio after its last frame was sent.
            last = at == last_at and at >= sp.sent - 0.3
            if "pub" in full and "emit" in full:
                row = stages_of(full, h.at, sp.sent if last else None)
            elif last:  # a worker without tracing (an older commit): the listener's view only
                row = {"total": (h.at - sp.sent) * 1000}
            else:
                continue
            row["kind"] = {"separated": 0.0, "stretch": 1.0}[sp.kind] if last else 2.0
            if last and (ref := reference.last_loud(sp.began, sp.sent)) is not None:
                row["send→ref"] = (ref - sp.sent) * 1000
                if "recv" in full:
                    row["ref→recv"] = (full["recv"] - ref) * 1000
            v.rows.append(row)
            if verbose:
                print(f"  {sp.kind:<9} {'last' if last else 'commit':<6} {h.segment_id[-12:]:>12} "
                      + " ".join(f"{c}={row[c]:.0f}" for c in COLUMNS if c in row) + f"  {h.text!r}")
    for h in listener.heard:
        if h.via == "data" and not h.final and "trace" in h.attributes:
            wire = h.attributes["trace"]
            full = traces.get((h.segment_id, round(wire.get("emit", 0.0), 6)), wire)
            if "pub" in full:
                v.partials.append(stages_of(full, h.at, None))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(server: LiveKitServer, v: Variant, room: str, speakers: int, seconds: float) -> float:
    """The worker's CPU per second while ``speakers`` bots send silence: the receive path's cost, no decoding."""
    log = server.workdir / f"worker-{room}.log"
    worker = start_room_worker({"LIVENEXUS_TIERS": TIERS, **v.env}, server.url, server.api_key, server.api_secret,
                               room, 0, log)
    try:
        await wait_worker_joined(server, room, worker, asyncio.Event())
        bots = [await SpeakerBot.join(server.url, server.api_key, server.api_secret, room, f"quiet-{i}")
                for i in range(speakers)]
        quiet = np.zeros(int(SAMPLE_RATE * (seconds + 4)), dtype=np.int16)
        sending = [asyncio.create_task(say(b, quiet)) for b in bots]
        await asyncio.sleep(3)  # subscribed, streams open
        c0, t0 = cpu_s(worker.pid), time.monotonic()
        await asyncio.sleep(seconds)
        used = (cpu_s(worker.pid) - c0) / (time.monotonic() - t0)
        await asyncio.gather(*sending)
        for b in bots:
            await b.close()
        return used
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


COLUMNS = ["send→ref", "ref→recv", "send→recv", "recv→push", "push→end", "queue", "decode", "ready→emit", "emit→pub",
           "pub→data", "pub→text", "pub→transcription", "data→heard", "total", "overhead", "worker"]


def report(variants: list[Variant]) -> None:
    kinds = {0.0: "separated", 1.0: "stretch end", 2.0: "commits"}
    for v in variants:
        print(f"\n== {v.name}: {len(v.rows)} finals, {len(v.partials)} partials (ms, p50 / p95) ==")
        if v.jitter:
            print("worker's receive jitter buffer: mean delay {mean:.0f} ms, mean target {target:.0f} ms, "
                  "{concealed_s:.2f} s concealed".format(**v.jitter))
        if v.ref_jitter:
            print("reference receiver's jitter buffer: mean delay {mean:.0f} ms, mean target {target:.0f} ms"
                  .format(**v.ref_jitter))
        groups = [(kinds[k], [r for r in v.rows if r["kind"] == k]) for k in kinds] + [("partials", v.partials)]
        print(f"{'stage':<18}" + "".join(f"{name:>20}" for name, _ in groups))
        for col in COLUMNS:
            cells = []
            for _name, rows in groups:
                vals = [r[col] for r in rows if col in r]
                cells.append(f"{pct(vals, 50):8.1f} / {pct(vals, 95):7.1f}  ({len(vals):2d})" if vals else "-")
            print(f"{col:<18}" + "".join(f"{c:>20}" for c in cells))


async def main_async(args: argparse.Namespace) -> int:
    variants = [Variant(f"frame {ms} ms", {"LIVENEXUS_FRAME_MS": str(ms)}) for ms in args.frame_ms]
    for spec in args.env:
        extra = dict(kv.split("=", 1) for kv in spec.split(";") if kv)
        variants.append(Variant(f"frame {args.frame_ms[-1]} ms, {spec}",
                                {"LIVENEXUS_FRAME_MS": str(args.frame_ms[-1]), **extra}))
    for ref in args.worker_src:
        env, desc = worker_source(ref)
        variants.append(Variant(f"{ref}: {desc}", {**env, "LIVENEXUS_FRAME_MS": str(args.frame_ms[-1])}))
    server = LiveKitServer().start()
    try:
        if args.idle_cpu:
            for i, v in enumerate(variants):
                used = await idle_cpu(server, v, f"idle-{i}", args.idle_speakers, args.idle_cpu)
                print(f"{v.name}: worker CPU {used:.3f} cores with {args.idle_speakers} tracks of silence")
            return 0
        for i, v in enumerate(variants):
            print(f"running {v.name} ...", flush=True)
            await run_variant(server, v, f"transport-{i}", args.sentences, args.stretch, args.threads,
                              args.verbose)
    finally:
        server.stop()
    report(variants)
    if args.json:
        Path(args.json).write_text(json.dumps({v.name: {"finals": v.rows, "partials": v.partials}
                                               for v in variants}, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame-ms", type=int, nargs="+", default=[30], choices=(10, 20, 30))
    ap.add_argument("--sentences", type=int, default=6, help="separated sentences per variant")
    ap.add_argument("--stretch", type=int, default=4, help="sentences in the continuous stretch (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="LIVENEXUS_THREADS (0: all usable cores)")
    ap.add_argument("--worker-src", nargs="*", default=[], help="also run the worker of these commits")
    ap.add_argument("--env", nargs="*", default=[], help="also run variants with these worker settings, "
                    "each NAME=VALUE[;NAME=VALUE] (e.g. LIVENEXUS_THREADS=1)")
    ap.add_argument("--json", default="", help="write every row here")
    ap.add_argument("--idle-cpu", type=float, default=0.0, metavar="S",
                    help="instead: the worker's CPU over S seconds of silent tracks (the receive path's cost)")
    ap.add_argument("--idle-speakers", type=int, default=4, help="silent tracks for --idle-cpu")
    ap.add_argument("--verbose", action="store_true", help="print every final's stages and text")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
