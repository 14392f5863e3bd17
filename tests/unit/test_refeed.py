"""refeed.missing_tasks: what a restart makes of a submission a crash left half-stored."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from director.server.refeed import EARLIER_FAILED, missing_tasks
from director.server.cancel import BEFORE_SENT

NAMES = ["a", "b", "c", "d"]
KEYS = {n: f"key-{n}" for n in NAMES[:3]}  # "d" is no longer enrolled


def job(i: int, lane: str = "o.0", targets=NAMES[:3]) -> dict:
    return {"id": f"j{i}", "lane": lane, "seq": i, "targets": json.dumps(targets)}


def test_missing_tasks_are_queued_or_cancelled_as_feeding_would_have_made_them():
    jobs = [job(1), job(2), job(3, lane="o.1")]
    stored = [{"job_id": "j1", "node": "key-a", "name": "a", "status": "failed", "error": ""},
              {"job_id": "j1", "node": "key-b", "name": "b", "status": "running", "error": ""}]
    rows, gone = missing_tasks(jobs, stored, KEYS, cancelled={"j3"})
    assert gone == []
    assert sorted(rows) == sorted([
        ("j1", "key-c", "c", "queued", ""),
        ("j2", "key-a", "a", "cancelled", EARLIER_FAILED),   # its lane failed on a
        ("j2", "key-b", "b", "queued", ""), ("j2", "key-c", "c", "queued", ""),
        *[("j3", f"key-{n}", n, "cancelled", BEFORE_SENT) for n in "abc"]])


@given(st.lists(st.lists(st.sampled_from(NAMES), unique=True), min_size=1, max_size=6),
       st.data())
def test_every_enrolled_target_gets_exactly_one_task(targets, data):
    jobs = [job(i, targets=t) for i, t in enumerate(targets)]
    pairs = [(j["id"], n) for j, t in zip(jobs, targets) for n in t]
    kept = data.draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
    stored = [{"job_id": j, "node": f"key-{n}", "name": n,
               "status": data.draw(st.sampled_from(["queued", "success", "failed"])),
               "error": ""} for j, n in kept]
    rows, gone = missing_tasks(jobs, stored, KEYS)
    made = [(r[0], r[2]) for r in rows]
    assert len(made) == len(set(made)) and not set(made) & set(kept)
    assert set(made) | set(kept) | {p for p in pairs if p[1] == "d"} == set(pairs)
    assert gone == (["d"] if any(p[1] == "d" and p not in kept for p in pairs) else [])
