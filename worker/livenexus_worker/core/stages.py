"""Opt-in stage timing of each transcript (LIVENEXUS_TRACE_STAGES=1), for transport measurements.

Each stage writes a CLOCK_MONOTONIC stamp into the event's ``trace`` dict: the clock is shared by every process
of one machine, so a benchmark joins these stamps with its speaker bot's send times and its listener's arrival
times. The stage names are the contract's (:data:`livenexus_common.contract.TRACE_STAGES`); keys starting with
``_`` are worker-internal and never reach the wire.

Off (the default) no dict exists and every hook is one ``is None`` test per event; the per-frame stamps in
``room/tracks.py`` are only taken when tracing is on.
"""

from __future__ import annotations

import time

from livenexus_common.contract import TRACE_STAGES

__all__ = ["TRACE_STAGES", "VOICED", "enable", "enabled", "new", "stamp"]

VOICED = "_voiced"
"""Internal key: stream position (samples) of the last voiced audio the event covers; the room layer turns it
into the ``recv``/``push`` stamps of the frame that carried it."""

_enabled = False


def enable(on: bool) -> None:
    """Process-wide switch (pipelines of every stream read it); set once at start-up."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


def new(voiced_sample: int, **stamps: float) -> dict[str, float] | None:
    """A trace for one event, or None when tracing is off."""
    if not _enabled:
        return None
    trace = {VOICED: float(voiced_sample)}
    trace.update(stamps)
    return trace


def stamp(trace: dict[str, float] | None, stage: str, at: float | None = None) -> None:
    """Record ``stage`` (now, or ``at``) in ``trace``; nothing when tracing is off."""
    if trace is not None:
        trace[stage] = time.monotonic() if at is None else at
