"""The ``query`` field of a JOB: QUERY answers of earlier jobs of the same submission.

Shape: ``{NODE: {NAME: value}}`` -- the value each node answered for each queried
``NAME`` (a node that answered nothing has no entry).  The values came from nodes:
they are data, bounded here like every peer-supplied value (names checked, values
plain JSON data, a cap on entries and on each value's size) before a template sees them.
"""

from __future__ import annotations

import re
from typing import Any

from director.errors import ProtocolError
from director.protocol.frames import dumps

__all__ = ["MAX_ANSWER", "MAX_ENTRIES", "MAX_TOTAL", "decode_query", "encode_query"]

MAX_ANSWER = 64 * 1024        # bytes of one node's value of one NAME, as JSON
MAX_ENTRIES = 10_000          # nodes x names in one submission's answers
MAX_TOTAL = 1024 * 1024       # bytes of all the answers a job carries, as JSON
MAX_NODE_NAME = 253
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUES = 100_000             # values (nested ones too) in all the answers


def decode_query(mtype: str, body: dict) -> dict[str, dict[str, Any]] | None:
    """The ``query`` field checked (None when absent); ProtocolError names the rule."""
    raw = body.get("query")
    if raw is None:
        return None
    if raw.__class__ is not dict:
        raise _bad(mtype, "must be an object of node names")
    if len(raw) > MAX_ENTRIES:
        raise _bad(mtype, f"has more than {MAX_ENTRIES} nodes")
    budget = [_VALUES]
    entries = 0
    out: dict[str, dict[str, Any]] = {}
    for node, answers in raw.items():
        if not 0 < len(node) <= MAX_NODE_NAME or not node.isprintable():
            raise _bad(mtype, "has a node name that is empty, too long or not printable")
        if answers.__class__ is not dict:
            raise _bad(mtype, f"entry {node[:40]!r} must be an object of NAME: value")
        entries += len(answers)
        if entries > MAX_ENTRIES:
            raise _bad(mtype, f"has more than {MAX_ENTRIES} answers")
        for name, value in answers.items():
            if not _NAME_RE.fullmatch(name):
                raise _bad(mtype, f"{name[:40]!r} is not a NAME (letters, digits and _)")
            _check_value(mtype, value, budget, 0)
        out[node] = answers
    return out


def _check_value(mtype: str, value: Any, budget: list[int], depth: int) -> None:
    budget[0] -= 1
    if budget[0] < 0 or depth > 64:
        raise _bad(mtype, "holds too many or too deeply nested values")
    cls = value.__class__
    if value is None or cls in (str, bool, int, float):
        return
    if cls is list:
        for v in value:
            _check_value(mtype, v, budget, depth + 1)
    elif cls is dict:
        for v in value.values():
            _check_value(mtype, v, budget, depth + 1)
    else:
        raise _bad(mtype, f"holds a value of type {cls.__name__}")


def _bad(mtype: str, rule: str) -> ProtocolError:
    return ProtocolError(f"{mtype}: field 'query' {rule}")


def encode_query(answers: dict[str, dict[str, Any]]) -> str:
    """The field as compact JSON (what the server splices into a JOB body)."""
    return dumps(answers)
