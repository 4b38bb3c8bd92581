from __future__ import annotations

import numpy as np

from livenexus_worker.streaming.segmenter import SegmenterOptions, Utterance, cut_point, quietest_cut


def loud(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n) * 8000).astype(np.int16)


def test_quietest_cut_finds_the_pause() -> None:
    audio = np.concatenate([loud(16000), np.zeros(3200, dtype=np.int16), loud(16000)])
    cut = quietest_cut(audio, 0, len(audio), 1600)
    assert 16000 <= cut <= 16000 + 3200


def test_no_cut_below_cap_and_cut_in_pause_above() -> None:
    o = SegmenterOptions(max_utterance_s=3.0, search_s=1.5)
    u = Utterance("s-1", 0)
    u.append(loud(16000 * 2))
    assert cut_point(u, o) is None
    u.append(np.zeros(1600, dtype=np.int16))
    u.append(loud(16000))
    cut = cut_point(u, o)
    assert cut is not None and 32000 <= cut <= 33600


def test_split_keeps_positions() -> None:
    u = Utterance("s-1", 1000)
    u.append(np.arange(100, dtype=np.int16))
    head, rest = u.split_at(40, "s-2")
    assert head.shape[0] == 40
    assert rest.start_sample == 1040 and rest.n == 60 and rest.segment_id == "s-2"
    assert int(rest.audio()[0]) == 40
