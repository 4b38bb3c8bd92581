"""`livenexus-worker transcribe`: stream one audio file through the real-time pipeline and print its events."""

from __future__ import annotations

from pathlib import Path

from livenexus_worker.core.audio import load
from livenexus_worker.core.tier_spec import TierSpec
from livenexus_worker.files.feed import feed
from livenexus_worker.files.sinks import JsonlSink, TerminalSink
from livenexus_worker.ops.cpu import usable_cores
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.runtime import Runtime, RuntimeOptions
from livenexus_worker.streaming.scheduler import decode_threads, lanes_for


def transcribe_file(path: str | Path, tier: TierSpec, *, language: str | None, realtime: bool = False,
                    as_json: bool = False, threads: int = 0) -> None:
    """Decode ``path``, feed it (paced like a microphone if ``realtime``) and print partials and finals."""
    signal = load(path)
    cores = usable_cores()
    chosen, measure = decode_threads(threads, cores)
    # The language is the runtime's too: it decides which vocabulary the model decodes with.
    rt = Runtime.create(RuntimeOptions(tiers=(tier,), pipeline=PipelineOptions(language=language), threads=chosen,
                                       measure_threads=measure))
    # The runtime sizes its threads from the affinity mask; in a pod with a CPU limit below it, decodes
    # at once beyond the quota only take turns on the same cores (the worker's tier loop does the same).
    rt.scheduler.set_parallel(lanes_for(cores, rt.decode_threads))
    options = rt.options.pipeline
    sink = JsonlSink() if as_json else TerminalSink()
    pipe = rt.open_stream(Path(path).name, Path(path).stem, sink, options)
    try:
        feed(pipe, signal, realtime=realtime)
        rt.wait_idle(600)
    finally:
        rt.close()
