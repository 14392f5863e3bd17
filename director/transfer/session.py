"""The node's windowed pull of missing chunks: pure state, no I/O, no clock.

The agent asks :meth:`PullSession.next_requests` what to send, feeds every
CHUNK reply to :meth:`PullSession.on_chunk` and calls
:meth:`PullSession.on_timeout` when its own timer fires.  Each request
licenses exactly one reply: a reply nobody asked for is the peer's fault
(``ProtocolError``), while a late reply to a request that timed out and was
re-sent is still welcome (networks are slow, not hostile, by default).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Sequence

from director.errors import ProtocolError
from director.transfer.manifest import digest_of

Key = tuple[int, int]


@dataclass(frozen=True)
class PullStats:
    chunks_received: int
    bytes_received: int
    retries: int


class PullSession:
    """Keeps up to ``window`` chunk requests in flight; verifies every chunk on arrival."""

    def __init__(self, needed: Sequence[Key], expected: Callable[[int, int], str],
                 window: int = 8, max_retries: int = 3) -> None:
        if window < 1 or max_retries < 0:
            raise ValueError("window must be >= 1 and max_retries >= 0")
        self._expected = expected
        self.window = window
        self.max_retries = max_retries
        self._needed = set(needed)
        self._queue: deque[Key] = deque(dict.fromkeys(needed))  # de-duplicated, in order
        self._in_flight: dict[Key, None] = {}  # ordered set
        self._outstanding: Counter[Key] = Counter()  # requests sent, not yet answered
        self._received: set[Key] = set()
        self._attempts: Counter[Key] = Counter()
        self.failed: str | None = None
        self._chunks = self._bytes = self._retries = 0

    @property
    def done(self) -> bool:
        return self.failed is None and len(self._received) == len(self._needed)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def remaining(self) -> int:
        return len(self._needed) - len(self._received)

    @property
    def stats(self) -> PullStats:
        return PullStats(self._chunks, self._bytes, self._retries)

    def next_requests(self) -> list[Key]:
        """Chunks to request now, filling the window; [] when done or failed."""
        if self.failed is not None:
            return []
        out = []
        while self._queue and len(self._in_flight) < self.window:
            key = self._queue.popleft()
            self._in_flight[key] = None
            self._outstanding[key] += 1
            out.append(key)
        return out

    def on_chunk(self, f: int, c: int, data: bytes) -> bool:
        """Accept one chunk; True if it was new and verified (the caller stores it)."""
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (f, c)):
            raise ProtocolError("chunk address must be two integers")
        key = (f, c)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError("chunk payload must be bytes")
        if key not in self._needed:
            raise ProtocolError(f"chunk {f}/{c} was never needed")
        if not self._outstanding[key]:
            what = "duplicate" if key in self._received else "unrequested"
            raise ProtocolError(f"{what} chunk {f}/{c}")
        self._outstanding[key] -= 1
        if key in self._received or self.failed is not None:
            return False  # late answer to a re-sent request, or already given up
        self._in_flight.pop(key, None)
        if digest_of(bytes(data)) != self._expected(f, c):
            self._retry(key, "failed verification")
            return False
        try:
            self._queue.remove(key)  # a timed-out request answered after all
        except ValueError:
            pass
        self._received.add(key)
        self._chunks += 1
        self._bytes += len(data)
        return True

    def on_error(self, f: int, c: int, reason: str) -> None:
        """The server could not serve a requested chunk: the transfer cannot finish."""
        key = (f, c)
        if key not in self._in_flight:
            raise ProtocolError(f"error for chunk {f}/{c} that is not in flight")
        self._outstanding[key] -= 1
        self._in_flight.pop(key)
        self._fail(f"server could not send chunk {f}/{c}: {reason}")

    def on_timeout(self) -> None:
        """Nothing arrived in time: re-queue every in-flight chunk (one retry each)."""
        for key in reversed(list(self._in_flight)):
            if self.failed is not None:
                break
            self._in_flight.pop(key, None)
            self._retry(key, "timed out")

    def _retry(self, key: Key, why: str) -> None:
        self._attempts[key] += 1
        self._retries += 1
        if self._attempts[key] > self.max_retries:
            self._fail(f"chunk {key[0]}/{key[1]} {why} after {self.max_retries} retries")
        elif key not in self._queue:
            self._queue.appendleft(key)

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        self._queue.clear()
        self._in_flight.clear()
