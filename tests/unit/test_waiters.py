"""director.server.waiters: documents built as results arrive, answered as --json prints."""

from __future__ import annotations

import json

from director.server.jobstore import dumps
from director.server.jobviews import job_doc
from director.server.waiters import Waiter


def _job(job_id: str, targets: list[str]) -> dict:
    return {"id": job_id, "orch": "o1", "lane": "o1.0", "seq": 1, "verb": "RUN",
            "summary": f"RUN echo {job_id}", "instruction": dumps({"verb": "RUN"}),
            "hash_extra": "", "created": 100.0, "targets": dumps(targets)}


def _row(job_id: str, node: str, status: str = "success", out: str = "hi\n") -> dict:
    return {"job_id": job_id, "node": node, "status": status, "rc": 0 if status == "success"
            else 1, "stdout": out, "stderr": "", "cached": 0, "exec_time": 0.01,
            "roundtrip_time": 0.02, "transfer": None, "error": "", "sent": 101.0,
            "finished": 102.0}


def _waiter() -> Waiter:
    jobs = [_job("j1", ["a", "b"]), _job("j2", ["a", "b"])]
    return Waiter(b"rid", jobs, {"ka": "a", "kb": "b"}, remaining=4,
                  expect={"j1": 2, "j2": 2})


def test_answer_is_json_dumps_of_the_documents_in_submission_order():
    w = _waiter()
    # results arrive out of order, across jobs and nodes
    assert not w.add("kb", _row("j2", "kb"))
    assert not w.add("kb", _row("j1", "kb", out="from b\n"))
    assert not w.add("ka", _row("j1", "ka"))
    assert list(w.todo) == ["j1"] and not w.encoded  # j1 is complete: encoded next turn
    assert w.encode_some(1) == 2  # one job at least, its answers counted
    assert "j1" in w.encoded and "j2" not in w.encoded and not w.todo
    assert w.add("ka", _row("j2", "ka", status="failed"))
    expected = []
    for job, rows in ((_job("j1", ["a", "b"]), [("ka", _row("j1", "ka")),
                                                 ("kb", _row("j1", "kb", out="from b\n"))]),
                      (_job("j2", ["a", "b"]), [("ka", _row("j2", "ka", status="failed")),
                                                 ("kb", _row("j2", "kb"))])):
        expected.append(job_doc(job, [{**r, "name": {"ka": "a", "kb": "b"}[k]} for k, r in rows]))
    assert w.payload() == json.dumps(expected).encode()
    docs = json.loads(w.payload())
    assert [d["id"] for d in docs] == ["j1", "j2"]
    assert list(docs[0]["results"]) == ["a", "b"] and docs[1]["status"] == "failed"
    assert w.failed == 1
    assert w.counts == {"success": 3, "failed": 1}


def test_progress_counts_statuses():
    w = _waiter()
    w.add("ka", _row("j1", "ka"))
    w.bytes_sent = 10
    assert w.progress() == {"remaining": 3, "bytes_sent": 10, "success": 1}


def test_a_job_that_went_nowhere_still_gets_its_document():
    w = Waiter(b"rid", [_job("j1", [])], {}, remaining=0, expect={"j1": 0})
    docs = json.loads(w.payload())
    assert docs[0]["id"] == "j1" and docs[0]["results"] == {}


def test_an_answer_in_parts_joins_to_the_answer_in_one_piece():
    """A client asking for parts gets finished documents in submission order as they are
    ready; with the final reply's rest they are exactly the one-piece answer."""
    from director.protocol.control import join_parts

    names = {f"k{n}": n for n in "abc"}
    jobs = [_job(f"j{i:02d}", list("abc")) for i in range(12)]
    whole = Waiter(b"r", jobs, names, remaining=36, expect={j["id"]: 3 for j in jobs})
    pieces = Waiter(b"r", jobs, names, remaining=36, expect={j["id"]: 3 for j in jobs},
                    parts=True)
    order = [(j["id"], k) for k in ("kc", "ka", "kb") for j in jobs]  # node by node
    order = order[5:] + order[:5]                                     # some out of order
    parts, sizes = [], []
    for job_id, key in order:
        whole.add(key, _row(job_id, key, out=f"{job_id} on {key}\n"))
        pieces.add(key, _row(job_id, key, out=f"{job_id} on {key}\n"))
        pieces.encode_some(3)
        got = pieces.take_parts(size=600)
        parts += got
        sizes += [len(p) for p in got]
    assert parts and all(s >= 600 for s in sizes)
    assert join_parts(parts, pieces.payload()) == whole.payload()
    assert [d["id"] for d in json.loads(join_parts(parts, pieces.payload()))] == \
        [j["id"] for j in jobs]
    assert len(pieces.encoded) < len(jobs)  # what went out is not kept


def test_without_parts_asked_nothing_goes_out_before_the_reply():
    w = _waiter()
    for key in ("ka", "kb"):
        w.add(key, _row("j1", key))
    assert w.take_parts(size=1) == [] and w.payload().startswith(b"[")


def test_finished_jobs_are_encoded_a_bounded_share_at_a_time():
    names = {"ka": "a"}
    jobs = [_job(f"j{i}", ["a"]) for i in range(5)]
    w = Waiter(b"r", jobs, names, remaining=5, expect={j["id"]: 1 for j in jobs})
    for j in jobs[:4]:
        assert not w.add("ka", _row(j["id"], "ka"))
    assert w.encode_some(3) == 3 and list(w.todo) == ["j3"]
    assert w.add("ka", _row("j4", "ka"))
    docs = json.loads(w.payload())  # what is left is encoded for the answer
    assert [d["id"] for d in docs] == [j["id"] for j in jobs] and not w.todo
