"""When each room is next refreshed, and how failures push that back (pure: the clock is passed in).

Three rules keep an API server that is overloaded or restarting from being hammered by the operator:

* new rooms get a random first due time inside one interval, so 1,000 rooms at start-up (or after a
  restart of the operator) spread over the interval instead of arriving in one burst;
* a room whose refresh failed is retried after an exponential, jittered delay (never sooner than the
  server's Retry-After), not after the full interval and not at once;
* a 429, 5xx or unreachable server pauses *all* refreshes (exponentially, until one succeeds): when the
  server is the problem, every room would fail the same way, so one probe at a time is enough.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


def backoff_delay(
    failures: int, base_s: float, max_s: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before retry number ``failures`` (1 = first retry): base·2^(n-1), capped, jittered to 50–100 %.

    Jitter keeps rooms that failed together from retrying together; Retry-After is a floor the jitter
    never goes below (the server said when it can take the request).
    """
    n = max(1, failures)
    raw = min(max_s, base_s * 2.0 ** min(n - 1, 30))
    delay = raw * (0.5 + 0.5 * (rng or random).random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_s))
    return delay


@dataclass
class RefreshSchedule(Generic[Key]):
    """Due times per room, per-room failure counts and one global pause."""

    interval_s: float
    """Normal time between two refreshes of one room."""
    retry_base_s: float = 1.0
    """First retry delay after a failure (doubles with each further failure)."""
    retry_max_s: float = 300.0
    """Upper bound of any retry delay or pause."""
    rng: random.Random = field(default_factory=random.Random)
    """Source of the jitter and of the first due times (seeded in tests)."""
    paused_until: float = 0.0
    """No refresh starts before this time (monotonic seconds)."""
    _due: dict[Key, float] = field(default_factory=dict, repr=False)
    """Room → when it is next due."""
    _failures: dict[Key, int] = field(default_factory=dict, repr=False)
    """Room → consecutive failed refreshes."""
    _global_failures: int = field(default=0, repr=False)
    """Consecutive server-side failures across all rooms (drives the pause)."""

    def due(self, keys: Iterable[Key], now: float) -> list[Key]:
        """The rooms of ``keys`` due at ``now`` (none while paused); rooms seen for the first time are
        scheduled at a random point of the coming interval. Rooms not in ``keys`` are forgotten."""
        live = set(keys)
        for gone in [k for k in self._due if k not in live]:
            self.forget(gone)
        for key in live:
            if key not in self._due:
                self._due[key] = now + self.rng.random() * self.interval_s
        if now < self.paused_until:
            return []
        return [k for k, at in self._due.items() if at <= now]

    def reconciled(self, key: Key, now: float, next_in: float | None = None) -> None:
        """The room was reconciled successfully (by any path): next refresh one interval later, or after
        ``next_in`` when that is sooner (a room waiting for its Secret)."""
        self._due[key] = now + min(self.interval_s, next_in if next_in is not None else self.interval_s)
        self._failures.pop(key, None)
        self._global_failures = 0

    def failed(self, key: Key, now: float, retry_after: float | None = None, server: bool = False) -> float:
        """Requeue ``key`` after a failure; ``server`` (429/5xx/unreachable) also pauses everyone.
        Returns the room's delay."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        delay = backoff_delay(n, self.retry_base_s, self.retry_max_s, retry_after, self.rng)
        self._due[key] = now + delay
        if server:
            self._global_failures += 1
            pause = backoff_delay(self._global_failures, self.retry_base_s, self.retry_max_s, retry_after, self.rng)
            self.paused_until = max(self.paused_until, now + pause)
        return delay

    def postpone(self, key: Key, at: float) -> None:
        """Put ``key`` back untried (it was picked before a pause began)."""
        self._due[key] = max(self._due.get(key, at), at)

    def forget(self, key: Key) -> None:
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def __len__(self) -> int:
        return len(self._due)
