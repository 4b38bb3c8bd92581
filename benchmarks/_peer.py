"""WhisperLive (pip whisper-live 0.10.0), the peer of the continuous-speech benchmark, in its own venv.

Its full dependency set cannot install here (PyAudio, for its microphone client, needs the portaudio headers;
it would also pull openai-whisper, OpenVINO, optimum-intel and CUDA 12 libraries), so the venv gets
whisper-live with --no-deps plus what its server with the faster_whisper backend imports: faster-whisper 1.2.0
and tokenizers 0.20.3 (its pins), torch (imported at server start, used on CPU only to ask for CUDA),
websockets, fastapi and uvicorn; CTranslate2 and onnxruntime at the versions of our own venv, so both systems
run the same inference engine. The server runs on 127.0.0.1 with a local model directory and no hub access.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
from livekit import rtc

from _meeting import cache_dir
from _score import Emission
from livenexus_worker.core.audio import SAMPLE_RATE

PEER = "whisper-live==0.10.0"
CHUNK = SAMPLE_RATE // 10
"""100 ms per websocket message: finer than its own client's 4096 samples (so its latency is not handicapped),
coarser than our 10 ms frames (its server re-concatenates its whole buffer on every message)."""

LAUNCH = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
from whisper_live.server import TranscriptionServer
TranscriptionServer().run(sys.argv[1], port=int(sys.argv[2]), backend="faster_whisper",
                          faster_whisper_custom_model_path=sys.argv[3], single_model=True, max_clients=1,
                          max_connection_time=3600)
"""


def requirements() -> list[str]:
    return ["faster-whisper==1.2.0", "tokenizers==0.20.3", "numpy>=1.26.4,<2.5", "torch", "websockets",
            "fastapi", "uvicorn", f"ctranslate2=={version('ctranslate2')}", f"onnxruntime=={version('onnxruntime')}"]


def ensure_venv(log: Path) -> Path:
    """The peer's python, creating its venv on first use (about a minute and 5 GB, torch with its CUDA wheels)."""
    root = cache_dir() / "whisperlive-venv"
    py = root / "bin" / "python"
    stamp = root / (".ok-" + hashlib.sha256(json.dumps([PEER, *requirements()]).encode()).hexdigest()[:12])
    if stamp.is_file() and py.is_file():
        return py
    print(f"installing the peer into {root} (first run only; log {log}) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", "--clear", str(root)],
             [str(py), "-m", "pip", "install", "--no-deps", PEER],
             [str(py), "-m", "pip", "install", *requirements()]]
    with log.open("ab") as out:
        for cmd in steps:
            t = time.monotonic()
            subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
            out.write(f"# {' '.join(cmd)}: {time.monotonic() - t:.0f} s\n".encode())
    stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def host_busy_s() -> float:
    """CPU seconds the whole machine spent not idle since boot."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal")))


def proc_peak_rss_mib(pid: int) -> float:
    """VmHWM: the peak resident set size of the process so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM to the process group, SIGKILL after 15 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


