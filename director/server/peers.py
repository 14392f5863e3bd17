"""Connected keys: where to reach each one and whether it counts as online.

Pure bookkeeping (time comes in as ``now``).  A node's agent has one main
connection (HELLO, heartbeats, results) and side connections with the same key
(COPY pulls); jobs go to the route of the main one, so only the message types in
``ROUTE_FROM`` move a peer's route -- at once, HELLO or not: results a
reconnecting node sends before its HELLO already prove its new route.
"""

from __future__ import annotations

from dataclasses import dataclass

ROUTE_FROM = frozenset({"HELLO", "HEARTBEAT", "ENROLL", "ENROLL_STATUS", "RESULT", "RESULTS"})
MAX_PEERS = 200_000     # keys the table holds at once (strangers included)


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


class Peers:
    def __init__(self, expiry: float):
        self.expiry = expiry
        self.by_key: dict[str, Peer] = {}
        self.dirty: dict[str, tuple[float, str | None, str | None]] = {}  # last-seen rows

    def get(self, key: str) -> Peer | None:
        return self.by_key.get(key)

    def online(self, key: str, now: float) -> bool:
        peer = self.by_key.get(key)
        return peer is not None and peer.hello and now - peer.last_seen <= self.expiry

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
        elif mtype in ROUTE_FROM and (peer.route != route or fd != peer.fd):
            peer.route, peer.fd, moved = route, fd, True
        peer.last_seen = now
        if address:
            peer.address = address
        if node:
            self.dirty[key] = (now, peer.address, peer.version)
        return peer, moved

    def closed(self, fd: int) -> list[str]:
        """The connection on ``fd`` closed: keys whose route it was lose that route
        (a later connection presenting the same routing id gets nothing of theirs)."""
        gone = [p.key for p in self.by_key.values() if p.fd == fd and p.route is not None]
        for key in gone:
            peer = self.by_key[key]
            peer.route, peer.fd = None, -1
        return gone

    def forget(self, key: str) -> Peer | None:
        return self.by_key.pop(key, None)

    def expired(self, now: float) -> list[str]:
        """Keys silent for longer than the expiry: forgotten and returned."""
        gone = [k for k, p in self.by_key.items() if now - p.last_seen > self.expiry]
        for k in gone:
            del self.by_key[k]
        return gone

    def take_dirty(self) -> dict[str, tuple[float, str | None, str | None]]:
        out, self.dirty = self.dirty, {}
        return out

    def _evict(self, now: float) -> None:
        """Full: drop the longest-silent peers that never said HELLO (strangers first)."""
        quiet = sorted((p for p in self.by_key.values() if not p.hello),
                       key=lambda p: p.last_seen)[: max(1, len(self.by_key) // 10)]
        for p in quiet:
            del self.by_key[p.key]
