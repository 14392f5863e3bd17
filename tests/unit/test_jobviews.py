"""Tests for director.server.jobviews: a job's overall status and its JSON documents."""

from __future__ import annotations

import json
import sqlite3

import pytest

from director.server.jobstore import JobStore, dumps
from director.server.jobviews import job_doc, list_op, overall

RESULT_FIELDS = {"status", "rc", "stdout", "stderr", "cached", "exec_time", "roundtrip_time",
                 "transfer"}


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], "success"),
    (["success"], "success"),
    (["success", "success", "success"], "success"),
    (["queued"], "queued"),
    (["queued", "queued"], "queued"),
    (["queued", "running"], "running"),
    (["running"], "running"),
    (["success", "queued"], "running"),  # some node answered: under way
    (["failed", "queued"], "running"),   # not final until every node is final
    (["timeout", "running"], "running"),
    (["success", "failed"], "failed"),
    (["failed"], "failed"),
    (["success", "timeout"], "timeout"),
    (["success", "lost"], "lost"),
    (["success", "cancelled"], "cancelled"),
    (["cancelled", "lost", "timeout", "failed"], "failed"),  # failed outranks the rest
    (["cancelled", "lost", "timeout"], "timeout"),
    (["cancelled", "lost"], "lost"),
    (["weird"], "failed"),  # an unknown final status is never success
    (["success", "weird"], "failed"),
])
def test_overall(statuses, expected):
    assert overall(statuses) == expected


def test_overall_never_success_unless_all_success():
    for bad in ("failed", "timeout", "lost", "cancelled", "queued", "running"):
        assert overall(["success"] * 5 + [bad]) != "success"


@pytest.fixture
def store():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    yield JobStore(conn)
    conn.close()


def _job(job_id: str, created: float, seq: int = 1, targets=("a", "b")) -> dict:
    return {"id": job_id, "orch": job_id[:8], "lane": "l", "seq": seq, "verb": "RUN",
            "summary": f"RUN echo {job_id}", "instruction": dumps({"verb": "RUN"}),
            "hash_extra": "", "created": created, "targets": dumps(list(targets))}


def test_job_doc_fields_match_the_contract(store):
    store.insert([_job("j1", 1.0)], [("j1", "KA", "a", "queued"), ("j1", "KB", "b", "queued")])
    store.update_results([{
        "job_id": "j1", "node": "KA", "status": "success", "rc": 0, "stdout": "hi\n",
        "stderr": "", "cached": 1, "exec_time": 0.01, "roundtrip_time": 0.02,
        "transfer": dumps({"files": 1}), "error": "", "sent": 1.0, "finished": 2.0}])
    doc = job_doc(store.job("j1"), store.results(["j1"])["j1"])
    assert {"id", "verb", "status", "results"} <= set(doc)
    assert doc["id"] == "j1" and doc["verb"] == "RUN" and doc["status"] == "running"
    assert set(doc["results"]) == {"a", "b"}
    a = doc["results"]["a"]
    assert RESULT_FIELDS <= set(a)
    assert a["status"] == "success" and a["rc"] == 0 and a["stdout"] == "hi\n"
    assert a["cached"] is True and a["transfer"] == {"files": 1}
    b = doc["results"]["b"]
    assert b["status"] == "queued" and b["cached"] is False and b["transfer"] is None
    assert doc["counts"] == {"success": 1, "queued": 1}
    json.dumps(doc)  # JSON-safe


def test_list_op_newest_first_without_results(store):
    store.insert([_job("old", 1.0), _job("new", 2.0)], [("old", "KA", "a", "queued")])
    rows = list_op(store, {"limit": 10}, 10.0)
    assert [r["id"] for r in rows] == ["new", "old"]
    assert all("results" not in r for r in rows)
    assert [r["age"] for r in rows] == [8.0, 9.0]  # from the core's clock, not the wall
    assert rows[1]["status"] == "queued" and rows[0]["status"] == "success"  # no targets
    assert [r["id"] for r in list_op(store, {"limit": 1}, 10.0)] == ["new"]
    # A bad limit falls back to the default rather than failing.
    assert len(list_op(store, {"limit": "x"}, 10.0)) == 2
    assert len(list_op(store, {"limit": True}, 10.0)) == 2


def test_job_last_and_prefix(store):
    store.insert([_job("abcdef01", 1.0), _job("abcdef02", 2.0), _job("ffff0000", 0.5)], [])
    assert store.job("last")["id"] == "abcdef02"
    assert store.job("ffff")["id"] == "ffff0000"
    assert store.job("abcd") is None  # ambiguous prefix
    assert store.job("abc") is None  # too short for a prefix
    assert store.job("nope") is None


def test_job_prefix_is_literal_not_a_pattern(store):
    store.insert([_job("abcdef01", 1.0)], [])
    assert store.job("abcd")["id"] == "abcdef01"
    for wild in ("%%%%", "____", "ab_d", "a%", "abc%", "\\\\\\\\"):
        assert store.job(wild) is None, wild


def test_list_op_counts_come_from_the_store_as_job_doc_has_them(store):
    store.insert([_job("j", 1.0)], [("j", f"K{i}", f"n{i}", "queued") for i in range(5)])
    store.update_results([{**dict.fromkeys(("rc", "stdout", "stderr", "cached", "exec_time",
                                             "roundtrip_time", "transfer", "sent",
                                             "finished")),
                           "stdout": "", "stderr": "", "cached": 0, "error": "",
                           "job_id": "j", "node": f"K{i}", "status": st}
                          for i, st in enumerate(["success", "success", "failed", "running"])])
    (listed,) = list_op(store, {"limit": 10}, 10.0)
    full = job_doc(store.job("j"), store.results(["j"])["j"])
    assert listed["counts"] == full["counts"] == {"success": 2, "failed": 1, "running": 1,
                                                  "queued": 1}
    assert listed["status"] == full["status"] == "running"
