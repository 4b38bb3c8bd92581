"""Reconnect pacing: a connection that drops at once must not reset the delay (the kick loop of issue 13)."""

from __future__ import annotations

import random

import pytest

from livenexus_worker.room.backoff import Backoff, BackoffOptions


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def connects_in(window_s: float, lasts_s: float, seed: int = 1) -> int:
    """Connections in ``window_s`` when each one is kicked after ``lasts_s`` (two workers, one identity)."""
    clock = Clock()
    b = Backoff(BackoffOptions(initial_s=0.5, max_s=30, stable_s=30), clock, random.Random(seed))
    n = 0
    while clock.t < window_s:
        n += 1
        b.connected()
        clock.t += lasts_s
        clock.t += b.next_delay()
    return n


def test_short_lived_connections_keep_backing_off() -> None:
    # ~42 connects in 3 s were measured with a backoff that reset on every connect (each kick after ~70 ms).
    assert connects_in(3.0, 0.07) <= 4
    assert connects_in(60.0, 0.07) <= 9  # 0.5, 1, 2, 4, 8, 16, 30 ... with jitter at most halving each


def test_a_stable_connection_starts_the_series_over() -> None:
    clock = Clock()
    b = Backoff(BackoffOptions(initial_s=1, max_s=60, stable_s=30, jitter=0), clock)
    assert [b.next_delay() for _ in range(4)] == [1, 2, 4, 8]
    b.connected()
    clock.t += 29
    assert b.next_delay() == 16, "29 s is not stable yet"
    b.connected()
    clock.t += 30
    assert b.next_delay() == 1


def test_a_floor_moves_the_series_on() -> None:
    b = Backoff(BackoffOptions(initial_s=0.5, max_s=60, jitter=0))
    assert b.next_delay() == 0.5
    assert b.next_delay(5.0) == 8.0  # the first doubling of 0.5 that reaches 5 s
    assert b.next_delay() == 16.0
    assert Backoff(BackoffOptions(initial_s=0.5, max_s=3, jitter=0)).next_delay(5.0) == 3.0


def test_delays_are_capped_and_jittered() -> None:
    a = Backoff(BackoffOptions(initial_s=0.5, max_s=10, jitter=0.5), rng=random.Random(1))
    c = Backoff(BackoffOptions(initial_s=0.5, max_s=10, jitter=0.5), rng=random.Random(2))
    da, dc = [a.next_delay() for _ in range(200)], [c.next_delay() for _ in range(200)]
    assert all(5 <= d <= 10 for d in da[10:]) and max(da) <= 10
    assert da != dc, "two workers must not retry in lockstep"


@pytest.mark.parametrize("kw", [{"initial_s": 0}, {"initial_s": 5, "max_s": 1}, {"jitter": 2}, {"stable_s": -1}])
def test_bad_options(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffOptions(**kw)
