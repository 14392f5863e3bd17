"""What connections that have not proven an accepted key may cost the server.

A connection is *unproven* from its TCP accept until a message from an accepted
key arrives on it: strangers (enrollment only), pending keys, and nodes that have
not said HELLO yet.  Anyone can open one, so they are capped in total and per
source address, may never eat the open files kept in reserve for the control
socket and accepted nodes, and may not grow the server's memory by more than a
budget (libzmq assembles a whole multipart message before handing over its first
frame, so the only bound on what one peer makes it buffer is to cut the peer).

Pure: the driver feeds it socket-monitor events, proofs, open-file counts and the
resident size, and executes the cuts it asks for.  The ZAP thread calls
``refusal``, which only reads ints and dicts (safe under the GIL).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_unproven: int = 1000
    per_address: int = 64
    fd_limit: int = 1 << 20
    fd_reserve: int = 64
    buffer_bytes: int = 128 << 20

    @staticmethod
    def reserve_for(fd_limit: int) -> int:
        """Open files strangers may never take: enough for the control socket, the
        database and a burst of reconnecting nodes."""
        return max(32, min(1024, fd_limit // 8))


AGE = 1.0  # seconds: a connection still unproven after this has passed its handshake


class ConnectionTable:
    """Every live connection on the node socket, and what the unproven ones count.

    What counts against the caps: handshakes admitted in the last ``AGE`` seconds
    (recorded by the ZAP thread, which alone writes ``_recent*``) plus connections
    that are still open and unproven after ``AGE`` (recorded by the loop, which
    alone writes the rest).  Connections refused at the handshake close within
    milliseconds, so a crowd retrying never counts against itself; raw connections
    that never handshake count once they are old, as they hold open files.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.peer: dict[int, tuple[str, int]] = {}   # fd -> (ip, port)
        self.proven: set[int] = set()
        self.other_fds = 0          # open files that are not connections
        self._young: deque[tuple[float, int, int]] = deque()  # (opened, fd, generation)
        self._gen: dict[int, int] = {}   # fd -> generation of the connection on it now
        self._opened = 0
        self._aged: dict[int, str] = {}  # fd -> ip of the connections counted old
        self.aged_by_address: dict[str, int] = {}
        self._recent: deque[tuple[float, str]] = deque()
        self._recent_by_address: dict[str, int] = {}
        self._floor: int | None = None  # resident size when the unproven were last none

    @property
    def unproven(self) -> int:
        return len(self.peer) - len(self.proven)

    # -- the loop: what the socket monitor and the core report --------------------
    def opened(self, fd: int, peer: tuple[str, int], now: float) -> None:
        if fd in self.peer:
            self.closed(fd)  # a missed close: the number was reused
        self.peer[fd] = peer
        self._opened += 1
        self._gen[fd] = self._opened
        self._young.append((now, fd, self._opened))

    def closed(self, fd: int) -> None:
        if self.peer.pop(fd, None) is None:
            return
        self._gen.pop(fd, None)
        self.proven.discard(fd)
        self._unage(fd)

    def proved(self, fd: int) -> None:
        """A message from an accepted key arrived on ``fd``."""
        if fd in self.peer:
            self.proven.add(fd)
            self._unage(fd)

    def age(self, now: float) -> None:
        """Connections past ``AGE`` that are still open and unproven start counting."""
        young = self._young
        while young and now - young[0][0] >= AGE:
            _, fd, gen = young.popleft()
            if self._gen.get(fd) == gen and fd not in self.proven and fd not in self._aged:
                ip = self._aged[fd] = self.peer[fd][0]
                self.aged_by_address[ip] = self.aged_by_address.get(ip, 0) + 1

    def _unage(self, fd: int) -> None:
        ip = self._aged.pop(fd, None)
        if ip is None:
            return
        left = self.aged_by_address.get(ip, 1) - 1
        if left > 0:
            self.aged_by_address[ip] = left
        else:
            self.aged_by_address.pop(ip, None)

    def recount(self, open_fds: int) -> None:
        """The process's open files now; what is not a connection is overhead."""
        self.other_fds = max(0, open_fds - len(self.peer))

    # -- the ZAP thread ------------------------------------------------------------
    def refusal(self, address: str, now: float) -> str | None:
        """Why a handshake that would not prove an accepted key is refused, or None
        (then it is recorded as admitted)."""
        recent, by_address = self._recent, self._recent_by_address
        while recent and now - recent[0][0] >= AGE:
            _, ip = recent.popleft()
            left = by_address.get(ip, 1) - 1
            if left > 0:
                by_address[ip] = left
            else:
                by_address.pop(ip, None)
        lim = self.limits
        if self.aged_by_address.get(address, 0) + by_address.get(address, 0) >= lim.per_address:
            return f"more than {lim.per_address} unproven connections from {address}"
        if len(self._aged) + len(recent) >= lim.max_unproven:
            return f"more than {lim.max_unproven} unproven connections"
        if self.fds_free() < lim.fd_reserve:
            return "open files are kept for accepted nodes"
        recent.append((now, address))
        by_address[address] = by_address.get(address, 0) + 1
        return None

    # -- decisions ----------------------------------------------------------------
    def fds_free(self) -> int:
        return self.limits.fd_limit - self.other_fds - len(self.peer)

    def to_cut(self, rss: int) -> list[int]:
        """Unproven connections to cut now, given the resident size in bytes: all of
        them when memory grew past the budget while they were open, or when open
        files ran into half the reserve (raw connections that never handshake)."""
        if not self.unproven:
            self._floor = None
            return []
        if self._floor is None or rss < self._floor:
            self._floor = rss
        over_memory = rss - self._floor > self.limits.buffer_bytes
        over_files = self.fds_free() < self.limits.fd_reserve // 2
        if not (over_memory or over_files):
            return []
        self._floor = None
        return [fd for fd in self.peer if fd not in self.proven]
