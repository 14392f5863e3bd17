"""``jobs.retry``: the same job(s) again, as a new orchestration linked to the old one.

Rebuilt from what the server stored: each job's instruction in order, grouped into
steps by lane (an async item had its own lane), sent to the nodes where it did not
succeed (``failed``) or to every node it ran on.  A COPY's sources are found again
from their absolute paths (an orchestration file's are; an ``exec``'s relative ones
are not, and say so).  Part of the core: no clock, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from director.errors import DirectorError
from director.server.cancel import named_jobs


def retry(book: Any, rid: bytes, args: dict, now: float) -> Any:
    named, ids = named_jobs(book, args)
    busy = [j for j in ids if j in book.open]
    if busy:
        raise DirectorError(f"{named} has {len(busy)} job(s) still running: wait for them,"
                            f" or cancel them first (director job cancel {named})")
    rows = book.store.jobs_by_ids(ids)
    results = book.store.results(ids)
    only_failed = bool(args.get("failed"))
    nodes = {r["name"] for j in ids for r in results[j]
             if not only_failed or r["status"] != "success"}
    if not nodes:
        raise DirectorError(f"nothing to retry: {named} succeeded on every node"
                            if only_failed else f"nothing to retry: {named} ran nowhere")
    steps: list[dict[str, Any]] = []
    last_lane = None
    for job_id in sorted(ids, key=lambda j: rows[j]["seq"]):
        row = rows[job_id]
        ran = sorted({r["name"] for r in results[job_id]} & nodes)
        if not ran:
            continue
        instr = json.loads(row["instruction"])
        if steps and row["lane"] == last_lane and steps[-1]["targets"] == ran:
            steps[-1]["jobs"].append(instr)
        else:
            steps.append({"targets": ran, "async": not row["lane"].endswith(".0"),
                          "jobs": [instr]})
        last_lane = row["lane"]
    from director.server.batches import stored_settings  # run in batches: so again

    return book.submit(rid, {"steps": steps, "targets": [], "wait": bool(args.get("wait")),
                             "base": "/", "retry_of": named,
                             "allow_offline": args.get("allow_offline") is True,
                             "parts": args.get("parts") is True,
                             **stored_settings(book.store, rows[ids[0]]["orch"])}, now)
