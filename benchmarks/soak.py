"""Soak: a worker streaming speech on and off for a long time; does it hold its memory, threads and files?

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--on-s 195] [--off-s 60] [--env NAME=VALUE ...]

The meeting of continuous.py (six voices, noise) alternates with stretches of silence-level noise until the
soak is long enough; `livenexus-worker transcribe --realtime --json` plays it in real time, as a microphone
would. Every 15 s the worker process is sampled (RSS, threads, open files, and RSS by kind of mapping from
/proc/PID/smaps: the main heap, glibc's per-thread malloc arenas, other anonymous memory such as large mmap'd
buffers, and file-backed pages), so growth can be placed. `--env` sets variables for the worker only (e.g.
`MALLOC_ARENA_MAX=2`, `LIVENEXUS_MALLOC_TRIM=0`) to compare settings. Prints the series per minute and the
growth after warm-up (the first cycle); numbers only, nothing asserted. JSON goes to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from _meeting import Layout, build
from livenexus_dev.tts import write_wav
from livenexus_worker.core.audio import SAMPLE_RATE


def soak_audio(minutes: float, on_s: float, off_s: float) -> tuple[np.ndarray, int]:
    """Meeting speech for ``on_s``, quiet noise for ``off_s``, repeated to ``minutes``; and the cycle count."""
    meeting = build(Layout(noise_dbfs=-40.0), log=False).audio
    on = meeting[: int(on_s * SAMPLE_RATE)]
    rng = np.random.default_rng(1)
    quiet = (rng.standard_normal(int(off_s * SAMPLE_RATE)) * 30).astype(np.int16)  # about -60 dBFS
    cycle = np.concatenate([on, quiet])
    n = max(1, int(np.ceil(minutes * 60 * SAMPLE_RATE / cycle.shape[0])))
    return np.concatenate([cycle] * n)[: int(minutes * 60 * SAMPLE_RATE)], n


ARENA = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena is mapped at a multiple of it


def rss_by_kind(pid: int) -> dict[str, float]:
    """RSS (MiB) of the process's mappings: ``heap`` (main arena), ``arenas`` (thread arenas), ``anon``, ``file``."""
    kinds = dict.fromkeys(("heap", "arenas", "anon", "file"), 0.0)
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping's header: range perms offset dev inode [path]
            start, end = (int(x, 16) for x in head[0].split("-"))
            path = head[5] if len(head) > 5 else ""
            if path == "[heap]":
                kind = "heap"
            elif path.startswith("/"):
                kind = "file"
            elif not path and start % ARENA == 0 and end - start <= ARENA:
                kind = "arenas"
            else:
                kind = "anon"
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1]) / 1024
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--on-s", type=float, default=195.0, help="speech per cycle (s)")
    ap.add_argument("--off-s", type=float, default=60.0, help="quiet per cycle (s)")
    ap.add_argument("--every-s", type=float, default=15.0, help="sampling period (s)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment of the worker only (repeatable), e.g. MALLOC_ARENA_MAX=2")
    args = ap.parse_args()
    env = dict(os.environ)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value

    audio, cycles = soak_audio(args.minutes, args.on_s, args.off_s)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "soak.wav"
        write_wav(wav, audio)
        cmd = [sys.executable, "-m", "livenexus_worker.cli", "transcribe", str(wav), "--realtime", "--json"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        finals = [0]

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError, AttributeError):
                    finals[0] += bool(json.loads(line).get("is_final"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ps = psutil.Process(proc.pid)
        t0, samples = time.monotonic(), []
        while proc.poll() is None:
            try:
                with ps.oneshot():
                    samples.append({"t": round(time.monotonic() - t0, 1), "rss_mib": ps.memory_info().rss / 2**20,
                                    "threads": ps.num_threads(), "fds": ps.num_fds(),
                                    "cpu_s": sum(ps.cpu_times()[:2]), "finals": finals[0],
                                    **rss_by_kind(proc.pid)})
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                break
            time.sleep(args.every_s)
        reader.join(5)
    if not samples:
        print("the worker exited before the first sample", file=sys.stderr)
        return 1
    warm = (args.on_s + args.off_s)  # after the first cycle the model, caches and buffers are at size
    after = [s for s in samples if s["t"] >= warm] or samples
    print(f"soak: {args.minutes:.0f} min, {cycles} cycles of {args.on_s:.0f} s speech + {args.off_s:.0f} s quiet; "
          f"worker exit {proc.returncode}; {finals[0]} finals")
    print(f"worker env: {' '.join(args.env) or '(inherited)'}")
    print(" min   RSS MiB  threads  fds  CPU-s  finals    heap  arenas    anon    file")
    for s in samples:
        if int(s["t"]) % 60 < args.every_s:
            print(f"{s['t'] / 60:4.1f}  {s['rss_mib']:8.1f}  {s['threads']:7d}  {s['fds']:3d}  {s['cpu_s']:5.0f}"
                  f"  {s['finals']:6d}  {s['heap']:6.1f}  {s['arenas']:6.1f}  {s['anon']:6.1f}  {s['file']:6.1f}")
    rss = [s["rss_mib"] for s in after]
    print(f"after warm-up ({warm:.0f} s): RSS {min(rss):.1f}..{max(rss):.1f} MiB (last - first "
          f"{rss[-1] - rss[0]:+.1f}), threads {min(s['threads'] for s in after)}..{max(s['threads'] for s in after)}, "
          f"fds {min(s['fds'] for s in after)}..{max(s['fds'] for s in after)}")
    path = out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "cycles": cycles, "exit": proc.returncode, "samples": samples}))
    period = args.on_s + args.off_s
    for k in range(cycles):
        cyc = [x for x in samples if k * period <= x["t"] < (k + 1) * period]
        quiet = [x for x in cyc if x["t"] >= k * period + args.on_s]
        if cyc:
            print(f"cycle {k + 1}: peak RSS {max(x['rss_mib'] for x in cyc):.1f} MiB"
                  + (f", end of quiet {quiet[-1]['rss_mib']:.1f} MiB" if quiet else ""))
    growth = {k: after[-1][k] - after[0][k] for k in ("heap", "arenas", "anon", "file")}
    print("after warm-up, last - first by kind (MiB): " + ", ".join(f"{k} {v:+.1f}" for k, v in growth.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
