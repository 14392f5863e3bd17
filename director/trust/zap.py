"""Who may complete a CURVE handshake, and in which role.

``decide`` is the whole policy and is pure.  ``ZapGate`` is the thin adapter
that plugs it into pyzmq's ZAP authenticator thread through
``configure_curve_callback``; the ZAP User-Id it returns is the client's z85
public key, which the server reads from every received frame.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

ZAP_DOMAIN = "director"
log = logging.getLogger("director.zap")


class Role(enum.Enum):
    NODE = "node"          # accepted key: full node protocol
    PENDING = "pending"    # asked to join, waiting for an operator
    STRANGER = "stranger"  # unknown key: may only ask to enroll


@dataclass(frozen=True)
class Decision:
    allowed: bool
    role: Role | None
    reason: str


def decide(state: str | None, *, domain: str) -> Decision:
    """The ZAP policy for one handshake, from the key's current state."""
    if domain != ZAP_DOMAIN:
        return Decision(False, None, "wrong ZAP domain")
    if state == "accepted":
        return Decision(True, Role.NODE, "accepted key")
    if state == "pending":
        return Decision(True, Role.PENDING, "pending key")
    if state in ("rejected", "revoked"):
        return Decision(False, None, f"{state} key")
    if state is None:
        # Admitted even when the pending queue is full: the registry refuses new
        # *pending* requests then, so strangers cannot block token enrollment.
        return Decision(True, Role.STRANGER, "unknown key, enrollment only")
    return Decision(False, None, "unknown key state")


def role_of(state: str | None) -> Role | None:
    """The role a key's state gives it on each message (revocation applies at once)."""
    if state == "accepted":
        return Role.NODE
    if state == "pending":
        return Role.PENDING
    if state is None:
        return Role.STRANGER
    return None


class ZapGate:
    """Starts pyzmq's ZAP thread with ``decide`` as the CURVE policy.

    ``lookup(z85_key) -> state`` must be safe to call from the ZAP thread (plain
    dict reads are).  ``limit(address) -> reason | None`` is asked about every
    handshake that would not prove an accepted key (strangers, pending keys): the
    caps on unproven connections (server/connections.py); None admits.
    """

    def __init__(self, context, lookup: Callable[[str], str | None],
                 limit: Callable[[str], str | None] | None = None):
        import threading  # here, not at the top: the pure policy above needs no threads

        self._context = context
        self._lookup = lookup
        self._limit = limit
        self._auth = None
        self.denied = 0
        self.capped = 0
        self._held = 0
        self._logged_at = float("-inf")
        self._lock = threading.Lock()

    # pyzmq credentials-provider interface
    def callback(self, domain: str, key: bytes | str) -> bool:
        z85 = key.decode("ascii") if isinstance(key, bytes) else key
        d = decide(self._lookup(z85), domain=domain)
        if d.allowed and d.role is not Role.NODE and self._limit is not None:
            address = getattr(self._auth, "peer_address", "")
            reason = self._limit(address)
            if reason is not None:
                self.capped += 1
                d = Decision(False, None, reason)
        if not d.allowed:
            import time

            with self._lock:
                self.denied += 1
                now = time.monotonic()
                if now - self._logged_at < 60.0:  # one line a minute, however many
                    self._held += 1
                    return False
                held, self._held, self._logged_at = self._held, 0, now
            more = f" ({held} more refused in the last minute)" if held else ""
            log.info("handshake refused for key %r...: %s%s", z85[:8], d.reason, more)
        return d.allowed

    def start(self) -> None:
        auth = _authenticator_class()(self._context,
                                      log=logging.getLogger("director.zap.pyzmq"))
        auth.start()
        auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        self._auth = auth
        if not auth.is_alive():
            raise RuntimeError("ZAP handler did not start")

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def is_alive(self) -> bool:
        return self._auth is not None and self._auth.is_alive()


def _authenticator_class():
    """pyzmq's ZAP thread, keeping each request's Peer-Address for ``callback`` (the
    thread answers one request at a time, so one attribute is enough)."""
    from zmq.auth.thread import ThreadAuthenticator

    class AddressedAuthenticator(ThreadAuthenticator):
        peer_address = ""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            self.peer_address = msg[3].decode("ascii", "replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

    return AddressedAuthenticator
