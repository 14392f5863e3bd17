"""``jobs.analyze``: where the time of a job or an orchestration went (part of the core).

Computed from the stored rows only -- a job's ``created``, and per task (one job on one
node) ``sent``, ``finished``, ``exec_time`` (the node's measure) and ``roundtrip_time``
(sent to answered, the server's measure) -- so the same numbers come out however long
ago the work ran.  Queue wait is ``sent - created``: time the task waited for its node
(earlier jobs of its lane, the node's window, the node coming online).  Every field of
directord's ``--analyze-parent`` is here under its own name, and more.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from director.errors import DirectorError
from director.server.cancel import named_jobs

MAX_TASKS = 50_000    # tasks one analysis reads (~0.3 s; more would hold the server's loop)
FAILED = ("failed", "timeout", "lost")


def analyze_op(book: Any, args: dict, now: float) -> dict:
    named, ids = named_jobs(book, args)
    book.flush()  # what is in memory first: sent and answered times
    rows = book.store.timings(ids, MAX_TASKS + 1)
    if len(rows) > MAX_TASKS:
        raise DirectorError(f"'{named}' has more than {MAX_TASKS} tasks: too many to analyze"
                            " at once (analyze one of its jobs)")
    kind = "job" if ids == [named] else "orchestration"
    return analyze(named, kind, rows, now)


def queue_wait(sent: Any, created: Any) -> float | None:
    """How long a task waited before it was sent to its node (None: not sent yet)."""
    sent, created = _num(sent), _num(created)
    return None if sent is None or created is None else max(0.0, sent - created)


def stats(values: list[float]) -> dict[str, float | int | None]:
    """count, total, mean, median, p95 (nearest rank), min, max of ``values``."""
    if not values:
        return {"count": 0, "total": 0.0, "mean": None, "median": None, "p95": None,
                "min": None, "max": None}
    v = sorted(values)
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"count": n, "total": _r(sum(v)), "mean": _r(sum(v) / n), "median": _r(median),
            "p95": _r(v[max(0, math.ceil(0.95 * n) - 1)]), "min": _r(v[0]), "max": _r(v[-1])}


def analyze(named: str, kind: str, rows: Iterable[Any], now: float) -> dict[str, Any]:
    """``rows``: (job_id, name, status, exec_time, roundtrip_time, sent, finished, created,
    summary, seq) per task, as ``JobStore.timings`` gives them."""
    jobs: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    execs, waits, trips = [], [], []
    counts: dict[str, int] = {}
    first = last = None
    still_open = False
    for job_id, name, status, exec_time, trip, sent, finished, created, summary, seq in rows:
        counts[status] = counts.get(status, 0) + 1
        job = jobs.get(job_id)
        if job is None:
            job = jobs[job_id] = {
                "id": job_id, "summary": summary, "seq": seq, "created": created,
                "counts": {}, "execs": [], "waits": [], "last": None, "slowest_node": None,
                "exec_max": None}
        node = nodes.get(name)
        if node is None:
            node = nodes[name] = {"counts": {}, "execs": [], "waits": [], "trips": [],
                                  "first_sent": None, "last": None}
        job["counts"][status] = job["counts"].get(status, 0) + 1
        node["counts"][status] = node["counts"].get(status, 0) + 1
        if first is None or created < first:
            first = created
        if status in ("queued", "running"):
            still_open = True
        exec_time, trip = _num(exec_time), _num(trip)
        sent, finished = _num(sent), _num(finished)
        if exec_time is not None:
            execs.append(exec_time)
            job["execs"].append(exec_time)
            node["execs"].append(exec_time)
            if job["exec_max"] is None or exec_time > job["exec_max"]:
                job["exec_max"], job["slowest_node"] = exec_time, name
        if trip is not None:
            trips.append(trip)
            node["trips"].append(trip)
        if sent is not None:
            wait = queue_wait(sent, created)
            waits.append(wait)
            job["waits"].append(wait)
            node["waits"].append(wait)
            node["first_sent"] = _min(node["first_sent"], sent)
        if finished is not None and status not in ("queued", "running"):
            last = _max(last, finished)
            job["last"] = _max(job["last"], finished)
            node["last"] = _max(node["last"], finished)
    if not jobs:
        raise DirectorError(f"'{named}' has no results to analyze")
    end = now if still_open else last
    wall = _r(max(0.0, end - first)) if end is not None and first is not None else None
    node_docs = {name: _node_doc(n) for name, n in sorted(nodes.items())}
    job_docs = [_job_doc(j) for j in sorted(jobs.values(), key=lambda j: j["seq"])]
    ok = counts.get("success", 0)
    bad = sum(counts.get(s, 0) for s in FAILED)
    exec_total = _r(sum(execs))
    by_exec = {k: d["exec_time"] for k, d in node_docs.items() if d["tasks_timed"]}
    by_trip = {k: d["roundtrip_time"] for k, d in node_docs.items() if d["tasks_timed"]}
    timed_jobs = [j for j in job_docs if j["exec_time_max"] is not None]
    slowest_job = max(timed_jobs, key=lambda j: j["exec_time_max"], default=None)
    fastest_job = min(timed_jobs, key=lambda j: j["exec_time_max"], default=None)
    return {
        "id": named, "kind": kind, "running": still_open,
        "wall_time": wall, "exec_time_total": exec_total,
        "roundtrip_time_total": _r(sum(trips)), "queue_wait_total": _r(sum(waits)),
        # time around the execution: the link, the node's own handling, transfers
        "overhead_total": _r(max(0.0, sum(trips) - exec_total)),
        "exec_time": stats(execs), "queue_wait": stats(waits), "roundtrip_time": stats(trips),
        "job_wall_time": stats([j["wall_time"] for j in job_docs
                                if j["wall_time"] is not None]),
        "counts": counts, "total_jobs": len(jobs), "total_tasks": sum(counts.values()),
        "total_node_count": len(nodes), "total_successes": ok, "total_failures": bad,
        "fastest_node": _pick(by_exec, min), "slowest_node": _pick(by_exec, max),
        "fastest_job": _job_pick(fastest_job), "slowest_job": _job_pick(slowest_job),
        # directord's --analyze-parent, field for field
        "actual_runtime": wall, "combined_execution_time": exec_total,
        "total_avg_execution_time": _r(exec_total / len(jobs)),
        "fastest_node_execution": _name(by_exec, min), "slowest_node_execution": _name(by_exec, max),
        "fastest_node_roundtrip": _name(by_trip, min), "slowest_node_roundtrip": _name(by_trip, max),
        "nodes": node_docs, "jobs": job_docs,
    }


def _node_doc(n: dict) -> dict[str, Any]:
    ex = stats(n["execs"])
    wall = None
    if n["first_sent"] is not None and n["last"] is not None:
        wall = _r(max(0.0, n["last"] - n["first_sent"]))
    return {"tasks": sum(n["counts"].values()), "counts": n["counts"],
            "success": n["counts"].get("success", 0),
            "failed": sum(n["counts"].get(s, 0) for s in FAILED),
            "cancelled": n["counts"].get("cancelled", 0), "tasks_timed": ex["count"],
            "exec_time": ex["total"], "exec_time_mean": ex["mean"], "exec_time_p95": ex["p95"],
            "roundtrip_time": _r(sum(n["trips"])), "queue_wait": _r(sum(n["waits"])),
            "busy_span": wall}


def _job_doc(j: dict) -> dict[str, Any]:
    ex = stats(j["execs"])
    wall = _r(max(0.0, j["last"] - j["created"])) if j["last"] is not None else None
    waits = stats(j["waits"])
    status = ("running" if any(s in ("queued", "running") for s in j["counts"])
              else "success" if set(j["counts"]) == {"success"}
              else next((s for s in (*FAILED, "cancelled") if s in j["counts"]), "failed"))
    return {"id": j["id"], "summary": j["summary"], "status": status, "counts": j["counts"],
            "nodes": sum(j["counts"].values()), "exec_time": ex["total"],
            "exec_time_mean": ex["mean"], "exec_time_median": ex["median"],
            "exec_time_p95": ex["p95"], "exec_time_max": ex["max"],
            "slowest_node": j["slowest_node"], "queue_wait_mean": waits["mean"],
            "wall_time": wall}


def _job_pick(j: dict | None) -> dict | None:
    if j is None:
        return None
    return {"id": j["id"], "summary": j["summary"], "exec_time": j["exec_time_max"],
            "node": j["slowest_node"]}


def _pick(values: dict[str, float], which) -> dict | None:
    name = _name(values, which)
    return None if name is None else {"name": name, "exec_time": values[name]}


def _name(values: dict[str, float], which) -> str | None:
    return which(values, key=lambda k: (values[k], k)) if values else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _r(v: float) -> float:
    return round(v, 6)


def _min(a, b):
    return b if a is None or (b is not None and b < a) else a


def _max(a, b):
    return b if a is None or (b is not None and b > a) else a
