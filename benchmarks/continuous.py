"""Continuous speech, like a meeting: our worker beside WhisperLive on the same audio, in the same run.

    .venv/bin/python benchmarks/continuous.py [--path file|livekit|both] [--minutes 3] [--no-peer] [--quick]
                                              [--worker-src worktree|GIT-REF] [--threads N] [--seed N]
    .venv/bin/python benchmarks/continuous.py --path file --file-audio RUN-logs/livekit-received.npy

The meeting (_meeting.py) is streamed in real time to each system in turn, never both at once (2 cores; how our
worker is run: _ours.py, the peer: _peer.py, scoring: _score.py):
  file:    `livenexus-worker transcribe <wav> --realtime --json` as a subprocess, every JSON line stamped on
           arrival; WhisperLive's server fed over its websocket by our client, every message stamped on arrival.
  livekit: livekit-server on 127.0.0.1, `livenexus-worker run` in the room, a SpeakerBot publishing the meeting
           and a Listener stamping every data message; then a bridge participant that subscribes to the same
           kind of track and forwards it to WhisperLive.
  --file-audio: the file path on what a LiveKit run's room delivered (after Opus and the jitter buffer),
           aligned to the meeting's sentences: that path's audio without its timing.
Per sentence (hypothesis words aligned to the script): final lag = its audio end → all its aligned words are in
finals; visible lag = its audio end → its last aligned word first shows in any transcript. Plus WER of the
finals (and of offline faster-whisper), CPU-s per audio-s and peak RSS of each system's process. Numbers only:
on a shared 2-core machine compare the two systems within one run. JSON goes to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from livekit import rtc

from _meeting import Layout, Meeting, build, cache_dir, recorded
from _ours import REPO, git, run_file_ours, start_room_worker, worker_source
from _peer import (
    Bridge,
    PeerClient,
    PeerServer,
    SpeakerTap,
    ensure_venv,
    host_busy_s,
    proc_cpu_s,
    proc_peak_rss_mib,
    stop,
)
from _score import Capture, Emission, SentenceScore, pct, score
from livenexus_worker.core.audio import SAMPLE_RATE

DRAIN_S = 5.0
"""Silence sent after the meeting (which already ends in 10 s of background noise)."""
SETTLE_S = (10.0, 40.0)
"""Then a run ends once no new final came for 10 s (WhisperLive completes a last segment after ~11 identical
re-decodes), or after 40 s."""


async def settle(finals: Callable[[], int]) -> None:
    """Wait until ``finals()`` stopped growing for SETTLE_S[0] seconds (at most SETTLE_S[1])."""
    quiet, limit = SETTLE_S
    end = time.monotonic() + limit
    n, since = finals(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        await asyncio.sleep(0.2)
        if finals() != n:
            n, since = finals(), time.monotonic()


def peer_finals(client: PeerClient) -> Callable[[], int]:
    return lambda: len({(e.key, e.text) for e in client.emissions() if e.final})


def run_file_peer(meeting: Meeting, py: Path, model_dir: Path, threads: int, logdir: Path) -> Capture:
    server = PeerServer(py, model_dir, threads, logdir / "whisperlive-file.log")
    client: PeerClient | None = None
    try:
        client = PeerClient(server.port, model_dir)
        cpu0, host0 = proc_cpu_s(server.proc.pid), host_busy_s()
        t0 = client.stream(meeting.audio, tail_s=DRAIN_S)
        asyncio.run(settle(peer_finals(client)))
        cpu1, rss = proc_cpu_s(server.proc.pid), proc_peak_rss_mib(server.proc.pid)
        others = (host_busy_s() - host0 - (cpu1 - cpu0)) / (time.monotonic() - t0)
        return Capture("whisperlive", t0, client.emissions(), cpu1 - cpu0, rss, others,
                       {"messages": len(client.messages)})
    finally:
        if client is not None:
            client.close()
        server.stop()


async def run_livekit(meeting: Meeting, env: dict[str, str], threads: int, peer_py: Path | None, model_dir: Path,
                      logdir: Path) -> list[Capture]:
    from livenexus_dev.demo.bots import Listener, SpeakerBot, participant_token
    from livenexus_dev.demo.run import wait_worker_joined
    from livenexus_dev.livekit_server import LiveKitServer

    server = LiveKitServer().start()
    caps: list[Capture] = []
    key, secret = server.api_key, server.api_secret
    try:
        room = "continuous-ours"
        worker = start_room_worker(env, server.url, key, secret, room, threads, logdir / "worker-livekit.log")
        try:
            await wait_worker_joined(server, room, worker, asyncio.Event(), timeout=180)
            listener = await Listener.join(server.url, key, secret, room, "bench-listener")
            received = Received(listener.room, "speaker")
            bot = await SpeakerBot.join(server.url, key, secret, room, "speaker")
            await bot.silence(2.0)  # the worker subscribes before the meeting starts
            cpu0, host0 = proc_cpu_s(worker.pid), host_busy_s()
            t0 = time.monotonic()
            with (logdir / "worker-livekit.log").open("a") as log:  # the clock of LNX_INF lines (monotonic)
                log.write(f"LNX_PLAY_START {t0}\n")
            await bot.play(meeting.audio)
            await bot.silence(DRAIN_S)
            await settle(lambda: len(listener.finals(speaker="speaker")))
            cpu1, rss = proc_cpu_s(worker.pid), proc_peak_rss_mib(worker.pid)
            others = (host_busy_s() - host0 - (cpu1 - cpu0)) / (time.monotonic() - t0)
            heard = [h for h in listener.heard if h.via == "data" and h.speaker == "speaker"]
            ems = [Emission(h.at, h.segment_id, h.text, h.final, float(h.attributes.get("start", 0.0))) for h in heard]
            tiers = Counter(str(h.attributes.get("tier", "")) for h in heard if h.final)
            np.save(logdir / RECEIVED, received.audio())
            await received.close()
            caps.append(Capture("ours", t0, ems, cpu1 - cpu0, rss, others, {"tiers_of_finals": dict(tiers)}))
            await bot.close()
            await listener.close()
        finally:
            stop(worker)
        if peer_py is None:
            return caps
        room = "continuous-peer"
        peer = PeerServer(peer_py, model_dir, threads, logdir / "whisperlive-livekit.log")
        client: PeerClient | None = None
        try:
            client = PeerClient(peer.port, model_dir)
            bridge = await Bridge(client, "speaker").join(
                server.url, participant_token(key, secret, room, "whisperlive-bridge", publish=False))
            bot = await SpeakerBot.join(server.url, key, secret, room, "speaker")
            await bot.silence(2.0)
            await asyncio.wait_for(bridge.flowing.wait(), 30)
            cpu0, host0 = proc_cpu_s(peer.proc.pid), host_busy_s()
            t0 = time.monotonic()
            await bot.play(meeting.audio)
            await bot.silence(DRAIN_S)
            await settle(peer_finals(client))
            cpu1, rss = proc_cpu_s(peer.proc.pid), proc_peak_rss_mib(peer.proc.pid)
            others = (host_busy_s() - host0 - (cpu1 - cpu0)) / (time.monotonic() - t0)
            caps.append(Capture("whisperlive", t0, client.emissions(), cpu1 - cpu0, rss, others,
                                {"messages": len(client.messages)}))
            await bot.close()
            await bridge.close()
        finally:
            if client is not None:
                client.close()
            peer.stop()
    finally:
        server.stop()
    return caps


class Received:
    """Records what a participant's subscription to ``speaker``'s microphone receives, as our worker asks
    for it (16 kHz mono): the audio after Opus and the jitter buffer, for an offline baseline of that path."""

    def __init__(self, room: rtc.Room, speaker: str) -> None:
        self._frames: list[np.ndarray] = []
        self.tap = SpeakerTap(room, speaker, self._frames.append)

    def audio(self) -> np.ndarray:
        return np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        await self.tap.close()


RECEIVED = "livekit-received.npy"
"""Where the audio our worker's room received is kept (in the run's log directory)."""


def offline(meeting: Meeting, model_dir: Path, threads: int, audio: np.ndarray | None = None,
            label: str = "the whole meeting") -> dict[str, object]:
    """Plain faster-whisper on the whole meeting: same model, int8, beam 5, no VAD (cached per audio). With
    ``audio``: on that recording of it instead (the meeting as received through LiveKit)."""
    from importlib.metadata import version

    from livenexus_worker.inference.textnorm import wer

    x = meeting.audio if audio is None else audio
    key = meeting.key if audio is None else hashlib.sha256(x.tobytes()).hexdigest()
    tag = json.dumps([key, str(model_dir), version("faster-whisper"), version("ctranslate2"), 5, "en"])
    path = cache_dir() / f"offline-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    from faster_whisper import WhisperModel

    print(f"offline faster-whisper on {label} ...", flush=True)
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
    t = time.monotonic()
    segments, _ = model.transcribe(x.astype(np.float32) / 32768.0, beam_size=5, language="en", vad_filter=False)
    text = " ".join(s.text.strip() for s in segments)
    res: dict[str, object] = {"wer": wer(meeting.reference, text), "wall_s": time.monotonic() - t, "text": text}
    path.write_text(json.dumps(res))
    return res


@dataclass
class Summary:
    """One system on one path."""

    system: str
    final_p50: float
    final_p95: float
    final_max: float
    visible_p50: float
    visible_p95: float
    eos_final_p50: float
    unfinalised: int
    skipped: int
    """Sentences none of whose words are in the finals."""
    merged: int
    """Sentence ends inside a final (not the meeting's last): :attr:`_score.SentenceScore.ends_a_final`."""
    wer: float
    cpu_per_audio_s: float
    rss_peak_mib: float
    others_cores: float
    info: dict[str, object]
    sentences: list[SentenceScore]
    emissions: list[dict[str, object]]


def summarize(meeting: Meeting, cap: Capture) -> Summary:
    rows, w = score(meeting, cap)
    fin = [r.final_lag_s for r in rows if r.final_lag_s is not None]
    vis = [r.visible_lag_s for r in rows if r.visible_lag_s is not None]
    eos = [r.final_lag_s for r in rows if r.end_of_stretch and r.final_lag_s is not None]
    return Summary(cap.system, pct(fin, 50), pct(fin, 95), max(fin, default=float("nan")), pct(vis, 50),
                   pct(vis, 95), pct(eos, 50), sum(r.final_lag_s is None for r in rows),
                   sum(r.final_words == 0 for r in rows), sum(not r.ends_a_final for r in rows[:-1]), w,
                   cap.cpu_s / meeting.duration_s, cap.rss_peak_mib, cap.others_cores, cap.info or {}, rows,
                   [asdict(e) | {"at": e.at - cap.t0} for e in cap.emissions])


def table(path: str, meeting: Meeting, sums: list[Summary], off: dict[str, object],
          off_received: dict[str, object] | None = None) -> str:
    n = len(meeting.sentences)
    lines = [f"== path {path}: {meeting.duration_s:.1f} s of audio, {n} sentences in "
             f"{len(meeting.stretch_ends())} stretches", f"{'':36}" + "".join(f"{s.system:>14}" for s in sums)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label:36}" + "".join(f"{c:>14}" for c in cells))

    row("sentence final lag p50 (s)", [f"{s.final_p50:.2f}" for s in sums])
    row("sentence final lag p95 (s)", [f"{s.final_p95:.2f}" for s in sums])
    row("sentence final lag max (s)", [f"{s.final_max:.2f}" for s in sums])
    row("visible lag p50 (s)", [f"{s.visible_p50:.2f}" for s in sums])
    row("visible lag p95 (s)", [f"{s.visible_p95:.2f}" for s in sums])
    row("end-of-stretch final lag p50 (s)", [f"{s.eos_final_p50:.2f}" for s in sums])
    row("unfinalised sentences", [f"{s.unfinalised}/{n}" for s in sums])
    row("sentences with no word in finals", [f"{s.skipped}/{n}" for s in sums])
    row("sentence ends inside a final", [f"{s.merged}/{n - 1}" for s in sums])
    row("WER of finals vs script (%)", [f"{100 * s.wer:.1f}" for s in sums])
    row("WER offline faster-whisper (%)", [f"{100 * float(str(off['wer'])):.1f}"])
    if off_received is not None:
        row("  ... on the audio as received (%)", [f"{100 * float(str(off_received['wer'])):.1f}"])
    row("CPU-s per audio-s", [f"{s.cpu_per_audio_s:.3f}" for s in sums])
    row("peak RSS (MiB)", [f"{s.rss_peak_mib:.0f}" for s in sums])
    row("other load on the machine (cores)", [f"{s.others_cores:.2f}" for s in sums])
    lines.append("per stretch: final lag p50 / max / end-of-stretch (s), unfinalised sentences")
    lines.append(f"{'#':>2} {'speaker':8} {'dur s':>6} {'sent':>4}" + "".join(f"  {s.system:>26}" for s in sums))
    for k in sorted({s.stretch for s in meeting.sentences}):
        ss = [s for s in meeting.sentences if s.stretch == k]
        cells = []
        for sm in sums:
            rows = [r for r in sm.sentences if r.stretch == k]
            lag = [r.final_lag_s for r in rows if r.final_lag_s is not None]
            end = rows[-1].final_lag_s
            cells.append(f"{pct(lag, 50):6.2f} /{max(lag, default=float('nan')):6.2f} /"
                         f"{float('nan') if end is None else end:6.2f}, {len(rows) - len(lag):2d}")
        lines.append(f"{k:>2} {ss[0].speaker:8} {(ss[-1].end - ss[0].start) / SAMPLE_RATE:6.1f} {len(ss):4d}"
                     + "".join(f"  {c:>26}" for c in cells))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=["file", "livekit", "both"], default="both")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the meeting (default 3)")
    ap.add_argument("--no-peer", action="store_true", help="our worker only")
    ap.add_argument("--quick", action="store_true", help="one short stretch, for smoke-testing")
    ap.add_argument("--worker-src", default="worktree",
                    help="'worktree' (the checkout as it is) or a git ref whose worker/ is exported and run")
    ap.add_argument("--noise-dbfs", type=float, default=Layout.noise_dbfs,
                    help="background noise level (default %(default)s; webrtcvad hears pink noise at -30 as speech)")
    ap.add_argument("--seed", type=int, default=Layout.seed,
                    help="the meeting's voices, pauses and noise (same text): another seed, another meeting")
    ap.add_argument("--threads", type=int, default=0, help="inference threads of both systems (0: usable cores)")
    ap.add_argument("--file-audio", metavar="NPY",
                    help="the file path on this recording of the meeting instead (a LiveKit run's " + RECEIVED + ")")
    ap.add_argument("--rescore", metavar="RAW_JSON", help="score a previous run's -raw.json again, run nothing")
    args = ap.parse_args()
    if args.file_audio and (args.path != "file" or args.rescore):
        ap.error("--file-audio runs the file path only: give --path file, and no --rescore")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop what we started
    from livenexus_worker.inference.models import resolve

    model_dir = resolve("base").path
    threads = args.threads or len(os.sched_getaffinity(0))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = REPO / "benchmarks" / "out"
    if args.rescore:
        raw_in = json.loads(Path(args.rescore).read_text())
        for k, v in raw_in.get("run", {}).items():
            setattr(args, k, v)
    meeting = build(Layout(minutes=args.minutes, noise_dbfs=args.noise_dbfs, seed=args.seed), quick=args.quick)
    if args.rescore:
        src = str(raw_in.get("worker_src", "?"))
        captures = {p: [Capture(**c | {"emissions": [Emission(**e) for e in c["emissions"]]}) for c in caps]
                    for p, caps in raw_in["captures"].items()}
    else:
        env, src = worker_source(args.worker_src)
        logdir = outdir / f"continuous-{stamp}-logs"
        logdir.mkdir(parents=True, exist_ok=True)
        if args.file_audio:
            meeting, drift = recorded(meeting, np.load(args.file_audio), logdir / "recorded.wav")
            print(f"the meeting as recorded in {args.file_audio}; drift per minute (samples): {drift}", flush=True)
        peer_py = None if args.no_peer else ensure_venv(logdir / "whisperlive-install.log")
        print(f"worker: {src}; model {model_dir}; {threads} threads; meeting {meeting.path} "
              f"({meeting.duration_s:.1f} s, {len(meeting.sentences)} sentences)", flush=True)
        captures = {}
        if args.path in ("file", "both"):
            print("file path: our worker ...", flush=True)
            captures["file"] = [run_file_ours(meeting, env, args.threads, logdir)]
            if peer_py is not None:
                print("file path: WhisperLive ...", flush=True)
                captures["file"].append(run_file_peer(meeting, peer_py, model_dir, threads, logdir))
        if args.path in ("livekit", "both"):
            print("livekit path: our worker, then WhisperLive ...", flush=True)
            captures["livekit"] = asyncio.run(run_livekit(meeting, env, args.threads, peer_py, model_dir, logdir))
        raw = outdir / f"continuous-{stamp}-raw.json"  # before scoring, so a scoring bug loses no run
        run = {k: getattr(args, k) for k in ("minutes", "noise_dbfs", "quick", "seed")}
        raw.write_text(json.dumps({"worker_src": src, "run": run,
                                   "captures": {p: [asdict(c) for c in cs] for p, cs in captures.items()}}))
    off = offline(meeting, model_dir, threads)
    rec = None if args.rescore else logdir / RECEIVED
    off_received = None
    if rec is not None and rec.is_file():
        off_received = offline(meeting, model_dir, threads, np.load(rec), "the meeting as received through LiveKit")
    result: dict[str, object] = {"worker_src": src, "head": git("rev-parse", "HEAD"), "args": vars(args),
                                 "threads": threads, "meeting": {"key": meeting.key, "wav": str(meeting.path),
                                 "duration_s": meeting.duration_s, "sentences": [asdict(s) for s in meeting.sentences]},
                                 "offline": off, "offline_livekit_received": off_received}
    paths: dict[str, list[dict[str, object]]] = {}
    for path, caps in captures.items():
        sums = [summarize(meeting, c) for c in caps]
        paths[path] = [asdict(s) for s in sums]
        print(table(path, meeting, sums, off, off_received if path == "livekit" else None), flush=True)
        for s in sums:
            if s.info:
                print(f"  {s.system}: {s.info}")
    result["paths"] = paths
    out = outdir / f"continuous-{stamp}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"worker: {src}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
