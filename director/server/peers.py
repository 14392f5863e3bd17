"""Connected keys: where to reach each one and whether it counts as online.

Pure bookkeeping (time comes in as ``now``).  A node's agent has one main
connection (HELLO, heartbeats, results) and side connections with the same key
(COPY pulls); jobs go to the route of the main one, so only the message types in
``ROUTE_FROM`` move a peer's route -- at once, HELLO or not: results a
reconnecting node sends before its HELLO already prove its new route.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ROUTE_FROM = frozenset({"HELLO", "HEARTBEAT", "ENROLL", "ENROLL_STATUS", "RESULT", "RESULTS"})
# what only a serving agent sends on its main connection: an accepted key heard saying
# one of these is online, HELLO or not (an agent whose connection never dropped does
# not say HELLO again after the server gave up on it; a frozen loop must not strand it)
AGENT_TRAFFIC = frozenset({"HEARTBEAT", "RESULT", "RESULTS"})
MAX_PEERS = 200_000     # keys the table holds at once (strangers included)
SEEN_EVERY = 60.0       # s: how often a talking node's last-seen time is written
MAX_SEEN_ROWS = 2000    # last-seen rows written in one go


@dataclass
class Peer:
    """What the server knows about a connected key."""

    key: str
    route: bytes | None  # None: its connection closed; nothing is sent until it speaks
    last_seen: float
    address: str | None = None
    version: str | None = None
    boot: str | None = None
    hello: bool = False  # an agent said HELLO (an enroll-only connection is not online)
    fd: int = -1         # the server-side socket of ``route`` (to notice it closing)
    written: float = float("-inf")  # when its last-seen row was last queued for writing
    silent: bool = False  # offline past its expiry, but its connection is still up


class Peers:
    def __init__(self, expiry: float):
        self.expiry = expiry
        self.by_key: dict[str, Peer] = {}
        # keys by when they were last heard from, oldest first: expiry looks at the front
        # only, so its cost follows the peers that expire, not the peers there are
        self._quiet: OrderedDict[str, None] = OrderedDict()
        self.resumed = float("-inf")  # the end of the server's last stall (see ``stalled``)
        self.went_offline: dict[str, float] = {}  # the last ``expired``'s gone: since when
        self.dirty: dict[str, tuple[float, str | None, str | None]] = {}  # last-seen rows
        # fd -> keys whose route came on it (may hold stale keys: checked when it closes),
        # so a closing connection costs its own keys, not a scan of every peer
        self._on_fd: dict[int, set[str]] = {}

    def get(self, key: str) -> Peer | None:
        return self.by_key.get(key)

    def online(self, key: str, now: float) -> bool:
        peer = self.by_key.get(key)
        return (peer is not None and peer.hello
                and now - max(peer.last_seen, self.resumed) <= self.expiry)

    def stalled(self, now: float) -> None:
        """The server did not read its sockets for a while (a long step, a paused
        process): what nodes sent meanwhile is still queued, unread, so their silence
        counts from ``now``; none expires before it had a full expiry to be heard."""
        self.resumed = now

    def route(self, key: str) -> bytes | None:
        peer = self.by_key.get(key)
        return peer.route if peer is not None else None

    def seen(self, key: str, route: bytes, address: str | None, mtype: str, now: float,
             node: bool, fd: int = -1) -> tuple[Peer, bool]:
        """Record traffic from ``key``; returns (peer, whether its route is new: a
        new peer, or one that moved or came back after its connection closed)."""
        peer = self.by_key.get(key)
        moved = peer is None
        if peer is None:
            if len(self.by_key) >= MAX_PEERS:
                self._evict(now)
            peer = self.by_key[key] = Peer(key, route, now, address, fd=fd)
            if fd >= 0:
                self._on_fd.setdefault(fd, set()).add(key)
        elif mtype in ROUTE_FROM and (peer.route != route or fd != peer.fd):
            peer.route, peer.fd, moved = route, fd, True
            if fd >= 0:
                self._on_fd.setdefault(fd, set()).add(key)
        peer.last_seen = now
        self._quiet[key] = None
        self._quiet.move_to_end(key)
        if address and address != peer.address:
            peer.address = address
            peer.written = float("-inf")
        if node:
            peer.silent = False
            if mtype in AGENT_TRAFFIC and not peer.hello:
                peer.hello = moved = True  # heard from, connection alive: online again
            if now - peer.written >= SEEN_EVERY:
                self.mark_dirty(peer)
        return peer, moved

    def mark_dirty(self, peer: Peer) -> None:
        """Queue the peer's last-seen row (written in bounded batches by the core)."""
        peer.written = peer.last_seen
        self.dirty[peer.key] = (peer.last_seen, peer.address, peer.version)

    def closed(self, fd: int) -> list[str]:
        """The connection on ``fd`` closed: keys whose route it was lose that route
        (a later connection presenting the same routing id gets nothing of theirs)."""
        gone = []
        for key in self._on_fd.pop(fd, ()):
            peer = self.by_key.get(key)
            if peer is not None and peer.fd == fd and peer.route is not None:
                peer.route, peer.fd = None, -1
                gone.append(key)
        return sorted(gone)

    def forget(self, key: str) -> Peer | None:
        self._quiet.pop(key, None)
        return self.by_key.pop(key, None)

    def expired(self, now: float) -> tuple[list[str], list[str]]:
        """Keys silent for longer than the expiry: (gone: forgotten, their last word
        queued for writing; silent: nodes that were online and whose connection is still
        up -- offline now, but kept, with their work, until they speak again or their
        connection closes).  Only the oldest are looked at."""
        limit = now - self.expiry
        if self.resumed > limit:
            return [], []  # after a stall, everyone gets a full expiry to be heard
        old = []
        for key in self._quiet:
            peer = self.by_key.get(key)
            if peer is not None and peer.last_seen >= limit:
                break
            old.append(key)
        gone, silent = [], []
        self.went_offline = {}
        for key in old:
            peer = self.by_key.get(key)
            if peer is not None and peer.fd >= 0 and peer.route is not None \
                    and (peer.hello or peer.silent):
                if not peer.silent:
                    peer.hello, peer.silent = False, True
                    silent.append(key)
                self._quiet.move_to_end(key)  # looked at again when the others are
                continue
            del self._quiet[key]
            self.by_key.pop(key, None)
            if peer is not None:
                gone.append(key)
                self.went_offline[key] = peer.last_seen + self.expiry
                if peer.hello:
                    self.mark_dirty(peer)
        return gone, silent

    def connected(self, key: str) -> bool:
        """Its connection is up (as far as the socket monitor tells)."""
        peer = self.by_key.get(key)
        return peer is not None and peer.route is not None

    def take_dirty(self, limit: int = MAX_SEEN_ROWS
                   ) -> dict[str, tuple[float, str | None, str | None]]:
        if len(self.dirty) <= limit:
            out, self.dirty = self.dirty, {}
            return out
        out = {}
        for key in list(self.dirty)[:limit]:
            out[key] = self.dirty.pop(key)
        return out

    def _evict(self, now: float) -> None:
        """Full: drop the longest-silent peers that never said HELLO (strangers first)."""
        quiet = sorted((p for p in self.by_key.values() if not p.hello),
                       key=lambda p: p.last_seen)[: max(1, len(self.by_key) // 10)]
        for p in quiet:
            del self.by_key[p.key]
            self._quiet.pop(p.key, None)
