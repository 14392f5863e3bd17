"""``--stream``: a node's output lines, as they come, to the operator waiting on them.

Only lines of jobs in flight on the node that sent them reach a waiter (a node
cannot speak for another's jobs), only for submissions that asked to stream, as
CTL_EVENT "output" ``{"node": NAME, "items": [[job_id, "out"|"err", text], ...]}``
in the order they came.  The CLI shows them as data (escapes stripped).  Part of
the core: no I/O.
"""

from __future__ import annotations

from typing import Any

from director.protocol.messages import Output


def on_output(book: Any, key: str, msg: Output, now: float) -> None:
    if not book.streams:
        return
    by_orch: dict[str, list[list[str]]] = {}
    for job_id, stream, text in msg.items:
        orch = book.orch_of.get(job_id)
        if orch in book.streams and book.sched.in_flight(key, job_id):
            by_orch.setdefault(orch, []).append([job_id, stream, text])
    for orch, items in by_orch.items():
        waiter = book.waiters.get(orch)
        if waiter is not None:
            book.event(waiter.rid, "output", {"node": book.name_of(key), "items": items})
