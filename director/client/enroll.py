"""``director enroll``: create this node's key, pin the server, ask to join."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import zmq

from director import __version__
from director.client import pinning
from director.client.link import Link
from director.config import Settings, server_endpoint
from director.errors import ConnectionFailed, DirectorError, ProtocolError
from director.net.transport import send_msg
from director.protocol import messages as M
from director.trust import keystore
from director.trust.keyfmt import parse_public_key
from director.trust.tokens import JoinToken

log = logging.getLogger("director.enroll")


@dataclass(frozen=True)
class Outcome:
    state: str   # accepted | pending | refused
    name: str
    fingerprint: str
    reason: str = ""
    created_key: bool = False


def resolve_server_key(token: str | None, server_key: str | None) -> bytes:
    if token:
        return JoinToken.decode(token).server_key
    if server_key:
        return parse_public_key(server_key)
    raise DirectorError("give --token TOKEN or --server-key KEY (see: director keys server)")


def enroll(settings: Settings, *, server: str, token: str | None, server_key: str | None,
           name: str, wait: bool, timeout: float = 10.0) -> Outcome:
    """Ask the server at ``server`` to accept this node; never hangs past ``timeout``."""
    key = resolve_server_key(token, server_key)
    pinned_before = pinning.load(settings.home)
    if pinned_before is not None and pinned_before.server_key != key:
        raise DirectorError(
            f"this home is already pinned to another server key ({pinning.path(settings.home)});"
            " use a fresh --home or remove that file to re-pin"
        )
    endpoint = server_endpoint(_with_address(settings, server))
    check_resolves(endpoint)  # before anything is written: a typo writes no key
    keystore.ensure_private_dir(keystore.keys_dir(settings.home))
    pair, created = keystore.load_or_create(settings.home)
    ctx = zmq.Context()
    link = Link(ctx, pair, key, endpoint, settings.heartbeat_interval)
    try:
        return _converse(link, settings, server, key, name, token, wait, timeout,
                         pair.fingerprint, created)
    finally:
        link.close()
        ctx.term()


def check_resolves(endpoint: str) -> None:
    """Refuse a host name that does not resolve, naming it (ZeroMQ would retry it silently
    until the answer timeout, which reads like a server that is down)."""
    import socket

    host, _, port = endpoint.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else "bad name"
        raise ConnectionFailed(f"cannot resolve {host}: {why} (check the --server address)"
                               ) from None


def _with_address(settings: Settings, server: str) -> Settings:
    from dataclasses import replace

    return replace(settings, server_address=server)


def _converse(link: Link, settings: Settings, server: str, key: bytes, name: str,
              token: str | None, wait: bool, timeout: float, fp: str,
              created: bool) -> Outcome:
    poller = zmq.Poller()
    poller.register(link.sock, zmq.POLLIN)
    poller.register(link.monitor, zmq.POLLIN)
    send_msg(link.sock, M.Enroll(name, token or None, __version__))
    deadline = time.monotonic() + timeout
    next_ask = time.monotonic() + 5.0
    while True:
        now = time.monotonic()
        if not wait and now >= deadline:
            raise ConnectionFailed(
                f"no answer from {server} within {timeout:g} s: check the address and port,"
                " and that the server is running"
            )
        limit = min(deadline if not wait else now + 5.0, next_ask) - now
        events = dict(poller.poll(max(1, int(limit * 1000))))
        if link.monitor in events:
            what = link.read_event()
            if what == "auth":
                return Outcome("refused", name, fp, "the server refused this node's key"
                               " (rejected, revoked, or too many pending enrollments)", created)
            if what == "handshake" and link.failed_handshakes >= 2:
                raise ConnectionFailed(
                    f"secure handshake with {server} failed: the server's key does not match"
                    " the pinned key (wrong --server-key or token for this server?)"
                )
        if link.sock in events:
            try:
                msg = M.decode(link.sock.recv_multipart())
            except ProtocolError as exc:
                raise ConnectionFailed(f"bad answer from {server}: {exc}") from None
            cls = msg.__class__
            if cls is M.Enrolled:
                state = msg.state
                if state in ("accepted", "pending"):
                    pinning.save(settings.home, pinning.Pinned(server, key, msg.name or name))
                if state == "pending" and wait:
                    log.info("pending: waiting for an operator to accept %s", msg.name)
                    continue
                return Outcome(state if state in ("accepted", "pending") else "refused",
                               msg.name or name, fp, msg.reason, created)
            if cls is M.Revoked:
                return Outcome("refused", name, fp, msg.reason, created)
            if cls is M.Error:
                return Outcome("refused", name, fp, msg.message, created)
        if wait and time.monotonic() >= next_ask:
            send_msg(link.sock, M.EnrollStatus())
            next_ask = time.monotonic() + 5.0
