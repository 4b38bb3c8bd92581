"""Reconnect pacing: jittered exponential backoff that only forgives after a stable connection.

Resetting the delay on every successful connect is what let two workers with one identity kick each other
out ~14 times a second: each kick is a "success" followed at once by a drop. Here a connection must last
``stable_s`` before the delay starts over, and the jitter keeps two workers from retrying in lockstep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffOptions:
    """Reconnect pacing."""

    initial_s: float = 0.5
    """Delay before the first retry; it doubles per attempt that did not last ``stable_s``."""
    max_s: float = 30.0
    """Delay cap."""
    stable_s: float = 30.0
    """A connection that lasted this long resets the delay to ``initial_s``."""
    jitter: float = 0.5
    """Fraction of each delay that is random (0: none; 0.5: uniform in [delay/2, delay])."""

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.stable_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"bad backoff options: {self}")


@dataclass
class Backoff:
    """Call :meth:`connected` when a connection is up, :meth:`next_delay` before each retry."""

    options: BackoffOptions = field(default_factory=BackoffOptions)
    """Pacing."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds (tests pass their own)."""
    rng: random.Random = field(default_factory=random.Random)
    """Jitter source (tests pass a seeded one)."""

    def __post_init__(self) -> None:
        self._attempt = 0
        self._connected_at: float | None = None

    def connected(self) -> None:
        self._connected_at = self.clock()

    def next_delay(self, at_least_s: float = 0.0) -> float:
        """The wait before the next attempt; a connection that held ``stable_s`` starts the series over.
        ``at_least_s`` moves the series on until its delay reaches that (before jitter), and it doubles on
        from there."""
        if self._connected_at is not None and self.clock() - self._connected_at >= self.options.stable_s:
            self._attempt = 0
        self._connected_at = None
        o = self.options
        while self._attempt < 62 and o.initial_s * 2.0 ** self._attempt < min(at_least_s, o.max_s):
            self._attempt += 1
        base = min(o.max_s, o.initial_s * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        return base * (1.0 - o.jitter * self.rng.random())