class PeerServer:
    """The WhisperLive server process on 127.0.0.1."""

    def __init__(self, py: Path, model_dir: Path, threads: int, log: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.update(OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        self.log = log
        self.proc = subprocess.Popen([str(py), "-c", LAUNCH, "127.0.0.1", str(self.port), str(model_dir)],
                                     env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"WhisperLive server exited with {self.proc.returncode}; see {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"WhisperLive server did not listen within 120 s; see {log}")

    def stop(self) -> None:
        stop(self.proc)


class PeerClient:
    """A minimal client of its websocket protocol (what its own Client sends), timing every message."""

    def __init__(self, port: int, model_dir: Path, language: str = "en", ready_timeout: float = 300) -> None:
        import websocket

        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=ready_timeout)
        self.uid = uuid.uuid4().hex
        self.messages: list[tuple[float, dict[str, object]]] = []
        self.ready = threading.Event()
        self.closed = False
        # Its Client's defaults, server-side VAD on; the server replaces `model` by its custom model path.
        self.ws.send(json.dumps({"uid": self.uid, "language": language, "task": "transcribe",
                                 "model": str(model_dir), "use_vad": True, "send_last_n_segments": 10,
                                 "no_speech_thresh": 0.45, "clip_audio": False, "same_output_threshold": 10}))
        self.thread = threading.Thread(target=self._recv, name="whisperlive-recv", daemon=True)
        self.thread.start()
        if not self.ready.wait(ready_timeout):
            self.close()
            raise RuntimeError(f"WhisperLive sent no SERVER_READY within {ready_timeout:.0f} s")

    def _recv(self) -> None:
        self.ws.settimeout(None)
        while not self.closed:
            try:
                raw = self.ws.recv()
            except Exception:
                break
            at = time.monotonic()
            if not raw:
                break
            msg = json.loads(raw)
            if msg.get("message") == "SERVER_READY":
                self.ready.set()
            elif msg.get("status") in ("ERROR", "WAIT"):
                print(f"WhisperLive: {msg}", flush=True)
            self.messages.append((at, msg))

    def send(self, samples: np.ndarray) -> None:
        """int16 or float samples at 16 kHz, sent as float32 like its own client."""
        data = samples.astype(np.float32) / (32768.0 if samples.dtype == np.int16 else 1.0)
        self.ws.send_binary(data.astype(np.float32).tobytes())

    def stream(self, audio: np.ndarray, tail_s: float = 0.0) -> float:
        """Send ``audio`` (then ``tail_s`` of zeros) paced like a microphone; returns the monotonic time of
        sample 0 (each chunk goes out once it would have been recorded)."""
        sig = np.concatenate([audio, np.zeros(int(tail_s * SAMPLE_RATE), dtype=audio.dtype)])
        t0 = time.monotonic()
        for i in range(0, sig.shape[0], CHUNK):
            delay = t0 + (i + CHUNK) / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send(sig[i : i + CHUNK])
        return t0

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.ws.send_binary(b"END_OF_AUDIO")
        time.sleep(0.2)
        self.closed = True
        with contextlib.suppress(Exception):
            self.ws.close()
        self.thread.join(5)

    def emissions(self) -> list[Emission]:
        """Completed segments are finals (it re-sends its last 10 each time: the first arrival counts); the
        one incomplete segment of a message is the visible partial and replaces the previous one."""
        out: list[Emission] = []
        for at, msg in self.messages:
            segs = msg.get("segments")
            if not isinstance(segs, list):
                continue
            partial: dict[str, str] | None = None
            for seg in segs:
                if seg.get("completed"):
                    out.append(Emission(at, f"{seg['start']}|{seg['text']}", seg["text"], True, float(seg["start"])))
                else:
                    partial = seg
            out.append(Emission(at, "open", partial["text"] if partial else "", False,
                                float(partial["start"]) if partial else 1e9))
        return out


class SpeakerTap:
    """Subscribes ``room`` to one speaker's microphone the way our worker asks for it (16 kHz mono) and hands
    every frame to ``on_frame``: WhisperLive's bridge, and the recording of what the room delivered."""

    def __init__(self, room: rtc.Room, speaker: str, on_frame: Callable[[np.ndarray], None]) -> None:
        self.speaker, self.on_frame = speaker, on_frame
        self.tasks: set[asyncio.Task[None]] = set()
        room.on("track_subscribed", self._on_subscribed)

    def _on_subscribed(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and p.identity == self.speaker:
            task = asyncio.get_running_loop().create_task(self._read(track))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _read(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for ev in stream:
                self.on_frame(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
        finally:
            await stream.aclose()

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Bridge:
    """A LiveKit participant that subscribes to one speaker's audio and forwards it to WhisperLive in 100 ms
    chunks: the peer's view of the same room our worker would join."""

    def __init__(self, client: PeerClient, speaker: str) -> None:
        self.client = client
        self.room = rtc.Room()
        self.flowing = asyncio.Event()
        self._pending: list[np.ndarray] = []
        self._n = 0
        self.tap = SpeakerTap(self.room, speaker, self._forward)

    async def join(self, url: str, token: str) -> Bridge:
        await self.room.connect(url, token)
        return self

    def _forward(self, pcm: np.ndarray) -> None:
        self.flowing.set()
        self._pending.append(pcm)
        self._n += pcm.shape[0]
        if self._n >= CHUNK and not self.client.closed:
            self.client.send(np.concatenate(self._pending))
            self._pending, self._n = [], 0

    async def close(self) -> None:
        await self.tap.close()
        await self.room.disconnect()
