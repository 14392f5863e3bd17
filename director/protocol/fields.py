"""Bounded field readers: a peer's JSON value -> a typed value within stated limits.

Every reader names the message type and the field in its ProtocolError, and the
rule that was broken, so a refused message says exactly why.  Pure; no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any

from director.errors import ProtocolError

INT32 = (-(2**31), 2**31 - 1)
MAX_COUNT = 2**53           # sizes and counters: exact in JSON and in SQLite
MAX_SECONDS = 10**9         # a duration a peer reports (about 31 years)
JOB_ID_RE = re.compile(r"[0-9a-f]{8,24}")
LANE_RE = re.compile(r"[0-9a-f]{8,24}\.[0-9]{1,9}")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def fail(mtype: str, name: str, rule: str) -> ProtocolError:
    return ProtocolError(f"{mtype}: field '{name}' {rule}")


def text(mtype: str, body: dict, name: str, cap: int, *, default: str | None = None,
         ident: bool = False, null: bool = False) -> Any:
    """A string of at most ``cap`` characters, valid UTF-8 (no lone surrogates);
    ``ident``: no NUL or control characters (it names something)."""
    value = body.get(name, _MISSING)
    if value is _MISSING:
        if null:
            return None
        if default is None:
            raise fail(mtype, name, "is missing")
        return default
    if value is None and null:
        return None
    if value.__class__ is not str:
        raise fail(mtype, name, "must be a string")
    if len(value) > cap:
        raise fail(mtype, name, f"is longer than {cap} characters")
    if not value.isascii() and _SURROGATE_RE.search(value):
        raise fail(mtype, name, "is not valid UTF-8 (lone surrogate)")
    if ident and not value.isprintable():
        raise fail(mtype, name, "holds NUL or control characters")
    return value


def pattern(mtype: str, body: dict, name: str, regex: re.Pattern[str]) -> str:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        raise fail(mtype, name, "is missing")
    if value.__class__ is not str or len(value) > 64 or not regex.fullmatch(value):
        raise fail(mtype, name, "has the wrong format")
    return value


def choice(mtype: str, body: dict, name: str, allowed: frozenset[str],
           default: str | None = None) -> str:
    value = body.get(name, _MISSING)
    if value is _MISSING and default is not None:
        return default
    if value.__class__ is not str or value not in allowed:
        raise fail(mtype, name, f"must be one of {', '.join(sorted(allowed))}")
    return value


def integer(mtype: str, body: dict, name: str, lo: int, hi: int, *,
            default: int | None = None, null: bool = False) -> Any:
    """An integer in [lo, hi] (a bool is not a number here)."""
    value = body.get(name, _MISSING)
    if value is _MISSING:
        if null or default is not None:
            return default
        raise fail(mtype, name, "is missing")
    if value is None and null:
        return None
    if value.__class__ is not int:
        raise fail(mtype, name, "must be an integer")
    if not lo <= value <= hi:
        raise fail(mtype, name, f"must be from {lo} to {hi}")
    return value


def seconds(mtype: str, body: dict, name: str, *, null: bool = True) -> float | None:
    """A finite duration >= 0 (NaN and Infinity never get this far: see frames)."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if null:
            return None
        raise fail(mtype, name, "is missing")
    if value.__class__ not in (int, float):
        raise fail(mtype, name, "must be a number")
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise fail(mtype, name, f"must be a finite number from 0 to {MAX_SECONDS}")
    return float(value)


def flag(mtype: str, body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        return default
    if value.__class__ is not bool:
        raise fail(mtype, name, "must be true or false")
    return value


def mapping(mtype: str, body: dict, name: str, *, null: bool = False) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING or (value is None and null):
        if null:
            return None
        raise fail(mtype, name, "is missing")
    if value.__class__ is not dict:
        raise fail(mtype, name, "must be an object")
    return value


def array(mtype: str, body: dict, name: str, cap: int) -> list:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        raise fail(mtype, name, "is missing")
    if value.__class__ is not list:
        raise fail(mtype, name, "must be a list")
    if len(value) > cap:
        raise fail(mtype, name, f"has more than {cap} items")
    return value


class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()
