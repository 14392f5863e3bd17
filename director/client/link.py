"""A node's CURVE link to its server, with handshake outcomes made visible.

ZeroMQ hides handshake failures behind silent reconnects; the socket monitor
turns them into events so a wrong server key or a refused node key becomes a
clear error instead of a hang.
"""

from __future__ import annotations

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from director.net import transport
from director.trust.keystore import KeyPair

EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Link:
    """DEALER + monitor.  ``poll_event`` reports "up", "auth", "handshake" or "down"."""

    def __init__(self, ctx: zmq.Context, pair: KeyPair, server_key: bytes, endpoint: str,
                 heartbeat_s: float):
        self.endpoint = endpoint
        # The monitor must exist before connect(): libzmq never reports events that
        # happened before zmq_socket_monitor, so a handshake finishing first (a busy
        # machine) left the link "down" forever -- no HELLO, no heartbeats.
        self.sock = transport.client_socket(ctx, pair, server_key, None, heartbeat_s)
        self.monitor = self.sock.get_monitor_socket(EVENTS)
        self.sock.connect(endpoint)
        self.up = False
        self.connects = 0
        self.failed_handshakes = 0
        self.quick = False          # the last failed handshake was closed by the peer fast
        self._connected_at: float | None = None
        self._failed = False        # this connection's failure was reported already

    def read_event(self) -> str | None:
        """Consume one monitor event; returns what it means for the link."""
        ev = recv_monitor_message(self.monitor)["event"]
        if ev == zmq.EVENT_CONNECTED:
            self.connects += 1
            self._connected_at, self._failed = time.monotonic(), False
            return None
        if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up = True
            self.failed_handshakes = 0
            return "up"
        if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.up = False
            return "auth"
        if ev in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self.failed_handshakes += 1
            return self._handshake_failed()
        if ev == zmq.EVENT_DISCONNECTED:
            was_up, self.up = self.up, False
            if not was_up:
                self.failed_handshakes += 1
                return self._handshake_failed()
            return "down"
        return None

    def _handshake_failed(self) -> str | None:
        """One report per connection (libzmq may send two events for one failure);
        ``quick`` when the peer closed it well before the handshake timeout."""
        if self._failed:
            return None
        self._failed = True
        at = self._connected_at
        self.quick = at is not None and time.monotonic() - at < transport.HANDSHAKE_MS / 2000
        return "handshake"

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(0)

