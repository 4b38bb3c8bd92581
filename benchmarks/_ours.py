"""Our worker as the continuous-speech benchmark runs it: which code it imports, and the file path's run.

The file path runs `livenexus-worker transcribe --realtime --json` inside a small wrapper script that stamps
the start of the feed and the end (monotonic time, CPU seconds, host CPU) on stderr, and applies knobs from
the environment: LNX_PIPELINE (JSON of StreamPipeline options, e.g. ``{"partial_share": 0.45}``, given to every
stream's pipeline on either path) and LNX_VERBOSE (debug logs of either path, to
see why a pause was not committed), LNX_TRACE_DECODES (every decode as it ends, its kind, audio and cost, on
stderr as ``LNX_INF`` with the monotonic time: the file run's feed start is ``LNX_FEED_START``, a LiveKit run's
start of play ``LNX_PLAY_START`` in its worker log) and LNX_ARGS (more `transcribe` options, e.g.
``--beam-size 1``). ``--worker-src`` picks the code: the working tree, or a commit exported to the cache.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _meeting import Meeting, cache_dir
from _peer import free_port, stop
from _score import Capture, Emission, pct

REPO = Path(__file__).resolve().parents[1]

PIPELINE_KNOBS = """
import dataclasses, json, os
from livenexus_worker.streaming import pipeline as P
over = json.loads(os.environ.get("LNX_PIPELINE") or "{}")
if over:  # given to the constructor, so the parts it builds (follow-on contexts, VAD) see them too
    init = P.StreamPipeline.__init__
    def patched(self, stream_id, speaker, ctx, on_event, options=None, *a, **k):
        init(self, stream_id, speaker, ctx, on_event, dataclasses.replace(options or P.PipelineOptions(), **over),
             *a, **k)
    P.StreamPipeline.__init__ = patched
if os.environ.get("LNX_TRACE_DECODES"):  # each decode as it ends: what held the inference thread when
    import sys as _sys, time as _time
    from livenexus_worker.streaming import runtime as _R
    _inner = _R.Runtime.on_inference
    def _traced(self, kind, hyp, audio_s):
        print("LNX_INF", round(_time.monotonic(), 3), kind, round(audio_s, 2), round(hyp.encode_s, 3),
              round(hyp.decode_s, 3), repr(hyp.text[-50:]), round(hyp.avg_logprob, 2), round(hyp.no_speech_prob, 2),
              file=_sys.stderr, flush=True)
        return _inner(self, kind, hyp, audio_s)
    _R.Runtime.on_inference = _traced
