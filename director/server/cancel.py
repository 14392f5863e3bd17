"""``jobs.cancel``: the operator stops a job or an orchestration (part of the core).

Queued tasks end ``cancelled`` unsent, and so do tasks of a big submission not made
yet; in-flight ones get a CANCEL on their node's link (sent again before any resend
of their jobs after a reconnect, so a node that never received one answers it
``cancelled`` rather than running it) and end as their node reports them: ``cancelled``,
or what they had already become.  No clock, no I/O: actions go to the book's ``out``.
"""

from __future__ import annotations

from typing import Any

from director.errors import DirectorError
from director.protocol.messages import MAX_ACK, Cancel, encode
from director.server.events import Send

BEFORE_SENT = "cancelled by the operator before it was sent"


def job_ids_for(store: Any, given: str) -> tuple[str, list[str]]:
    """(what was named, its job ids): a job id or unique prefix, an orchestration id,
    or ``last`` (the newest orchestration: what the operator submitted last)."""
    if given == "last":
        row = store.job("last")
        if row is None:
            raise DirectorError("no jobs yet")
        return row["orch"], store.orch_jobs(row["orch"])
    row = store.job(given)
    if row is not None:
        return row["id"], [row["id"]]
    ids = store.orch_jobs(given)
    if not ids:
        raise DirectorError(f"no job or orchestration '{given}' (see: director jobs)")
    return given, ids


def named_jobs(book: Any, args: dict) -> tuple[str, list[str]]:
    """An operator's ``id`` argument (cancel, retry, analyze), checked, with the rows
    written first so the newest results count: (what was named, its job ids)."""
    given = args.get("id")
    if not isinstance(given, str) or not given or len(given) > 64:
        raise DirectorError("a job or orchestration ID (or 'last') is required")
    book.flush()
    return job_ids_for(book.store, given)


def cancel(book: Any, args: dict, now: float) -> dict:
    named, ids = named_jobs(book, args)
    wanted = {j for j in ids if j in book.open}   # jobs with tasks not final yet
    if not wanted:
        return {"id": named, "jobs": len(ids), "cancelled": 0, "stopping": 0}
    book.store.mark_cancelled(sorted(wanted))      # so a restart still honours it
    book.cancelled_jobs |= wanted                  # tasks still to be made end at once
    dropped, flying = book.sched.cancel_jobs(wanted)
    for task in dropped:
        book._final(task, {"status": "cancelled", "error": BEFORE_SENT}, now)
    stopping = 0
    for node, tasks in flying.items():
        job_ids = [t.job_id for t in tasks]
        book.cancel_sent.setdefault(node, set()).update(job_ids)
        stopping += len(tasks)
        send_cancels(book, node, job_ids)
    return {"id": named, "jobs": len(ids), "cancelled": len(dropped), "stopping": stopping}


def send_cancels(book: Any, node: str, job_ids: list[str]) -> None:
    """CANCEL on the node's current route, if it has one (else on its next HELLO)."""
    route = book.peers.route(node)
    if route is None:
        return
    for i in range(0, len(job_ids), MAX_ACK):
        book.out.append(Send(route, encode(Cancel(tuple(job_ids[i:i + MAX_ACK]))), node, ()))
