"""The control socket's messages: an operator request and its events and reply.

The CLI imports only this (and ``base``/``frames``/``fields``), so a command like
``director health`` never loads the node protocol, the DSL or manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from director.errors import ProtocolError
from director.protocol import fields as F
from director.protocol.base import Msg, encode
from director.protocol.frames import split

MAX_TEXT = 64 * 1024              # an error or reason


@dataclass(frozen=True)
class Ctl(Msg):
    """An operator request; ``args`` is checked by the operation it names."""

    TYPE: ClassVar[str] = "CTL"
    op: str
    args: dict

    def body(self) -> dict[str, Any]:
        return {"op": self.op, "args": self.args}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Ctl:
        t = cls.TYPE
        return cls(F.text(t, b, "op", 64, ident=True), F.mapping(t, b, "args"))


@dataclass(frozen=True)
class CtlReply(Msg):
    """The answer to a Ctl.  With ``result_json`` the result is payload[0], JSON
    encoded already, passed through by the CLI as is."""

    TYPE: ClassVar[str] = "CTL_REPLY"
    ok: bool
    result: Any = None
    error: str = ""
    code: int | None = None
    result_json: bool = False
    failed: int | None = None
    data: bytes = b""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok}
        if self.result is not None:
            out["result"] = self.result
        if self.error != "":  # None and other non-strings go out, to be refused
            out["error"] = self.error
        for key in ("code", "failed"):  # 0 failed is news: kept
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.result_json is not False:
            out["result_json"] = self.result_json
        return out

    def payload(self) -> tuple[bytes, ...]:
        return (self.data,) if self.result_json else ()

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> CtlReply:
        t = cls.TYPE
        result_json = F.flag(t, b, "result_json")
        if result_json and len(payload) != 1:
            raise ProtocolError(f"{t}: result_json needs one payload frame")
        return cls(F.flag(t, b, "ok"), b.get("result"), F.text(t, b, "error", MAX_TEXT, default=""),
                   F.integer(t, b, "code", 0, 255, null=True), result_json,
                   F.integer(t, b, "failed", 0, F.MAX_COUNT, null=True),
                   payload[0] if result_json else b"")


@dataclass(frozen=True)
class CtlEvent(Msg):
    TYPE: ClassVar[str] = "CTL_EVENT"
    event: str
    data: Any = None

    def body(self) -> dict[str, Any]:
        return {"event": self.event, "data": self.data}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> CtlEvent:
        return cls(F.text(cls.TYPE, b, "event", 64, ident=True), b.get("data"))


@dataclass(frozen=True)
class CtlPart(Msg):
    """A piece of a waiting submission's answer, sent as its jobs finish (when the
    request asked for ``parts``): job documents, JSON, joined by ", ".  The final
    CtlReply then carries only the documents not sent yet; ``join_parts`` rebuilds
    the list ``--json`` prints.  The server never holds the whole answer at once."""

    TYPE: ClassVar[str] = "CTL_PART"
    data: bytes = b""

    def body(self) -> dict[str, Any]:
        return {}

    def payload(self) -> tuple[bytes, ...]:
        return (self.data,)

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> CtlPart:
        if len(payload) != 1:
            raise ProtocolError(f"{cls.TYPE}: needs one payload frame")
        return cls(payload[0])


def join_parts(parts: list[bytes], last: bytes) -> bytes:
    """The JSON list of job documents from the CtlParts received and the final reply's
    data (when no part came, that data is the whole list already)."""
    if not parts:
        return last
    return b"[" + b", ".join([*parts, last] if last else parts) + b"]"


CONTROL_TYPES: dict[str, type[Msg]] = {c.TYPE: c for c in (Ctl, CtlReply, CtlEvent, CtlPart)}


def decode(frames: Any) -> Msg:
    """Frames from the control socket -> Ctl, CtlReply or CtlEvent, or ProtocolError."""
    mtype, body, payload = split(frames, CONTROL_TYPES)
    return CONTROL_TYPES[mtype].decode_body(body, payload)


__all__ = ["CONTROL_TYPES", "Ctl", "CtlEvent", "CtlReply", "Msg", "decode", "encode"]
