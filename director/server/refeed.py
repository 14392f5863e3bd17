"""Tasks a server crash left unmade.

A big submission's tasks are stored a slice per loop turn after it was answered
(``JobBook._feed``), so a kill -9 meanwhile leaves jobs with fewer task rows than
targets.  Such an orchestration is marked while it is being fed; at the next start
its missing tasks are made from the job rows -- queued, or cancelled when their job
was cancelled or an earlier job of their lane failed on that node, as feeding would
have made them.  Pure: the store reads and writes, this decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from director.server.cancel import BEFORE_SENT

EARLIER_FAILED = "an earlier job failed"
GONE = "the node was removed before this task was made"
_ENDED_BADLY = ("failed", "timeout", "lost", "cancelled")


def missing_tasks(jobs: Iterable[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]],
                  keys: Mapping[str, str],
                  cancelled: Iterable[str] = ()) -> tuple[list[tuple], list[str]]:
    """Rows ``(job_id, node key, name, status, error)`` to add for one orchestration,
    and the target names no longer enrolled (no task can be made for them).

    ``jobs``: its job rows (``id``, ``lane``, ``seq``, ``targets`` as stored: a JSON
    list of node names); ``stored``: its task rows (``job_id``, ``node``, ``name``,
    ``status``, ``error``); ``keys``: accepted node name -> key; ``cancelled``: its
    jobs the operator cancelled."""
    have: dict[str, set[str]] = {}
    cancelled = set(cancelled)
    broken: set[tuple[str, str]] = set()   # (node key, lane) with a job that did not succeed
    lane_of: dict[str, str] = {}
    ordered = sorted(jobs, key=lambda j: j["seq"])
    for j in ordered:
        lane_of[j["id"]] = j["lane"]
    for r in stored:
        have.setdefault(r["job_id"], set()).add(r["name"])
        if r["status"] in _ENDED_BADLY and r["job_id"] in lane_of:
            broken.add((r["node"], lane_of[r["job_id"]]))
    rows: list[tuple] = []
    gone: list[str] = []
    for j in ordered:
        try:
            targets = json.loads(j["targets"])
        except ValueError:
            continue
        for name in targets if isinstance(targets, list) else ():
            if not isinstance(name, str) or name in have.get(j["id"], ()):
                continue
            key = keys.get(name)
            if key is None:
                gone.append(name)
                continue
            if j["id"] in cancelled:
                rows.append((j["id"], key, name, "cancelled", BEFORE_SENT))
            elif (key, j["lane"]) in broken:
                rows.append((j["id"], key, name, "cancelled", EARLIER_FAILED))
            else:
                rows.append((j["id"], key, name, "queued", ""))
    return rows, sorted(set(gone))
