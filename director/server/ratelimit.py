"""Rate limits for what a peer can make the server say: log lines and ERROR replies.

Pure (time comes in as ``now``) and bounded: a flood of bad messages costs one log
line per key and reason a minute ("... 412 more in the last minute") and a few
ERROR replies a second, however many keys the flood uses.
"""

from __future__ import annotations

from cachetools import LRUCache

LOG_EVERY = 60.0       # seconds between log lines for one key and reason
ERRORS_PER_SECOND = 5  # ERROR replies one key may cause, on average
ERROR_BURST = 20
TRACKED = 10_000       # keys (and reasons) remembered; the oldest are forgotten


class LogLimiter:
    """One line per (key, reason) per LOG_EVERY; the lines between are counted."""

    def __init__(self, every: float = LOG_EVERY, size: int = TRACKED):
        self.every = every
        self._last: LRUCache = LRUCache(maxsize=size)   # (key, reason) -> [time, skipped]

    def allow(self, key: str, reason: str, now: float) -> tuple[bool, int]:
        """(log it now?, how many were held back since the last line)."""
        slot = self._last.get((key, reason))
        if slot is None or now - slot[0] >= self.every:
            skipped = slot[1] if slot is not None else 0
            self._last[(key, reason)] = [now, 0]
            return True, skipped
        slot[1] += 1
        return False, slot[1]


class ReplyLimiter:
    """A token bucket per key: ERROR replies beyond it are not sent (logged instead)."""

    def __init__(self, rate: float = ERRORS_PER_SECOND, burst: int = ERROR_BURST,
                 size: int = TRACKED):
        self.rate, self.burst = rate, burst
        self._buckets: LRUCache = LRUCache(maxsize=size)   # key -> [tokens, time]

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.burst), now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
