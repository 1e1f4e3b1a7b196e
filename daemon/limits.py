"""Rate limits per client: token buckets, in a table that stays bounded however many clients there are."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

TABLE_LIMIT = 4096  # clients remembered at once; the least recently seen is forgotten first


class Buckets:
    """One token bucket per key (a client host or key id): `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def retune(self, rate: float, burst: float) -> None:
        """A new rate and burst (a reload), keeping what each key has spent: a reload refills no bucket."""
        self.rate, self.burst = rate, burst

    def take(self, key: str, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `key`'s bucket; False (and nothing spent) if it has not that many."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= cost
        self._buckets[key] = (tokens - cost if allowed else tokens, now)
        while len(self._buckets) > TABLE_LIMIT:
            self._buckets.popitem(last=False)
        return allowed

    def wait_for(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` could spend `cost` tokens (0 if it can now)."""
        tokens, then = self._buckets.get(key, (self.burst, self._clock()))
        tokens = min(self.burst, tokens + (self._clock() - then) * self.rate)
        return max(0.0, (cost - tokens) / self.rate)
