"""Peer-supplied strings in the daemons' logs: escaped and capped, so they cannot forge lines.

A job id, node name, version or reason sent by a peer may hold a newline, an escape
sequence or a megabyte of text.  Log it as ``shown(value)``: the ``%r`` form (quotes,
``\\n``, ``\\x1b`` and every non-printable character escaped), at most ``cap`` characters
of it plus a note of how much was left out.

    log.warning("result for unknown job %s from %s", shown(job_id), shown(name))
"""

from __future__ import annotations

from typing import Any

__all__ = ["shown"]

DEFAULT_CAP = 200


def shown(value: Any, cap: int = DEFAULT_CAP) -> str:
    """``repr(value)`` on one line, no longer than ``cap`` (+ a short ``...+N`` note)."""
    if not isinstance(value, (str, bytes)):
        if value is None or isinstance(value, (bool, int, float)):
            return repr(value)
        value = str(value) if not isinstance(value, (bytearray, memoryview)) else bytes(value)
    cap = max(int(cap), 8)
    if len(value) <= cap // 10:  # no character is longer than 10 once escaped: fits as is
        return repr(value)
    out = repr(value[:cap])
    if len(out) <= cap + 2 and len(value) <= cap:
        return out
    # keep the longest prefix whose escaped form fits (escapes make characters longer)
    lo, hi = 0, min(len(value), cap)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(repr(value[:mid])) <= cap + 2:
            lo = mid
        else:
            hi = mid - 1
    return f"{value[:lo]!r}...+{len(value) - lo}"
