"""What an agent answers on its local control socket: its health, and nothing else
(every other operation is the server's).  Pure: frames in, one reply out."""

from __future__ import annotations

import logging
from typing import Any

from director.errors import ProtocolError
from director.protocol import control as C
from director.protocol import messages as M

log = logging.getLogger("director.client")


def answer(frames: Any, health: dict[str, Any]) -> C.CtlReply:
    """The reply to one operator request; a malformed one gets a clear error."""
    try:
        msg = M.decode(frames)  # any type decodes: one that is not CTL is named
        if msg.__class__ is not C.Ctl:
            raise ProtocolError(f"expected CTL, not {msg.TYPE}")
    except ProtocolError as exc:
        return C.CtlReply(False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one request never ends the agent
        log.error("bad control request: %s: %s", type(exc).__name__, exc)
        return C.CtlReply(False, error="bad request")
    if msg.op == "health":
        return C.CtlReply(True, health)
    return C.CtlReply(False, error=f"'{msg.op}' is a server command; this home runs a client")
