"""What ``director job`` and ``director jobs`` show, with an orchestration as one thing.

``jobs.get`` with ``orchestration: true`` (``view``): a job's document, as ``jobs.get``
gives it, with ``offline`` on the tasks queued for a node that is not online; or, when
the id names an orchestration of several jobs (``last``: when the newest submission is
one), that orchestration's summary -- per node, how many tasks ended in each status, and
the first failure with the end of its output -- or with ``all``, its jobs' documents.
``jobs.list`` with ``grouped: true`` (``overview``): the newest entries, an orchestration
of several jobs as one.  Sums come from SQLite (orchstore.py).  Part of the core: no I/O.
"""

from __future__ import annotations

from typing import Any, Callable

from director.errors import DirectorError
from director.server.jobviews import OPEN, job_doc, overall

TAIL_LINES = 5   # lines of the first failure's output in a summary


def view(book: Any, args: dict, now: float) -> Any:
    given = args.get("id")
    if not isinstance(given, str) or not given or len(given) > 64:
        raise DirectorError("a job or orchestration ID (or 'last') is required")
    book.flush()
    store = book.store
    online = _online(book, now)
    row = store.job(given)
    if row is None and given == "last":
        raise DirectorError("no jobs yet")
    orch = given if row is None else row["orch"]
    head = store.orch_head(orch) if row is None or given == "last" else None
    if head is None or head[0] < 2:  # one job: its document
        if row is None:
            raise DirectorError(f"no job or orchestration '{given}' (see: director jobs)")
        doc = book.get({"id": row["id"]})
        if any(r["status"] == "queued" for r in doc["results"].values()):
            _mark_offline(doc, store.results([row["id"]])[row["id"]], online)
        return doc
    if args.get("all") is True:
        ids = store.orch_jobs(orch)
        docs = book.docs(ids)
        results = store.results(ids)
        for doc in docs:
            _mark_offline(doc, results[doc["id"]], online)
        return docs
    return summary(store, orch, head, online, now)


def summary(store: Any, orch: str, head: tuple, online: Callable[[str], bool],
            now: float, brief: bool = False) -> dict[str, Any]:
    """An orchestration in a few numbers (``director job ORCH --json``); ``brief``: the
    line ``director jobs`` shows (no nodes, job ids or failure)."""
    njobs, label, created, first_job = head
    nodes: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    last = None
    for key, name, status, n, finished in store.orch_tasks(orch):
        node = nodes.setdefault(name, {"counts": {}, "tasks": 0, "offline": False})
        node["counts"][status] = node["counts"].get(status, 0) + n
        node["tasks"] += n
        counts[status] = counts.get(status, 0) + n
        if status == "queued" and not online(key):
            node["offline"] = True
        if finished is not None and (last is None or finished > last):
            last = finished
    status = overall(list(counts))
    still_open = any(s in OPEN for s in counts)
    end = now if still_open else last
    doc = {
        "kind": "orchestration", "id": orch, "orchestration": orch,
        "name": label, "first_job": first_job, "status": status, "running": still_open,
        "created": created, "duration": None if end is None else max(0.0, end - created),
        "job_count": njobs, "node_count": len(nodes), "tasks": sum(counts.values()),
        "counts": counts}
    if brief:
        return doc
    failure = store.orch_first_failure(orch)
    if failure is not None:
        for stream in ("stderr", "stdout"):
            failure[f"{stream}_tail"] = _tail(failure.pop(stream))
    retry_of = store.retry_of(orch)
    doc.update(nodes=dict(sorted(nodes.items())), first_failure=failure,
               jobs=store.orch_jobs(orch))
    if retry_of:
        doc["retry_of"] = retry_of
    return doc


def overview(book: Any, args: dict, now: float) -> list[dict[str, Any]]:
    """The newest ``limit`` entries of ``director jobs``: a job, or an orchestration of
    several jobs as one entry (``kind``)."""
    limit = args.get("limit", 20)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10000:
        limit = 20
    book.flush()
    store = book.store
    orchs = store.recent_orchs(limit)
    single = [orch for orch, n, _ in orchs if n == 1]
    rows = {r["orch"]: r for r in store.jobs_by_ids(single).values()}
    results = store.results([rows[o]["id"] for o in single if o in rows])
    out: list[dict[str, Any]] = []
    for orch, n, created in orchs:
        if n == 1 and orch in rows:
            row = rows[orch]
            doc = job_doc(row, results[row["id"]])
            finished = [r["finished"] for r in results[row["id"]] if r["finished"]]
            del doc["results"]
            doc.update(kind="job", age=now - created, duration=_duration(
                doc["status"], created, max(finished, default=None), now))
            out.append(doc)
            continue
        head = store.orch_head(orch)
        if head is None:  # purged meanwhile
            continue
        doc = summary(store, orch, head, lambda key: True, now, brief=True)
        doc["age"] = now - created
        out.append(doc)
    return out


def _duration(status: str, created: float, last: float | None, now: float) -> float | None:
    end = now if status in OPEN else last
    return None if end is None else max(0.0, end - created)


def _online(book: Any, now: float) -> Callable[[str], bool]:
    return lambda key: book.peers.online(key, now)


def _mark_offline(doc: dict, rows: list, online: Callable[[str], bool]) -> None:
    """``offline: true`` on the results still queued for a node that is not online."""
    for r in rows:
        if r["status"] == "queued" and not online(r["node"]):
            res = doc["results"].get(r["name"])
            if res is not None:
                res["offline"] = True


def _tail(text: str | None, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of ``text`` (raw: the CLI sanitizes them)."""
    kept = [ln for ln in (text or "").splitlines() if ln.strip()]
    return kept[-lines:]
