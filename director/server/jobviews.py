"""Job documents as ``director job --json`` prints them, built from stored rows."""

from __future__ import annotations

import json

from typing import Any

from director.server.analyze import queue_wait


OPEN = ("queued", "running")


def result_doc(r: Any, created: float | None = None) -> dict[str, Any]:
    """One task's result; ``created`` (its job's) gives ``queue_wait``, as analyze has it."""
    return {
        "status": r["status"], "rc": r["rc"], "stdout": r["stdout"], "stderr": r["stderr"],
        "cached": bool(r["cached"]), "exec_time": r["exec_time"],
        "roundtrip_time": r["roundtrip_time"],
        "transfer": json.loads(r["transfer"]) if r["transfer"] else None,
        "error": r["error"], "finished": r["finished"],
        "queue_wait": queue_wait(r["sent"], created),
    }


def overall(statuses: list[str]) -> str:
    """One status for a job from its nodes' statuses."""
    if not statuses:
        return "success"
    if any(s in OPEN for s in statuses):
        return "running" if any(s != "queued" for s in statuses) else "queued"
    if all(s == "success" for s in statuses):
        return "success"
    for s in ("failed", "timeout", "lost", "cancelled"):
        if s in statuses:
            return s
    return "failed"


def job_doc(row: Any, results: list[Any]) -> dict[str, Any]:
    statuses = [r["status"] for r in results]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    instruction = json.loads(row["instruction"])
    return {
        "id": row["id"], "orchestration": row["orch"], "verb": row["verb"],
        "summary": row["summary"], "instruction": instruction,
        "hash": content_hash(instruction, row["hash_extra"]),
        "created": row["created"], "targets": json.loads(row["targets"]),
        "status": overall(statuses), "counts": counts,
        "results": {r["name"]: result_doc(r, row["created"]) for r in results},
    }


def content_hash(instruction: dict, extra: str) -> str | None:
    """The job's content hash (``plan.stored_hash``: what a dry run prints); None for
    an instruction stored by a version that had a verb this one does not."""
    from director.jobs.plan import stored_hash

    try:
        return stored_hash(instruction, extra)
    except (KeyError, TypeError):
        return None


def list_op(store: Any, args: dict, now: float) -> list[dict[str, Any]]:
    limit = args.get("limit", 20)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10000:
        limit = 20
    rows = store.recent(limit)
    counted = store.status_counts([r["id"] for r in rows])  # no result row is loaded
    out = []
    for row in rows:
        doc = job_doc(row, [])
        del doc["results"]
        counts = counted.get(row["id"], {})
        doc["status"] = overall(list(counts))  # it looks at which statuses occur only
        doc["counts"] = counts
        doc["age"] = now - row["created"]
        out.append(doc)
    return out
