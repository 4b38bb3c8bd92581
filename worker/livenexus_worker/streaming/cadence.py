"""How often a stream asks for a partial: the tier's interval, stretched by the load on the decode lanes and by
the stream's CPU budget, never for the first words of an utterance or a partial that may confirm a pause."""

from __future__ import annotations

from livenexus_worker.core.audio import SAMPLES_PER_MS
from livenexus_worker.streaming import commits
from livenexus_worker.streaming.options import PipelineOptions
from livenexus_worker.streaming.stream_state import OpenUtterance


def partial_share(o: PipelineOptions, spent_rate: float, streams: int, threads: int = 1,
                  contended: bool = True) -> float:
    """The share of its lane one stream's partials may hold now, ``streams`` being open and its decodes having taken
    ``spent_rate`` core-seconds per second of its recent audio: the full share (:func:`shared`) while that is under
    its ``cpu_budget`` (``cpu_budget_alone`` while it is the only stream open); once it is not,
    ``partial_share_min`` of a core, i.e. that over the ``threads`` cores each decode keeps busy. Under budget the
    share is the lane's time: the stream's finals wait behind its partials for their wall time, however many cores a
    decode uses. Over budget it is CPU: counted in lane time, two-thread decodes cost 0.91 CPU-s per audio-s on the
    meeting benchmark, 0.82 per core (visible lag p50 0.28 vs 0.54 s, finals alike).

    Over budget while no stream waits for a lane (not ``contended``: no more speakers than decodes may run at
    once), the floor is of the lane's time, not of a core: the cores the partials keep busy are idle
    otherwise, and what they delay is this stream's own finals, by their wall time (:func:`speakers_contend`)."""
    full = shared(o, streams)
    limit = budget(o, streams)
    if limit <= 0 or spent_rate < limit:
        return full
    return min(full, o.partial_share_min / (max(1, threads) if contended else 1))


def shared(o: PipelineOptions, streams: int) -> float:
    """The share of the inference threads the partials of all speaking streams may use together, ``streams``
    being open: ``partial_share_alone`` for the only one. Not "the only one speaking": while one of several
    speaks, the others' finals are decoded (their speakers have just stopped) and must not queue behind it."""
    return o.partial_share_alone if _alone(streams) else o.partial_share


def budget(o: PipelineOptions, streams: int) -> float:
    """A stream's CPU budget, ``streams`` being open: ``cpu_budget_alone`` for the only one (unless 0)."""
    return o.cpu_budget_alone if _alone(streams) and o.cpu_budget_alone > 0 else o.cpu_budget


def _alone(streams: int) -> bool:
    """The only stream open: no other stream's final can wait behind its decodes."""
    return streams <= 1


def partial_due(op: OpenUtterance, o: PipelineOptions, now: float, interval: float, cost: float, speakers: int,
                parallel: int, share: float, together: float) -> bool:
    """Is a partial of ``op`` due ``now``? Every tier ``interval`` (s; 0: no partials) at most; the partials of
    all ``speakers`` may keep the inference threads busy only ``together`` of the time (:func:`shared`), so the
    cadence stretches with the speakers (beyond the ``parallel`` jobs that run at once) and the ``cost`` of a
    partial (s) before finals queue; and this stream's may hold its lane only ``share`` of the time (its CPU
    budget, :func:`partial_share`). A partial that may confirm a pause, or the first of an utterance
    (:func:`first_partial`), does not wait for those stretches."""
    if interval <= 0 or now - op.last_partial_request < interval:
        return False
    lanes = max(1, min(speakers, parallel))
    stretched = max(interval, cost * speakers / (together * lanes), cost / share)
    if now - op.last_partial_request < stretched and not commits.confirms_pause(op, o) and not first_partial(op):
        return False
    least = o.min_partial_audio_ms
    if op.hears_before:  # maybe the rest of a cut sentence: its pause may commit it
        least = min(least, round(o.commit_min_after_cut_s * 1000) + o.commit_lookahead_ms)
    return op.utt.n >= least * SAMPLES_PER_MS


def first_partial(op: OpenUtterance) -> bool:
    """No partial of ``op``, a new utterance (not the rest of a cut one), has run yet: its first words are not
    held back by the cadence the load and the CPU budget stretch (:func:`partial_due`, :func:`partial_share`).
    One speaker's separated sentences go over the budget (0.40-0.55 core-s per audio-s with two-thread finals
    at beam 5): from the third sentence on their first words showed 2.1-2.3 s after the voice began, 0.75 s
    since; with four speakers on one lane 2.0 s (p50), 0.94 s since."""
    return not (op.after_commit or op.partial_heard)
