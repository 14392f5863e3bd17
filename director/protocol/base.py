"""The base of every typed message, and the one checked way to make frames of one.

Kept apart from ``messages`` so the operator CLI, which speaks only the three
control messages (``control``), does not import the node protocol and its DSL.
"""

from __future__ import annotations

from typing import Any, ClassVar

from director.errors import ProtocolError
from director.protocol.frames import join


class Msg:
    """Base: TYPE names the message on the wire; ``body()`` is its JSON object."""

    TYPE: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        return {}

    def payload(self) -> tuple[bytes, ...]:
        return ()

    @classmethod
    def decode_body(cls, body: dict, payload: tuple[bytes, ...]) -> Msg:
        return cls()


def checked(msg: Msg) -> tuple[dict[str, Any], tuple[bytes, ...]]:
    """``msg``'s body and payload, after the same checks the receiver applies: a
    message the other side would refuse is refused here, naming the field."""
    body, payload = msg.body(), msg.payload()
    try:
        again = msg.__class__.decode_body(body, payload)
    except ProtocolError as exc:
        raise ProtocolError(f"refusing to send {exc}") from None
    problems = getattr(again, "problems", ())
    if problems:
        raise ProtocolError(f"refusing to send {msg.TYPE}: {problems[0]}")
    return body, payload


def encode(msg: Msg) -> list[bytes]:
    """The frames of ``msg``; refuses what the other side would refuse to decode."""
    body, payload = checked(msg)
    return join(msg.TYPE, body, payload)
