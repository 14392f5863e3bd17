"""How the agent reads its link's handshakes: one log line per state change, and
when a peer that keeps closing handshakes is not the pinned server at all.

Pure: the core feeds it link events with ``now``; it returns a reason to stop or None.
"""

from __future__ import annotations

import logging

log = logging.getLogger("director.client")

# a peer that closes every handshake this many times, over at least this long, is not
# the pinned server (a server merely down or slow never closes handshakes quickly)
MISMATCH_TRIES = 20
MISMATCH_SPAN = 15.0


class LinkState:
    def __init__(self) -> None:
        self.where = "the server"     # for messages: the driver names the address
        self._noted = ""              # last state logged
        self._since: float | None = None
        self._count = 0

    def up(self) -> None:
        self._noted, self._since, self._count = "up", None, 0

    def down(self) -> None:
        self._note("down", "lost the server; reconnecting")

    def failed(self, now: float, quick: bool) -> str | None:
        """``quick``: the peer closed the connection during the handshake (something
        answers at the address, but cannot prove the pinned key); otherwise nothing
        answered in time (network or server down: retried forever)."""
        if not quick:
            self._since, self._count = None, 0
            self._note("silent", f"no handshake answer from {self.where}; retrying"
                       " (server down or network cut?)")
            return None
        if self._since is None:
            self._since, self._count = now, 0
        self._count += 1
        self._note("mismatch", f"{self.where} answers but does not prove the pinned server"
                   " key; retrying a little")
        if self._count >= MISMATCH_TRIES and now - self._since >= MISMATCH_SPAN:
            return (f"{self.where} does not hold the pinned server key: it is another"
                    " server, or the server's key changed (check server_address, or"
                    " enroll this home again)")
        return None

    def _note(self, state: str, line: str) -> None:
        """Log when the state changes: a server down for hours is one line."""
        if self._noted != state:
            self._noted = state
            log.warning("%s", line)