"""

WRAPPER = PIPELINE_KNOBS + """
import resource, sys, time
import psutil
import livenexus_worker
import livenexus_worker.files.transcribe as T
def cpu():
    r, h = resource.getrusage(resource.RUSAGE_SELF), psutil.cpu_times()
    host = sum(getattr(h, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (the benchmark, 600 MiB
    # right after it synthesised a new meeting), VmHWM is this process's own.
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return r.ru_utime + r.ru_stime, hwm, host
inner = T.feed
def feed(*a, **k):
    c = cpu()
    print("LNX_FEED_START", time.monotonic(), c[0], c[2], file=sys.stderr, flush=True)
    return inner(*a, **k)
T.feed = feed
from livenexus_worker.streaming import runtime as R
kinds = {}
on_inference = R.Runtime.on_inference
def counted(self, kind, hyp, audio_s):  # where the inference time goes, by kind of decode
    k = kinds.setdefault(kind, [0, 0.0, 0.0, 0.0])
    k[0] += 1; k[1] += hyp.encode_s; k[2] += hyp.decode_s; k[3] += audio_s
    return on_inference(self, kind, hyp, audio_s)
R.Runtime.on_inference = counted
from livenexus_worker.streaming import jobs as J
purposes = {}
decode_final = J.StreamJobs._decode_final
def by_purpose(self, *a, **k):  # the finals' decode time by who asked: a guess, a commit, a confirming partial...
    name = sys._getframe(1).f_code.co_qualname.split(".")
    who = name[-3] if "<locals>" in name else name[-1]
    t = time.perf_counter()
    try:
        return decode_final(self, *a, **k)
    finally:
        p = purposes.setdefault(who, [0, 0.0])
        p[0] += 1; p[1] += time.perf_counter() - t
J.StreamJobs._decode_final = by_purpose
from livenexus_worker.streaming import scheduler as S
waits, running, behind = {}, {}, {}
run_job, submit_final = S.InferenceScheduler._run, S.InferenceScheduler.submit_final
def waited(self, job):  # how long each job queued before an inference thread took it, by kind
    waits.setdefault(job.kind, []).append(round(job.started - job.created, 4))
    if job.kind == "final":  # and what a final waited behind: its stream's job running when it was queued
        blocker = behind.pop(id(job), None)
        if blocker:
            waits.setdefault("final_behind_" + blocker, []).append(round(job.started - job.created, 4))
    running[job.key] = job.kind + ("_urgent" if job.urgent else "")
    try:
        return run_job(self, job)
    finally:
        running.pop(job.key, None)
def queued(self, job):
    if job.key in running:
        behind[id(job)] = running[job.key]
    return submit_final(self, job)
S.InferenceScheduler._run = waited
S.InferenceScheduler.submit_final = queued
print("LNX_SRC", livenexus_worker.__file__, file=sys.stderr, flush=True)
from livenexus_worker.cli import main
rc = main(sys.argv[1:])
print("LNX_KINDS", json.dumps(kinds, separators=(",", ":")), file=sys.stderr, flush=True)
print("LNX_PURPOSES", json.dumps(purposes, separators=(",", ":")), file=sys.stderr, flush=True)
print("LNX_WAITS", json.dumps(waits, separators=(",", ":")), file=sys.stderr, flush=True)
print("LNX_END", time.monotonic(), *cpu(), file=sys.stderr, flush=True)
sys.exit(rc)
"""

ROOM_WRAPPER = PIPELINE_KNOBS + """
import sys
from livenexus_worker.cli import main
sys.exit(main(sys.argv[1:]))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def worker_source(spec: str) -> tuple[dict[str, str], str]:
    """Environment that makes worker subprocesses import the wanted code, and a description of it."""
    head = git("rev-parse", "HEAD")
    if spec == "worktree":
        dirty = git("status", "--porcelain", "--", "worker")
        return {}, f"working tree at {head[:10]}" + (" + uncommitted changes in worker/" if dirty else " (clean)")
    sha = git("rev-parse", "--verify", f"{spec}^{{commit}}")
    dirs = [d for d in ("worker", "common", "dev") if d in git("ls-tree", "--name-only", sha).split()]
    dest = cache_dir() / "src" / sha
    if not (dest / "worker").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        archive = subprocess.run(["git", "archive", sha, *dirs], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        tmp.rename(dest)
    return {"PYTHONPATH": ":".join(str(dest / d) for d in dirs)}, f"commit {sha[:10]} (exported to {dest})"


def _pump(stream: object, sink: list[tuple[float, str]]) -> threading.Thread:
    def run() -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append((time.monotonic(), line))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def run_file_ours(meeting: Meeting, env: dict[str, str], threads: int, logdir: Path) -> Capture:
    """The meeting's WAV through `transcribe --realtime --json`, every JSON line stamped on arrival."""
    args = [*(["-v"] if os.environ.get("LNX_VERBOSE") else []), "transcribe", str(meeting.path), "--realtime", "--json",
            *(["--threads", str(threads)] if threads else []), *shlex.split(os.environ.get("LNX_ARGS", ""))]
    out: list[tuple[float, str]] = []
    err: list[tuple[float, str]] = []
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1, env={**os.environ, **env}, start_new_session=True)
    try:
        pumps = [_pump(proc.stdout, out), _pump(proc.stderr, err)]
        proc.wait(meeting.duration_s + 300)
        for p in pumps:
            p.join(10)
    finally:
        stop(proc)
    (logdir / "worker-file.log").write_text("".join(line for _, line in err))
    marks = {line.split()[0]: line.split()[1:] for _, line in err if line.startswith("LNX_")}
    if proc.returncode != 0 or "LNX_FEED_START" not in marks or "LNX_END" not in marks:
        raise RuntimeError(f"the file run failed (exit {proc.returncode}); see {logdir / 'worker-file.log'}")
    ems = []
    for at, line in out:
        ev = json.loads(line)
        ems.append(Emission(at, ev["segment_id"], ev["text"], bool(ev["is_final"]), float(ev["start"])))
    t0, cpu0, host0 = map(float, marks["LNX_FEED_START"])
    t1, cpu1, maxrss, host1 = map(float, marks["LNX_END"])
    others = (host1 - host0 - (cpu1 - cpu0)) / (t1 - t0)
    # Per kind of decode: count, encoder s, decoder s, audio s decoded.
    kinds = json.loads(marks["LNX_KINDS"][0]) if "LNX_KINDS" in marks else {}
    # Finals' decodes by who asked (count, wall s): _speculate, _finish, _propose_commit, _run_confirming, _cut.
    purposes = json.loads(marks["LNX_PURPOSES"][0]) if "LNX_PURPOSES" in marks else {}
    # Queue wait of each kind of job (s): p50 / p90 / max / count; a final's is what it waited behind a partial.
    waits = {k: [pct(v, 50), pct(v, 90), max(v), len(v)]
             for k, v in json.loads(marks["LNX_WAITS"][0]).items()} if "LNX_WAITS" in marks else {}
    return Capture("ours", t0, ems, cpu1 - cpu0, maxrss / 1024, others,
                   {"imported": marks["LNX_SRC"][0], "events": len(ems), "decodes": kinds, "finals_by": purposes,
                    "queue_wait": waits})



def start_room_worker(env: dict[str, str], url: str, key: str, secret: str, room: str, threads: int,
                      log: Path) -> subprocess.Popen[bytes]:
    """`livenexus-worker run` in ``room`` on the LiveKit server at ``url``, metrics on a free 127.0.0.1 port."""
    wenv = {**os.environ, **env, "LIVEKIT_URL": url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret,
            "LIVENEXUS_ROOM": room, "LIVENEXUS_METRICS_PORT": str(free_port()),
            "LIVENEXUS_METRICS_HOST": "127.0.0.1", **({"LIVENEXUS_THREADS": str(threads)} if threads else {})}
    verbose = ["-v"] if os.environ.get("LNX_VERBOSE") else []
    return subprocess.Popen([sys.executable, "-c", ROOM_WRAPPER, *verbose, "run"], env=wenv,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
