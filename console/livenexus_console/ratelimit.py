"""Per-key token buckets (the key is the client IP) with bounded memory."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    """Tokens left and when they were last counted."""

    tokens: float
    """Tokens available at ``stamp`` (fractional while refilling)."""
    stamp: float
    """Clock reading of the last update."""


@dataclass(frozen=True)
class Decision:
    """Outcome of one :meth:`RateLimiter.take`."""

    allowed: bool
    """True when a token was taken."""
    retry_after_s: int
    """Whole seconds until one token is available again (0 when allowed)."""
    remaining: int
    """Whole tokens left after this call."""


class RateLimiter:
    """``capacity`` tokens per key, refilled at ``rate_per_s``; least recently used keys beyond ``max_keys`` drop.

    Dropping a key forgets its debt, so ``max_keys`` must exceed the number of clients that can be throttled
    at once; evicting the least recently *used* key means a client that keeps asking is never the one dropped.
    """

    def __init__(
        self,
        capacity: int,
        rate_per_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or rate_per_s <= 0 or max_keys < 1:
            raise ValueError("capacity >= 1, rate_per_s > 0 and max_keys >= 1 are required")
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> Decision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.capacity), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self.capacity), bucket.tokens + elapsed * self.rate_per_s)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True, 0, int(bucket.tokens))
        wait = (1.0 - bucket.tokens) / self.rate_per_s
        return Decision(False, max(1, math.ceil(wait)), 0)
