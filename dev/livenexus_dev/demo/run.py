"""`make demo`: a local livekit-server, the worker in room `demo`, a speaking bot and a listener.

    python -m livenexus_dev.demo.run [--once] [--room demo] [--console-port 8080]

Prints partials updating in place, finals with speaker and latency, then a one-line summary. Without --once
(and on a TTY) it keeps everything running until Ctrl-C so the browser console can be tried too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from livenexus_common.cli import stop_on_signals
from livenexus_worker.inference.models import resolve
from livenexus_worker.inference.textnorm import wer
from livenexus_worker.room.settings import IDENTITY_PREFIX

from ..livekit_server import LiveKitServer, free_port
from ..tts import synthesize
from .bots import Heard, Listener, SpeakerBot

SCRIPT = [
    "Welcome to the LiveNexus demo.",
    "Every participant in this room is transcribed in real time on a plain CPU.",
    "Partial results appear while I am still speaking, and the final text follows right after I stop.",
    "That is the end of the demo script, thank you for listening.",
]


def _printer(tty: bool) -> tuple[Callable[[Heard], None], Callable[[], None]]:
    live = {"on": False}

    def on_heard(h: Heard) -> None:
        if h.via != "data":
            return
        if h.final:
            if live["on"] and tty:
                sys.stdout.write("\r\033[K")
            lat = float(h.attributes.get("latencyMs", 0.0))
            sys.stdout.write(f"[{h.speaker}] {h.text}   ({lat:.0f} ms after end of speech)\n")
            live["on"] = False
        elif tty:
            stable, unstable = h.attributes.get("stable", ""), h.attributes.get("unstable", "")
            sys.stdout.write(f"\r\033[K… [{h.speaker}] \033[1m{stable}\033[0m \033[2m{unstable}\033[0m")
            live["on"] = True
        sys.stdout.flush()

    def done() -> None:
        if live["on"] and tty:
            sys.stdout.write("\r\033[K")

    return on_heard, done


async def speak_script(server: LiveKitServer, room: str, listener: Listener) -> list[Heard]:
    bot = await SpeakerBot.join(server.url, server.api_key, server.api_secret, room, "speaker-bot")
    try:
        await bot.silence(1.5)
        for sentence in SCRIPT:
            await bot.play(synthesize(sentence))
            await bot.silence(1.2)
        await listener.wait_finals(len(SCRIPT), 20, speaker="speaker-bot")
        await bot.silence(0.5)
    finally:
        await bot.close()
    return listener.finals(speaker="speaker-bot")


def start_worker(server: LiveKitServer, room: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key,
           "LIVEKIT_API_SECRET": server.api_secret, "LIVENEXUS_ROOM": room,
           "LIVENEXUS_METRICS_PORT": str(free_port()), "LIVENEXUS_METRICS_HOST": "127.0.0.1"}
    verbose = ["-v"] if os.environ.get("LNX_VERBOSE") else []  # debug logs, as the benchmarks take it
    return subprocess.Popen([sys.executable, "-m", "livenexus_worker.cli", *verbose, "run"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def start_console(server: LiveKitServer, room: str, port: int, log: Path) -> subprocess.Popen[bytes] | None:
    try:
        import livenexus_console  # noqa: F401
    except ImportError:
        return None
    env = {**os.environ, "LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key,
           "LIVEKIT_API_SECRET": server.api_secret}
    return subprocess.Popen([sys.executable, "-m", "livenexus_console", "--rooms", room,
                             "--port", str(port), "--host", "127.0.0.1"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def main_async(args: argparse.Namespace) -> int:
    print("preparing the model ...", flush=True)
    resolve("base")
    print("starting livekit-server on 127.0.0.1 ...", flush=True)
    server = LiveKitServer().start()
    logdir = server.workdir
    worker = start_worker(server, args.room, logdir / "worker.log")
    console = start_console(server, args.room, args.console_port, logdir / "console.log")
    procs = [p for p in (worker, console) if p is not None]
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        listener = await Listener.join(server.url, server.api_key, server.api_secret, args.room, "demo-listener")
        on_heard, done = _printer(sys.stdout.isatty())
        original = listener._add

        def add(h: Heard) -> None:
            original(h)
            on_heard(h)

        listener._add = add  # type: ignore[method-assign]
        print(f"server {server.url}, room '{args.room}', logs in {logdir}", flush=True)
        if console is not None:
            print(f"browser console: http://127.0.0.1:{args.console_port}/ (room '{args.room}')", flush=True)
        await wait_worker_joined(server, args.room, worker, stop)
        finals = await speak_script(server, args.room, listener)
        done()
        lat = [float(f.attributes.get("latencyMs", 0.0)) for f in finals]
        median = statistics.median(lat) if lat else float("nan")
        score = wer(" ".join(SCRIPT), " ".join(f.text for f in finals))
        print(f"summary: {len(finals)}/{len(SCRIPT)} utterances, median final latency {median:.0f} ms, "
              f"WER {100 * score:.1f} %", flush=True)
        if not args.once:
            print("still running: open the console or join the room; Ctrl-C stops everything", flush=True)
            await stop.wait()
        await listener.close()
        return 0 if len(finals) == len(SCRIPT) else 1
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        server.stop()


async def wait_worker_joined(server: LiveKitServer, room: str, worker: subprocess.Popen[bytes],
                             stop: asyncio.Event, timeout: float = 120) -> None:
    from livekit import api

    deadline = time.monotonic() + timeout
    async with api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret) as lk:
        while time.monotonic() < deadline and not stop.is_set():
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}; see {server.workdir / 'worker.log'}")
            with contextlib.suppress(Exception):
                res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                if any(p.identity.startswith(IDENTITY_PREFIX) for p in res.participants):
                    return
            await asyncio.sleep(0.3)
    raise SystemExit("the worker did not join the room in time")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--room", default="demo")
    ap.add_argument("--once", action="store_true", help="exit after the script (default when not on a TTY or CI)")
    ap.add_argument("--console-port", type=int, default=8080)
    args = ap.parse_args(argv)
    if os.environ.get("CI") or not sys.stdout.isatty():
        args.once = True
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
