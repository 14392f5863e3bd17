"""The local control socket: how the operator CLI reaches its own server.

It is an ``ipc://`` socket in ``HOME/run/`` -- a 0700 directory holding a
0600 socket -- so only the server's own user can connect; no CURVE is
needed on a path the kernel already guards.  Requests are ``CTL`` messages;
the server answers with one ``CTL_REPLY`` and, for waiting commands, any
number of ``CTL_EVENT`` messages before it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from director.errors import ConfigError, ConnectionFailed, DirectorError, ProtocolError
from director.protocol.control import Ctl, CtlEvent, CtlPart, CtlReply, decode, encode
from director.trust.keystore import ensure_private_dir

MAX_IPC_PATH = 100


def socket_path(home: str | Path) -> Path:
    return Path(home) / "run" / "control.sock"


def endpoint(home: str | Path) -> str:
    path = socket_path(home)
    if len(str(path)) > MAX_IPC_PATH:
        raise ConfigError(f"home path too long for a control socket ({path}); use a shorter --home")
    return f"ipc://{path}"


def bind(ctx: zmq.Context, home: str | Path) -> zmq.Socket:
    """Bind the control ROUTER; refuses when another live process owns it."""
    ensure_private_dir(Path(home) / "run")
    path = socket_path(home)
    if path.exists() or path.is_symlink():
        if ping(home, timeout=0.5):
            raise ConfigError(f"another director is already running in {home}")
        path.unlink()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.maxmsgsize = 64 * 1024 * 1024
    sock.router_mandatory = True
    old = os.umask(0o177)
    try:
        sock.bind(endpoint(home))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


class ControlClient:
    """The CLI side: one DEALER, one request at a time, waits on the socket."""

    def __init__(self, home: str | Path, timeout: float = 10.0):
        self.home = Path(home)
        self.timeout = timeout
        path = socket_path(home)
        try:
            present = path.exists()
        except PermissionError:
            present = True  # it may well be there: the access check below says so
        if present and not (os.access(path.parent, os.X_OK)
                            and os.access(path, os.R_OK | os.W_OK)):
            raise ConnectionFailed(
                f"cannot reach the server's control socket in {self.home}: permission"
                " denied (it serves only the user it runs as)")
        if not present:
            raise ConnectionFailed(
                f"no director running in {self.home} (no {path.name}): start it with"
                f" 'director --home {self.home} server' or pass the right --home"
            )
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint(home))

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, op: str, args: dict[str, Any] | None = None) -> None:
        self.sock.send_multipart(encode(Ctl(op, args or {})))

    def recv(self, timeout: float | None = None) -> CtlReply | CtlEvent | CtlPart:
        """The next reply or event; anything else from the socket is a ProtocolError."""
        t = self.timeout if timeout is None else timeout
        if not self.sock.poll(int(t * 1000) if t is not None and t >= 0 else None):
            raise ConnectionFailed(
                f"the director in {self.home} did not answer within {t:g} s"
            )
        msg = decode(self.sock.recv_multipart())
        if not isinstance(msg, (CtlReply, CtlEvent, CtlPart)):
            raise ProtocolError(f"unexpected {msg.TYPE} from the control socket")
        return msg

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """One request, one reply; a refused request raises DirectorError."""
        self.send(op, args)
        return result_of(self.recv())

    def stream(self, op: str, args: dict[str, Any] | None = None,
               timeout: float | None = None) -> Iterator[CtlReply | CtlEvent]:
        """Yield CtlEvent messages until the final CtlReply (yielded last)."""
        self.send(op, args)
        while True:
            msg = self.recv(timeout)
            yield msg
            if isinstance(msg, CtlReply):
                return


def peer_uid(peer_address: str) -> int | None:
    """The user id libzmq read with SO_PEERCRED for an ipc connection: its
    ``Peer-Address`` is ``HOST:UID:GID:PID``; None when it is not that."""
    parts = peer_address.split(":")
    if len(parts) < 4 or not parts[-3].isdigit():
        return None
    return int(parts[-3])


def refuses_peer(peer_address: str, own_uid: int) -> bool:
    """The control socket serves its own user (and root, who can read the keys
    anyway); file permissions say the same, this holds even if they are loosened.
    A peer whose credentials cannot be read (no SO_PEERCRED) is served: the
    0700 directory and 0600 socket still guard it."""
    uid = peer_uid(peer_address)
    return uid is not None and uid not in (own_uid, 0)


def result_of(msg: CtlReply | CtlEvent) -> Any:
    """The result a CtlReply carries; a refusal raises DirectorError with its exit code."""
    if not isinstance(msg, CtlReply):
        raise ProtocolError(f"unexpected {msg.TYPE} from the control socket")
    if not msg.ok:
        err = DirectorError(msg.error or "request failed")
        err.exit_code = msg.code or 1
        raise err
    if msg.result_json:
        try:
            return json.loads(msg.data)
        except (ValueError, RecursionError):
            raise ProtocolError("CTL_REPLY: result payload is not valid JSON") from None
    return msg.result


def ping(home: str | Path, timeout: float = 1.0) -> dict[str, Any] | None:
    """The health answer of whatever runs in ``home``, or None."""
    try:
        with ControlClient(home, timeout=timeout) as c:
            return c.call("health")
    except (DirectorError, zmq.ZMQError):
        return None
