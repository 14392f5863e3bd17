"""An executor Outcome -> the RESULT message the server will accept.

The server refuses any field out of bounds, so a result is made to fit here
once, before it is remembered or sent: rc an int32 or None, exec_time finite
and >= 0, text valid UTF-8 and within its cap (a file name with undecodable
bytes must not make the whole report unsendable).
"""

from __future__ import annotations

import math
import re
from typing import Any

from director.protocol import fields as F
from director.protocol import messages as M

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CANCELLED = "an earlier job failed"


def GONE(job_id: str) -> M.Result:  # noqa: N802 - reads as the constant it was
    """The result of a job cancelled because an earlier job of its lane failed."""
    return M.Result(job_id, "cancelled", error=_CANCELLED)


def text(value: Any, cap: int) -> str:
    if value.__class__ is not str:
        value = "" if value is None else str(value)
    if len(value) > cap:
        value = value[:cap]
    if not value.isascii() and _SURROGATE.search(value):
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def result_of(job_id: str, out: Any) -> M.Result:
    """The Result of ``out`` (an ``executor.Outcome``), every field within bounds."""
    status = out.status if out.status in M.RESULT_STATUSES else "failed"
    rc = out.rc
    if rc is not None and not (rc.__class__ is int and F.INT32[0] <= rc <= F.INT32[1]):
        rc = None
    t = out.exec_time
    if t is not None:
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = None
        else:
            if not math.isfinite(t) or t < 0:
                t = None
            elif t > F.MAX_SECONDS:
                t = float(F.MAX_SECONDS)
    transfer = None
    if out.transfer is not None:
        raw = out.transfer if isinstance(out.transfer, dict) else out.transfer.to_dict()
        transfer = M.Transfer(*(_count(raw.get(f)) for f in M.Transfer.FIELDS))
    return M.Result(job_id, status, rc, text(out.stdout, M.MAX_OUTPUT),
                    text(out.stderr, M.MAX_OUTPUT), t, bool(out.cached), transfer,
                    text(out.error, M.MAX_TEXT))


def _count(v: Any) -> int:
    if v.__class__ is not int or v < 0:
        return 0
    return min(v, F.MAX_COUNT)


def size_of(r: M.Result) -> int:
    """About how large a result is on the wire (for capping a batch)."""
    return len(r.stdout) + len(r.stderr) + len(r.error) + 200
