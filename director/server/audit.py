"""Security events kept for operators (``director events``): who tried what, when, from where.

Pure: the core records events here as they happen; they are written to the store
in batches on each tick, and the store keeps the newest ``KEEP``.  Never a secret:
a key appears only as its fingerprint, a token only by its id.
"""

from __future__ import annotations

import logging

from director.errors import DirectorError
from director.trust.keyfmt import fingerprint, z85_to_key

log = logging.getLogger("director.events")
KEEP = 10_000      # events kept in the database
PENDING = 10_000   # events held in memory while the store cannot take them
WARN = frozenset({"name_conflict", "name_claim", "token_refused", "enroll_refused",
                  "handshake_refused"})


def key_fingerprint(key: str) -> str:
    try:
        return fingerprint(z85_to_key(key)) if key else ""
    except (DirectorError, ValueError):
        return ""


class Audit:
    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.dropped = 0

    def record(self, now: float, event: str, key: str = "", name: str = "",
               address: str | None = "", detail: str = "") -> None:
        fp = key_fingerprint(key)
        level = logging.WARNING if event in WARN else logging.INFO
        log.log(level, "security event %s: %r %s %s %s", event, name[:64], fp, address or "",
                detail[:200])
        if len(self.pending) >= PENDING:  # the store is failing: keep the newest
            del self.pending[0]
            self.dropped += 1
        self.pending.append((now, event, fp, name[:253], (address or "")[:100], detail[:500]))

    def flush(self, store) -> None:
        """Write what was recorded; on a storage failure keep it for the next tick."""
        if not self.pending:
            return
        store.add_events(self.pending, KEEP)
        self.pending = []
